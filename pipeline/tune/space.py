"""The search space of the network being trained, and one trial's train params.

Keys are train keys (``lr``) or the network's own keys (``model.hidden``, in ``train.model``);
``tune.space`` gives them, or the architecture's default space when it is null.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from pydantic import ValidationError

from pipeline.core.errors import ParamsError
from pipeline.params import ARCHITECTURES, SearchDimension, TrainParams, TuneParams, numeric_kind

MODEL = "model"
# An integer range this short is checked value by value (a d_model range against heads), a longer one by its bounds.
CHECKED_RANGE = 100
_ARCHITECTURE_TAGS = {name for names in ARCHITECTURES.values() for name in names}


def model_key(key: str) -> str | None:
    """The network key a dotted key names (``model.hidden`` -> ``hidden``), else None."""
    head, _, name = key.partition(".")
    return name if head == MODEL and name else None


def value_of(train: TrainParams, key: str) -> Any:
    """A key's value in the train params (``model.<key>`` in the network's section)."""
    name = model_key(key)
    return getattr(train.model, name) if name else getattr(train, key)


def is_integer(train: TrainParams, key: str) -> bool:
    name = model_key(key)
    fields = type(train.model).model_fields if name else TrainParams.model_fields
    return numeric_kind(fields[name or key].annotation) is int


def plain(value: Any) -> Any:
    """Tuples as lists, for JSON (trial attributes) and YAML."""
    return [plain(item) for item in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    """Lists (YAML's, JSON's) as the tuples the params hold."""
    return tuple(_tuples(item) for item in value) if isinstance(value, (tuple, list)) else value


def trial_epochs(train: TrainParams, tune: TuneParams) -> int:
    """Each trial's epoch budget: train.epochs, capped by tune.epochs."""
    return min(train.epochs, tune.epochs) if tune.epochs is not None else train.epochs


def _error_key(loc: tuple[Any, ...]) -> str:
    """The params key of a validation error, without the architecture tag pydantic puts after ``model``."""
    parts = [str(part) for part in loc]
    return ".".join(
        part for i, part in enumerate(parts) if not (i > 0 and parts[i - 1] == MODEL and part in _ARCHITECTURE_TAGS)
    )


def trial_params(base: TrainParams, update: dict[str, Any], epochs: int) -> TrainParams:
    """``base`` with the trial's values (``model.<key>`` into the network's section) and epoch budget,
    validated again as a whole (never mutated)."""
    train = base.model_dump()
    model = dict(train[MODEL])
    for key, value in update.items():
        name = model_key(key)
        if name:
            model[name] = _tuples(value)
        else:
            train[key] = _tuples(value)
    try:
        return TrainParams.model_validate({**train, MODEL: model, "epochs": epochs})
    except ValidationError as exc:
        raise ParamsError("; ".join(_problem(error) for error in exc.errors())) from None


def _problem(error: Any) -> str:
    """One validation error as ``train.<key>: <message>`` (a message naming its keys as it is)."""
    message = error["msg"].removeprefix("Value error, ")
    return message if not error["loc"] or message.startswith("train.") else f"train.{_error_key(error['loc'])}: {message}"


def candidates(train: TrainParams, key: str, dimension: SearchDimension) -> tuple[Any, ...]:
    """The values of a dimension checked before a search: its choices, the integers of a short integer
    range, else the bounds of the range (as the key's type: YAML ranges are read as floats)."""
    if dimension.choices is not None:
        return dimension.choices
    if is_integer(train, key):
        low, high = int(dimension.low), int(dimension.high)  # type: ignore[arg-type]
        return tuple(range(low, high + 1)) if high - low < CHECKED_RANGE else (low, high)
    return (dimension.low, dimension.high)


def check_space(base: TrainParams, tune: TuneParams) -> None:
    """Fail before any trial runs if a value of the space, alone or with a value of another key
    (``model.d_model`` with ``model.heads``), gives invalid train params; the message names the keys."""
    epochs = trial_epochs(base, tune)
    try:
        trial_params(base, {}, epochs)
    except ParamsError as exc:
        raise ParamsError(f"tune.epochs = {tune.epochs}: trials would run {epochs} epochs: {exc}") from None
    values = {key: candidates(base, key, dimension) for key, dimension in tune.space_for(base.model.architecture).items()}
    for key, options in values.items():
        for value in options:
            try:
                trial_params(base, {key: value}, epochs)
            except ParamsError as exc:
                raise ParamsError(f"tune.space.{key}: {plain(value)!r} is not a valid train value: {exc}") from None
    # The params' own constraints tie at most two keys together (d_model and heads): every pair.
    for (key_a, options_a), (key_b, options_b) in itertools.combinations(values.items(), 2):
        for a, b in itertools.product(options_a, options_b):
            try:
                trial_params(base, {key_a: a, key_b: b}, epochs)
            except ParamsError as exc:
                raise ParamsError(
                    f"tune.space: {key_a} = {plain(a)!r} with {key_b} = {plain(b)!r} is not a valid train value: {exc}; "
                    "list only values that fit together"
                ) from None


def _choice_label(choice: Any) -> Any:
    """Optuna stores categorical choices as plain scalars: a list value (``model.hidden``) becomes its JSON text."""
    return json.dumps(plain(choice)) if isinstance(choice, (tuple, list)) else choice


def suggest(trial, base: TrainParams, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One trial's values, drawn from ``space`` (ints for integer keys); Optuna's names are the keys."""
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        try:
            if dimension.choices is not None:
                labels = {_choice_label(choice): choice for choice in dimension.choices}
                values[key] = labels[trial.suggest_categorical(key, list(labels))]
            elif is_integer(base, key):
                values[key] = trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)  # type: ignore[arg-type]
            else:
                values[key] = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
        except ValueError as exc:  # Optuna refuses a changed distribution for a name already in the study
            raise ParamsError(
                f"tune.space.{key} differs from the space study {trial.study.study_name!r} was started with "
                f"({exc}); name a new study (--study) to search a new space"
            ) from None
    return values


def current_values(base: TrainParams, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """The params file's own values, as Optuna parameters, for the keys whose value lies in the
    space: queued as a trial (a new study's first, never pruned), so when every key's value lies in
    the space the best found is never worse than what params.yaml has."""
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        value = value_of(base, key)
        if dimension.choices is not None:
            if value in dimension.choices:
                values[key] = _choice_label(value)
        elif value is not None and dimension.low <= value <= dimension.high:  # type: ignore[operator]
            values[key] = value
    return values
