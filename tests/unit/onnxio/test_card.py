"""The model card (pipeline/onnxio/card.py): each kind's card round-trips, cards of earlier versions load and
write back byte for byte, and a bad card is one line naming the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.image.encoder import ImageNormaliser
from pipeline.kinds.image.export import image_card
from pipeline.kinds.sequence.data import SequenceSchema
from pipeline.kinds.sequence.encoder import SequenceEncoder
from pipeline.kinds.sequence.export import INT8_NOTE, sequence_card
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.export import model_card
from pipeline.onnxio.card import ImageCard, ModelCard, SequenceCard, TabularCard
from pipeline.onnxio.describe import card_fields
from pipeline.params import TabularFeatures
from tests.conftest import REPO
from tests.unit.onnxio.fixtures import KINDS, old_card_data, old_card_path

CARD_CLASSES = {"tabular": TabularCard, "image": ImageCard, "sequence": SequenceCard}

CHECKPOINT = {
    "train_params": {"epochs": 2, "lr": 0.01},
    "seed": 42,
    "model_config": {"family": "mlp", "hidden": [16]},
    "best_epoch": 1,
    "best_metric": {"name": "val_loss", "value": 0.5},
}
CLASSIFIER_METRICS = {"model": {"accuracy": 0.75}, "baseline_majority": {"accuracy": 0.5}, "test_rows": 4}
HASHES = {"onnx_sha256": "a" * 64, "preprocessor_sha256": "b" * 64}
PARITY = {
    "rows": 4,
    "max_abs_probability_diff": 1e-7,
    "tolerance": 1e-4,
    "label_mismatches": 0,
    "single_record_latency_us": 50.0,
}
INT8 = {
    "bytes": 10,
    "fp32_bytes": 40,
    "accuracy": 0.75,
    "fp32_accuracy": 0.75,
    "label_agreement": 1.0,
    "max_abs_probability_diff": 0.01,
}


def sequence_encoder(task: str) -> SequenceEncoder:
    schema = SequenceSchema(
        series_column="series",
        time_column="time",
        target="Demand" if task == "forecast" else "kind",
        features=("Demand", "Temperature"),
        task=task,
        lookback=8,
        horizon=2,
        stride=1,
        season_length=4,  # type: ignore[arg-type]
        frequency="30min",
        classes=() if task == "forecast" else ("noise", "sine"),
    )
    return SequenceEncoder(schema, (5.0, 12.5), (1.0, 4.0), *((5.0, 1.0) if task == "forecast" else ()))


def built_cards(table, schema) -> dict[str, ModelCard]:
    """A card of each kind (and both sequence tasks), as the exporters build them."""
    preprocessor = Preprocessor.fit(table, schema, TabularFeatures())
    normaliser = ImageNormaliser("digit", ("0", "1"), (1, 8, 8), (0.0, 16.0), (4.9,), (6.0,))
    forecast_metrics = {"model": {"mae": 0.4}, "baseline_seasonal_naive": {"mae": 0.5}, "baseline_persistence": {"mae": 0.1}}
    forecast_parity = {"rows": 4, "max_abs_diff": 1e-6, "max_scaled_diff": 1e-7, "label_mismatches": 0, "tolerance": 1e-4}
    return {
        "tabular": model_card(preprocessor, CHECKPOINT, CLASSIFIER_METRICS, HASHES, PARITY, INT8),
        "image": image_card(normaliser, card_fields(normaliser.classes, CHECKPOINT, CLASSIFIER_METRICS, HASHES, PARITY, None)),
        "forecast": sequence_card(sequence_encoder("forecast"), CHECKPOINT, forecast_metrics, HASHES, forecast_parity),
        "classify": sequence_card(sequence_encoder("classify"), CHECKPOINT, CLASSIFIER_METRICS, HASHES, PARITY),
    }


def test_the_card_module_imports_no_torch():
    code = "import sys, pipeline.onnxio.card; assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_card_written_at_9e2a95f_loads_and_writes_back_byte_for_byte(kind, tmp_path):
    card = ModelCard.load(old_card_path(kind))
    assert type(card) is CARD_CLASSES[kind] and CARD_CLASSES[kind].load(old_card_path(kind)) == card
    card.write(tmp_path / "model_card.json")
    assert (tmp_path / "model_card.json").read_bytes() == old_card_path(kind).read_bytes()


def test_the_typed_fields_of_the_9e2a95f_cards():
    tabular = TabularCard.load(old_card_path("tabular"))
    assert tabular.kind == "tabular" and "kind" not in tabular.to_dict()  # tabular cards never wrote one
    assert tabular.input_names == tabular.numeric_names + tabular.categorical_names
    assert tabular.inputs[-1].kind == "categorical" and tabular.inputs[-1].known_values
    assert tabular.int8 is not None and tabular.int8.accuracy_loss == tabular.int8.fp32_accuracy - tabular.int8.accuracy
    assert tabular.onnx_hashes == {tabular.hashes["onnx_sha256"], tabular.hashes["onnx_int8_sha256"]}
    image = ImageCard.load(old_card_path("image"))
    assert image.inputs[0].image_shape == (1, 8, 8) and image.inputs[0].value_range == (0.0, 16.0)
    sequence = SequenceCard.load(old_card_path("sequence"))
    assert sequence.task == "regression" and sequence.outputs[0].units == "Demand, raw" and sequence.int8 is None
    assert sequence.inputs[0].shape == ("N", sequence.lookback, len(sequence.features))


@pytest.mark.parametrize("kind", ["tabular", "image", "forecast", "classify"])
def test_each_kinds_card_round_trips_and_keeps_the_keys_of_earlier_cards(kind, table, schema, tmp_path):
    card = built_cards(table, schema)[kind]
    card.write(tmp_path / "model_card.json")
    loaded = ModelCard.load(tmp_path / "model_card.json")
    assert loaded == card and type(loaded) is type(card)
    written = json.loads((tmp_path / "model_card.json").read_text())
    assert written == json.loads(json.dumps(card.to_dict()))
    old = old_card_data({"forecast": "sequence", "classify": "sequence"}.get(kind, kind))
    assert set(written) == set(old)
    assert set(written["inputs"][-1]) == set(old["inputs"][-1])
    if kind == "forecast":
        assert written["task"] == "regression" and [o["name"] for o in written["outputs"]] == ["forecast"]
        assert set(written["parity"]) == set(old["parity"])
    else:
        assert written["task"] == "classification" and [o["name"] for o in written["outputs"]] == ["probabilities", "label"]
        assert "units" not in written["outputs"][0]
    if kind == "classify":
        assert (
            written["sequence_task"] == "classify"
            and written["classes"] == ["noise", "sine"]
            and written["int8_note"] == INT8_NOTE
        )


def test_load_refuses_a_card_of_another_kind():
    with pytest.raises(
        DataError, match=r"9e2a95f_image\.json: the card of a model of kind 'image'; this needs a tabular model$"
    ):
        TabularCard.load(old_card_path("image"))


def _drop_target(card):
    del card["target"]


def _bad_shape(card):
    card["inputs"][1]["shape"] = "N x 1"


def _bad_epoch(card):
    card["model"]["best_epoch"] = "best"


def _extra_field(card):
    card["owner"] = "me"


def _unknown_kind(card):
    card["kind"] = "audio"


def _bad_input_kind(card):
    card["inputs"][0]["kind"] = "text"


def _two_images(card):
    card["inputs"] = card["inputs"] * 2


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("tabular", _drop_target, r"model card has no field 'target'"),
        ("tabular", _bad_shape, r"model card field 'inputs\.1\.shape': Input should be a valid tuple \(got 'N x 1'\)"),
        ("tabular", _bad_epoch, r"model card field 'model\.best_epoch': Input should be a valid integer"),
        ("tabular", _extra_field, r"model card has an unknown field 'owner'"),
        (
            "tabular",
            _unknown_kind,
            r"model card field 'kind': unknown kind 'audio'; known: \['tabular', 'image', 'sequence', 'text'\]",
        ),
        ("tabular", _bad_input_kind, r"model card field 'inputs\.0': Input tag 'text'"),
        ("image", _two_images, r"model card field 'inputs': Tuple should have at most 1 item"),
    ],
)
def test_a_bad_card_is_one_line_naming_the_file_and_the_field(kind, change, message, tmp_path):
    data = old_card_data(kind)
    change(data)
    write_json(tmp_path / "model_card.json", data)
    with pytest.raises(DataError, match=rf"^{tmp_path}/model_card\.json: {message}") as caught:
        ModelCard.load(tmp_path / "model_card.json")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ("{not json", "not valid JSON"), ("[1, 2]", "a model card is a JSON object, not list")],
)
def test_a_missing_or_unreadable_card_is_one_line(content, message, tmp_path):
    path = Path(tmp_path / "model_card.json")
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=rf"^{path}: {message}"):
        ModelCard.load(path)
