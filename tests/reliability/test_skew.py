"""Issue 9, training/serving skew: the exported graph applies clean's row rules itself, so every consumer
(service, batch scorer, anyone with onnxruntime) treats a raw value as training did.

Two kinds of proof: for every rule in ``clean`` (valid ranges, infinities and float32 overflow, missing
tokens), the graph and the training path (clean + encoder) agree exactly on the same raw rows; and a
property-based test (Hypothesis) sends random raw records through the live service and the training path:
no 500, no NaN in a 200, identical encoded inputs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import DataError
from pipeline.engine import Tensors, fit
from pipeline.kinds.base import RecordError
from pipeline.kinds.tabular.clean import apply_ranges, coerce_types
from pipeline.kinds.tabular.encoder import Preprocessor, load_preprocessor
from pipeline.kinds.tabular.export import build_onnx, card_inputs, preprocessing_graph
from pipeline.kinds.tabular.records import FeedSchema, build_feed
from pipeline.kinds.tabular.runtime import onnx_feed
from pipeline.kinds.tabular.schema import Feature, read_schema
from pipeline.kinds.tabular.train import tabular_config
from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.card import ModelCard, TabularCard
from pipeline.onnxio.session import ort_session
from pipeline.params import TabularClean, TabularFeatures, TrainParams, load_params
from serving.app import create_app

# "-1": a sentinel code of the numeric-coded category ``code`` (a number column that is a category).
RULES = TabularClean(valid_ranges={"x": (-1.5, 2.0), "noise": (0.0, None)}, missing_tokens=("", "NA", "?", "unknown", "-1"))
# Raw rows that hit every rule: below and above a range, infinities, float32 overflow, tokens, a hair
# beyond a bound (float64 outside, float32 on it: the rule is judged in float32 everywhere).
POISON = pd.DataFrame(
    {
        "x": [-1.6, 2.5, np.inf, -np.inf, 1e39, np.nan, 0.3, 2.0000000001, -1.5, 2.0],
        "noise": [-5.0, 50.0, 3.0, 7.0, 1e39, -np.inf, np.nan, 1.0, 0.0, 1e38],
        "colour": ["red", "NA", "?", "unknown", "blue", None, "violet", "never-seen", " red ", "green"],
        "code": [-1, 1, 2, -1, 3, 7, 1, 2, 3, -1],
    }
)


def training_path(raw: pd.DataFrame, schema, pre: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
    """clean's row rules (types, tokens, ranges) then the fitted encoder: what training made of these rows."""
    cleaned, _ = coerce_types(raw.assign(label="high"), schema, RULES)
    cleaned, _ = apply_ranges(cleaned, schema, RULES)
    return pre.transform(cleaned)


def graph_path(raw: pd.DataFrame, pre: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
    """The exported preprocessing graph on the raw rows, fed as every Evergreen consumer feeds it."""
    graph = preprocessing_graph(pre, opset=17, ir_version=8)
    x_num, x_cat = ort_session(graph.SerializeToString()).run(["x_num", "x_cat"], onnx_feed(raw, card_inputs(pre)))
    return x_num, x_cat


@pytest.fixture
def fitted(table, schema):
    table = table.assign(code=np.random.default_rng(0).choice([-1, 1, 2, 3], size=len(table)))
    schema = replace(schema, features=(*schema.features, Feature("code", "categorical")))
    schema = schema.with_rules(RULES.valid_ranges, RULES.missing_tokens)
    cleaned, _ = coerce_types(table, schema, RULES)
    cleaned, _ = apply_ranges(cleaned, schema, RULES)
    return cleaned, schema, Preprocessor.fit(cleaned.iloc[:400], schema, TabularFeatures())


def test_every_clean_rule_is_applied_alike_by_the_exported_graph_and_the_training_path(fitted):
    _, schema, pre = fitted
    expected_num, expected_cat = training_path(POISON, schema, pre)
    got_num, got_cat = graph_path(POISON, pre)

    np.testing.assert_array_equal(got_num, expected_num)  # bit for bit: same float32 arithmetic
    np.testing.assert_array_equal(got_cat, expected_cat)
    assert np.isfinite(got_num).all()
    indicator = pre.numeric[0].indicator  # the rows made missing carry the missing indicator of x
    if indicator:
        assert list(got_num[:, len(pre.numeric)][:6]) == [1.0] * 6
    colour, code = pre.categorical
    assert list(got_cat[1:4, 0]) == [colour.missing_index] * 3  # "NA", "?", "unknown": missing, not rare
    assert "-1" not in code.vocabulary and got_cat[0, 1] == got_cat[3, 1] == code.missing_index  # the sentinel


def test_the_full_model_answers_finite_probabilities_for_poison_rows(fitted):
    cleaned, schema, pre = fitted
    cfg = TrainParams.model_validate({"model": {"architecture": "mlp", "hidden": (8,)}, "epochs": 2, "warmup_epochs": 0})
    model, _, _ = fit(
        Tensors.encode(cleaned.iloc[:400], pre),
        Tensors.encode(cleaned.iloc[400:], pre),
        tabular_config(pre, cfg),
        cfg,
        seed=0,
        task="classification",
    )
    session = ort_session(build_onnx(model.eval(), pre, opset=17).SerializeToString())
    probabilities, _ = session.run(["probabilities", "label"], onnx_feed(POISON, card_inputs(pre)))
    x_num, x_cat = training_path(POISON, schema, pre)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x_num), torch.from_numpy(x_cat)), dim=1).numpy()
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_a_service_record_whose_number_overflows_float32_is_refused_naming_the_field(fitted):
    _, _, pre = fitted
    inputs = FeedSchema(tuple(pre.input_columns), frozenset(pre.input_columns), frozenset(["x", "noise"]))
    record = {"x": 1e39, "noise": 1.0, "colour": "red", "code": 1}
    with pytest.raises(RecordError, match=r"record 0: field 'x' = 1e\+39 is not a finite float32 number"):
        build_feed([record], inputs)
    with pytest.raises(RecordError, match=r"record 0: field 'noise' must be a number or null, got '12k'"):
        build_feed([{**record, "x": 1.0, "noise": "12k"}], inputs)
    feed = build_feed([{**record, "x": "0.5", "noise": None, "colour": 441.0}], inputs)  # one rule for every field
    assert feed["x"][0, 0] == np.float32(0.5) and math.isnan(feed["noise"][0, 0]) and feed["colour"][0, 0] == "441"


# ---------------------------------------------------------------- the live service, property-based


@pytest.fixture(scope="module")
def live(served_workspace, tmp_path_factory):
    """The slice model promoted in a real registry, served by the real app; its preprocessor and rules."""
    params = load_params(served_workspace / "params.yaml")
    registry = Registry(served_workspace / params.paths.registry)
    card = ModelCard.load(registry.production().card)
    assert isinstance(card, TabularCard)
    database = tmp_path_factory.mktemp("skew-log") / "predictions.sqlite"
    settings_ = params.serve.model_copy(update={"database_url": f"sqlite:///{database}"})
    with TestClient(create_app(settings_, registry.root)) as client:
        yield {
            "client": client,
            "card": card,
            "clean": params.clean,
            "schema": read_schema(served_workspace / params.paths.split),
            "pre": load_preprocessor(served_workspace / params.paths.preprocessor),
        }


def field_values(spec, with_junk: bool) -> st.SearchStrategy:
    """Raw JSON values a client may send: extreme floats, integers, text numbers, tokens, unseen categories,
    and now and then text that is no value at all (which must be a 422, not a 500)."""
    tokens = st.sampled_from(["", " ", "NA", "?", "N/A", "unknown", "nan", "None"])
    junk = st.one_of(st.sampled_from(["12k", "\u2014", "1e39", "inf", "-0x1"]), st.text(max_size=12))
    junk = junk if with_junk else st.none()
    numbers = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN; extremes up to 1.8e308
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(min_value=-1e3, max_value=1e3),
    )
    if spec.kind == "numeric":
        low, high = spec.valid_range or (None, None)
        edges = [v for v in (low, high) if v is not None]
        near = st.sampled_from([e + d for e in edges for d in (-1.0, -1e-9, 0.0, 1e-9, 1.0)]) if edges else numbers
        text_numbers = numbers.map(lambda v: f" {v!r} ")
        return st.one_of(st.none(), numbers, near, near, text_numbers, tokens, junk)
    known = st.sampled_from(list(spec.known_values[:20]) or ["x"])
    return st.one_of(st.none(), known, known, numbers, tokens, st.text(max_size=12))


def raw_records(card: TabularCard, with_junk: bool) -> st.SearchStrategy:
    fields = {spec.name: field_values(spec, with_junk) for spec in card.inputs}
    return st.lists(st.fixed_dictionaries(fields), min_size=1, max_size=3)


def one_row_training_path(record: dict, live) -> tuple[np.ndarray, np.ndarray]:
    """clean + encoder on one record as a one-row table: pandas types the column from that value alone,
    as the canonical-text rule assumes (a table mixing numbers and text in one column is text)."""
    schema = live["schema"]
    frame = pd.DataFrame({name: pd.Series([value], dtype=object) for name, value in record.items()})
    frame = frame.infer_objects().assign(**{schema.target: "x"})
    cleaned, _ = coerce_types(frame, schema, live["clean"])
    cleaned, _ = apply_ranges(cleaned, schema, live["clean"])
    return live["pre"].transform(cleaned)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_raw_records_never_500_never_nan_and_meet_the_training_rules(live, data):
    card, client = live["card"], live["client"]
    records = data.draw(raw_records(card, with_junk=data.draw(st.booleans())))
    response = client.post("/predict", json=records)
    assert response.status_code in (200, 422), response.text
    inputs = FeedSchema.of(card)
    try:
        feed = build_feed(records, inputs)
    except RecordError:
        assert response.status_code == 422  # refused by the service for the same reason
        event("refused (422)")
        return
    event("scored (200)")
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        probabilities = list(prediction["probabilities"].values())
        assert all(isinstance(p, float) and math.isfinite(p) for p in probabilities)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    graph = ort_session(preprocessing_graph(live["pre"], 17, 8).SerializeToString())
    for i, record in enumerate(records):
        one = {name: values[i : i + 1] for name, values in feed.items()}
        got_num, got_cat = graph.run(["x_num", "x_cat"], one)
        try:
            expected_num, expected_cat = one_row_training_path(record, live)
        except DataError:
            event("record not typable as a one-row table")
            continue  # a one-row table pandas cannot type as the column's kind; the graph path is checked above
        np.testing.assert_array_equal(got_num, expected_num, err_msg=repr(record))
        np.testing.assert_array_equal(got_cat, expected_cat, err_msg=repr(record))
