"""ModelVersion: one immutable registered model, its files, and re-verifying them against meta.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.io import _json_default, file_sha256, read_json
from pipeline.lifecycle.registry.layout import (
    CARD_FILE,
    DVC_LOCK_FILE,
    ENCODER_FILE,
    INT8_FILE,
    META_FILE,
    METRICS_FILE,
    ONNX_FILE,
    PARAMS_FILE,
    REFERENCE_FILE,
    REFERENCE_STEM,
    TORCH_FILE,
    VERSION_FILES,
    RegistryError,
    version_name,
)


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered model: its folder and the ``meta.json`` describing it."""

    number: int
    path: Path
    meta: dict[str, Any] = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return version_name(self.number)

    @property
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def card(self) -> Path:
        return self.path / CARD_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def params_file(self) -> Path:
        return self.path / PARAMS_FILE

    @property
    def dvc_lock(self) -> Path:
        return self.path / DVC_LOCK_FILE

    @property
    def reference(self) -> Path:
        hashes = self.meta.get("sha256", {})
        return self.path / next((name for name in hashes if name.startswith(REFERENCE_STEM)), REFERENCE_FILE)

    def _optional(self, name: str) -> Path | None:
        """An optional file of the version: its path when it was registered (and hashed), else None."""
        return self.path / name if name in self.meta.get("sha256", {}) else None

    @property
    def onnx_int8(self) -> Path | None:
        """The int8 model, when the version has one."""
        return self._optional(INT8_FILE)

    @property
    def torch_model(self) -> Path | None:
        """The PyTorch checkpoint, when the version has one (warm starts fine-tune it)."""
        return self._optional(TORCH_FILE)

    @property
    def encoder(self) -> Path | None:
        """The fitted encoder of the PyTorch checkpoint, when the version has one."""
        return self._optional(ENCODER_FILE)

    @property
    def serving_onnx(self) -> Path:
        """The file to serve: int8 when the gate chose it at registration (``extra.serve``), else fp32."""
        if self.meta.get("extra", {}).get("serve") == "int8" and self.onnx_int8 is not None:
            return self.onnx_int8
        return self.onnx

    @property
    def onnx_sha256(self) -> str:
        return self.meta["sha256"][ONNX_FILE]

    @property
    def data_sha256(self) -> str:
        return self.meta["data_sha256"]

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file)

    def card_data(self) -> dict[str, Any]:
        return read_json(self.card)

    def verify(self) -> None:
        """Re-hash every file against ``meta.json``; raise RegistryError naming the first bad one."""
        recorded = self.meta.get("sha256")
        # A meta.json without a sha256 table records nothing: every required file is then reported missing.
        hashes: dict[str, str] = recorded if isinstance(recorded, dict) else {}
        required = [name for name in VERSION_FILES if name != REFERENCE_FILE] + [self.reference.name]
        missing = [name for name in required if name not in hashes]
        if missing:
            raise RegistryError(
                f"{self.path / META_FILE}: no sha256 recorded for {', '.join(missing)}; the version is damaged"
            )
        for name, expected in sorted(hashes.items()):
            path = self.path / name
            if not path.is_file():
                raise RegistryError(f"{self.name}: {name} is missing from {self.path}; restore it or register the model again")
            actual = file_sha256(path)
            if actual != expected:
                raise RegistryError(
                    f"{self.name}: {name} changed after registration (sha256 {actual[:12]}..., "
                    f"meta.json says {expected[:12]}...): {path}; restore it or register the model again"
                )
        if self.meta.get("data_sha256") != hashes[self.reference.name]:
            raise RegistryError(f"{self.path / META_FILE}: data_sha256 disagrees with the sha256 of {self.reference.name}")


def parse_meta(raw: bytes, where: str, number: int) -> dict[str, Any]:
    """A version's meta.json, checked to describe ``number`` (``where`` names it in errors)."""
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{where}: not valid JSON ({exc}); the version folder is damaged") from None
    if not isinstance(meta, dict) or meta.get("number") != number:
        found = meta.get("number") if isinstance(meta, dict) else meta
        raise RegistryError(
            f"{where}: describes version {found!r}, not {version_name(number)}; the folder was moved or edited"
        )
    return meta


def load_version(path: Path, number: int) -> ModelVersion:
    """The version in ``path``, checking that its meta.json describes ``number``."""
    meta_path = path / META_FILE
    try:
        raw = meta_path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{meta_path}: missing; the version folder is damaged (restore it from a backup)") from None
    return ModelVersion(number=number, path=path, meta=parse_meta(raw, str(meta_path), number))


def version_meta(
    number: int,
    created: str,
    revision: str | None,
    hashes: dict[str, str],
    reference_file: str,
    sources: dict[str, Path],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A version's meta.json: its number, creation time, git revision, the sha256 of every stored file (what
    ``verify`` re-checks), the training data's hash, where each file came from and ``extra``."""
    return {
        "version": version_name(number),
        "number": number,
        "created": created,
        "git_revision": revision,
        "sha256": hashes,
        "data_sha256": hashes[reference_file],
        "sources": {file_name: str(source) for file_name, source in sources.items()},
        "extra": extra,
    }


def version_sources(
    *,
    onnx: Path,
    model_card: Path,
    metrics: Path,
    params: Path,
    dvc_lock: Path,
    reference: Path,
    onnx_int8: Path | None,
    torch_model: Path | None,
    encoder: Path | None,
    extra: dict[str, Any] | None,
) -> tuple[dict[str, Path], str, dict[str, Any]]:
    """What ``register`` stores, checked before anything is written: {file name in the version: source},
    the reference's file name (its suffix is the kind's) and ``extra``, each bad argument named."""
    sources = {
        ONNX_FILE: onnx,
        CARD_FILE: model_card,
        METRICS_FILE: metrics,
        PARAMS_FILE: params,
        DVC_LOCK_FILE: dvc_lock,
    }
    arguments = dict(zip(VERSION_FILES[:-1], ("onnx", "model_card", "metrics", "params", "dvc_lock"), strict=True))
    reference_file = Path(REFERENCE_FILE).with_suffix(Path(reference).suffix or ".parquet").name
    sources[reference_file], arguments[reference_file] = reference, "reference"
    if onnx_int8 is not None:
        sources[INT8_FILE], arguments[INT8_FILE] = onnx_int8, "onnx_int8"
    if torch_model is not None:
        sources[TORCH_FILE], arguments[TORCH_FILE] = torch_model, "torch_model"
    if encoder is not None:
        sources[ENCODER_FILE], arguments[ENCODER_FILE] = encoder, "encoder"
    for name, source in sources.items():
        if not Path(source).is_file():
            raise RegistryError(f"register: {arguments[name]} file {source} not found (run the pipeline first: dvc repro)")
    for name in (CARD_FILE, METRICS_FILE):
        try:
            json.loads(Path(sources[name]).read_text())
        except ValueError as exc:
            raise RegistryError(f"register: {arguments[name]} file {sources[name]} is not valid JSON ({exc})") from None
    extra = dict(extra or {})
    try:
        json.dumps(extra, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"register: extra is not JSON serialisable: {exc}") from None
    return {name: Path(source) for name, source in sources.items()}, reference_file, extra
