"""``apply``: the best trial's values into params.yaml, line by line, keeping its comments.

Train keys are written in the ``train:`` section, network keys (``model.hidden``) in its nested
``model:`` block. A key the file does not set yet is added after the block's last entry.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import atomic_write
from pipeline.params import parse_params
from pipeline.tune.space import MODEL, model_key, plain, value_of

log = logging.getLogger(__name__)

_SECTION_HEADER = re.compile(r"^train:[ \t]*(#.*)?$")
_CONTENT = re.compile(r"^( *)[^\s#]")  # a line holding YAML (not blank, not only a comment): its indentation


def _key_line(indent: int) -> re.Pattern[str]:
    """A key on one line at ``indent``: key, colon, value, optional comment."""
    return re.compile(
        rf"^(?P<lead> {{{indent}}}(?P<key>[A-Za-z_]\w*):[ \t]*)(?P<value>[^#\r\n]*?)(?P<gap>[ \t]*)(?P<comment>#[^\r\n]*)?(?P<eol>\r?\n?)$"
    )


def _continuation(indent: int) -> re.Pattern[str]:
    """A line continuing the block value of a key at ``indent``: deeper indented, or a "- item" at the
    key's own indent (the layout ``dvc exp run -S`` and ``dvc exp apply`` write lists in)."""
    return re.compile(rf"^( {{{indent + 1}}}| {{{indent}}}-([ \t]|\r?\n?$))")


def _indent(line: str) -> int | None:
    match = _CONTENT.match(line)
    return len(match[1]) if match else None


def _block_end(lines: list[str], header: int, limit: int) -> int:
    """One past the last line of the block under ``lines[header]``: the next line holding YAML no
    deeper than the header ends it."""
    own = _indent(lines[header]) or 0
    return next((i for i in range(header + 1, limit) if (depth := _indent(lines[i])) is not None and depth <= own), limit)


def _content(lines: list[str], header: int, end: int) -> list[int]:
    """The lines holding YAML in the block under ``lines[header]``."""
    return [i for i in range(header + 1, end) if _indent(lines[i]) is not None]


def yaml_value(value: Any) -> str:
    """A value as inline YAML that reads back as the same value (floats keep a dot: 1.0e-05)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("\n...").strip()


class _Edits:
    """Replacements (first line -> (line after the old value, new line)) and insertions (before line -> new lines)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.replace: dict[int, tuple[int, str]] = {}
        self.insert: dict[int, list[str]] = {}

    def block(self, header: int, end: int, values: dict[str, Any], where: str, present: dict[str, Any], source: str) -> None:
        """Set ``values`` in the block under ``lines[header]`` (up to ``end``): in place, or added after its last entry."""
        if not values:
            return
        content = _content(self.lines, header, end)
        if not content:
            raise ParamsError(
                f"{source}: {where} holds no keys on lines of their own; set {where}.{next(iter(values))} by hand"
            )
        indent = _indent(self.lines[content[0]]) or 0
        key_line, continuation = _key_line(indent), _continuation(indent)
        found: set[str] = set()
        for i in content:
            match = key_line.match(self.lines[i])
            if not (match and match["key"] in values):
                continue
            after = i + 1
            if not match["value"].strip():  # a block value (a list one item a line, or null) follows
                while after < end and continuation.match(self.lines[after]):
                    after += 1
            line = match["lead"].rstrip(" \t") + " " + yaml_value(values[match["key"]])
            if match["comment"]:  # kept in its column when the value fits
                column = len(match["lead"]) + len(match["value"]) + len(match["gap"])
                line += " " * max(1, column - len(line)) + match["comment"]
            self.replace[i] = (after, line + (match["eol"] or ("\n" if after > i + 1 else "")))
            found.add(match["key"])
        for key in values:
            if key in found:
                continue
            if key in present:  # set in a form not on a line of its own: not rewritten by guesswork
                raise ParamsError(
                    f"{source}: no line '{' ' * indent}{key}: <value>' in {where}; set {where}.{key}: {yaml_value(values[key])} by hand"
                )
            eol = "\r\n" if self.lines[content[-1]].endswith("\r\n") else "\n"
            self.insert.setdefault(content[-1] + 1, []).append(f"{' ' * indent}{key}: {yaml_value(values[key])}{eol}")

    def text(self) -> str:
        out: list[str] = []
        i = 0
        while i <= len(self.lines):
            for added in self.insert.get(i, []):
                if out and not out[-1].endswith("\n"):  # a last line without its newline
                    out[-1] += "\n"
                out.append(added)
            if i == len(self.lines):
                break
            after, line = self.replace.get(i, (i + 1, self.lines[i]))
            out.append(line)
            i = after
        return "".join(out)


def rewrite_train_values(text: str, values: dict[str, Any], source: str = "params.yaml") -> str:
    """``text`` with the given train values set in place (``model.<key>`` in ``train.model``): each
    key's line keeps its comment and every other line is left as it is. A value written as a block (a
    list one item a line) is replaced by its one-line form; a key not in the file is added."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _SECTION_HEADER.match(line.rstrip("\r\n"))), None)
    original = yaml.safe_load(text)
    if start is None or not isinstance(original.get("train"), dict):
        raise ParamsError(f"{source}: no 'train:' section header on a line of its own; set the tuned values by hand")
    end = _block_end(lines, start, len(lines))
    train_values = {key: value for key, value in values.items() if not model_key(key)}
    model_values = {name: value for key, value in values.items() if (name := model_key(key))}
    edits = _Edits(lines)
    # The network's block first: where train.model ends the train section, a key added to each
    # lands at the same place, the network's (deeper) one first.
    if model_values:
        content = _content(lines, start, end)
        header = _key_line(_indent(lines[content[0]]) or 0) if content else None
        opening = next(
            (i for i in content if header and (m := header.match(lines[i])) and m["key"] == MODEL and not m["value"].strip()),
            None,
        )
        if opening is None or not isinstance(original["train"].get(MODEL), dict):
            first = next(iter(model_values))
            raise ParamsError(
                f"{source}: no 'model:' block in the train section; set train.model.{first}: {yaml_value(model_values[first])} by hand"
            )
        edits.block(opening, _block_end(lines, opening, end), model_values, "train.model", original["train"][MODEL], source)
    edits.block(start, end, train_values, "train", original["train"], source)
    rewritten = edits.text()
    # Check the result as YAML: exactly the intended train values changed, nothing else.
    expected = yaml.safe_load(text)
    expected["train"].update({key: plain(value) for key, value in train_values.items()})
    if model_values:
        expected["train"][MODEL].update({key: plain(value) for key, value in model_values.items()})
    if yaml.safe_load(rewritten) != expected:
        raise ParamsError(
            f"{source}: rewriting the train values line by line did not give the intended YAML; set them by hand"
        )
    return rewritten


def read_best(path: Path) -> dict[str, Any]:
    """best_params.yaml, checked to hold a mapping of train values."""
    try:
        best = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run python -m pipeline.tune search first)") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(best, dict) or not isinstance(best.get("train"), dict) or not best["train"]:
        raise DataError(f"{path}: expected a 'train' mapping of tuned values")
    return best


def apply(params_file: Path, best_file: Path) -> dict[str, tuple[Any, Any]]:
    """Write the best trial's train values into ``params_file`` (comments kept); returns {key: (old, new)}."""
    best = read_best(best_file)
    text = params_file.read_text()
    old = parse_params(yaml.safe_load(text), str(params_file))
    searched = best.get("architecture")
    if searched is not None and searched != old.train.model.architecture:
        raise ParamsError(
            f"{best_file}: the values were tuned for train.model.architecture {searched!r}, but {params_file} trains "
            f"{old.train.model.architecture!r}; search again with a new study (--study)"
        )
    rewritten = rewrite_train_values(text, best["train"], str(params_file))
    new = parse_params(yaml.safe_load(rewritten), str(params_file))  # the result must still be valid params
    changes = {key: (plain(value_of(old.train, key)), plain(value_of(new.train, key))) for key in best["train"]}
    atomic_write(params_file, rewritten)
    log.info(
        "%s: train values of trial %s (%s %s) written: %s",
        params_file,
        best.get("trial"),
        best.get("metric"),
        best.get("value"),
        ", ".join(f"{key} {a} -> {b}" for key, (a, b) in changes.items()),
    )
    return changes
