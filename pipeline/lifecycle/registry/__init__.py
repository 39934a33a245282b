"""A file-based model registry: immutable numbered versions, an atomic production pointer, a history.

Layout under the registry root (``paths.registry``)::

    versions/v0001/        model.onnx, model_card.json, metrics.json, params.yaml, dvc.lock,
                           reference.parquet (the model's exact training rows: the drift reference)
                           and meta.json (number, creation time, git revision, sha256 of every file)
    production.json        the pointer: which version serves, why, and the earlier production versions
    history.jsonl          append-only log of every decision (register, promote, reject, rollback)
    .last_version          the highest version number ever handed out (numbers are never reused)
    .lock                  file lock (pipeline.core.io.file_lock) held around every write

Crash safety: a crash at any instant leaves either the old or the new state, never a mix.

* A version is written into a hidden sibling folder (``versions/.tmp-v0007-<pid>``), every file is
  fsynced and made read-only, and only then is the folder renamed into place; a reader never sees a
  half-written version. A folder left by a crash is removed on the next write, after its number has
  been recorded in ``.last_version`` so the number is never handed out again.
* ``production.json`` is written with ``pipeline.core.io.write_json`` (``atomic_write``): a temporary
  file in the same folder, fsynced, swapped in with ``os.replace``; the folder is fsynced so the swap
  itself is durable. Readers see the old or the new pointer. The pointer also carries the stack of
  earlier production versions, so rollback depends on the pointer alone, not on the log.
* ``history.jsonl`` is appended with ``append_line`` (flush + fsync) *after* the pointer switch. A
  crash in between leaves the pointer ahead of the log; the next write notices (each switch carries
  an id) and appends the missing event marked ``"recovered": true``. A torn last line is skipped
  with a warning.
* A crash between a version's rename and its ``register`` line leaves a version the log does not
  know: opening the registry (``Registry(root)``) or the next write appends the line, marked
  ``"reconciled": true``, under the lock, once.

Reads take no lock (they only ever see complete files); writes serialise on ``<root>/.lock``.

Modules: ``layout`` (file and version names, RegistryError), ``versions`` (ModelVersion),
``history`` (reading and appending the log), ``store`` (the Registry and its crash-safe writes), ``objectstore`` (the same on S3),
``cli`` (the command line).

On an object store (``s3://bucket/prefix``), ``objectstore.ObjectRegistry`` keeps the same promises with
create-if-absent writes instead of renames and a lock; its docstring says how. ``open_registry`` picks the
store from the location.

Command: ``python -m pipeline.lifecycle.registry [--root DIR] list | show [VERSION] | history |
rollback [--to VERSION] [--reason TEXT]`` (root defaults to ``paths.registry``).
"""

from pathlib import Path

from pipeline.lifecycle.registry.layout import (
    CARD_FILE,
    DVC_LOCK_FILE,
    ENCODER_FILE,
    INT8_FILE,
    METRICS_FILE,
    ONNX_FILE,
    PARAMS_FILE,
    REFERENCE_FILE,
    TORCH_FILE,
    VERSION_FILES,
    ProductionChanged,
    RegistryError,
    parse_version,
    version_name,
)
from pipeline.lifecycle.registry.objectstore import ObjectRegistry, is_store_url
from pipeline.lifecycle.registry.store import Registry
from pipeline.lifecycle.registry.versions import ModelVersion

# Either store: the same methods (versions, get, production, pointer_token, history, register, promote, record,
# rollback) with the same guarantees, on a folder or on an object store.
AnyRegistry = Registry | ObjectRegistry


def open_registry(location: str | Path, base: Path | None = None) -> AnyRegistry:
    """The registry at ``location``: an object-store URL (``s3://bucket/prefix``) or a folder (a path or
    ``file://`` URL; a relative one is taken under ``base`` when given)."""
    text = str(location)
    if is_store_url(text):
        return ObjectRegistry(text)
    path = Path(text.removeprefix("file://"))
    return Registry(base / path if base is not None else path)


__all__ = [
    "CARD_FILE",
    "DVC_LOCK_FILE",
    "ENCODER_FILE",
    "INT8_FILE",
    "METRICS_FILE",
    "ONNX_FILE",
    "PARAMS_FILE",
    "REFERENCE_FILE",
    "TORCH_FILE",
    "VERSION_FILES",
    "AnyRegistry",
    "ModelVersion",
    "ObjectRegistry",
    "ProductionChanged",
    "Registry",
    "RegistryError",
    "open_registry",
    "parse_version",
    "version_name",
]
