import onnx
import pytest

from pipeline.core.errors import ExportError
from pipeline.engine import Tensors, fit
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.evaluate import predict_proba
from pipeline.kinds.tabular.export import build_onnx, raw_inputs, verify
from pipeline.kinds.tabular.train import tabular_config
from pipeline.onnxio.build import LABEL, PROBABILITIES
from pipeline.onnxio.session import ort_session
from pipeline.params import TabularFeatures, TrainParams

NETWORKS = {
    "mlp": {"architecture": "mlp", "hidden": (16,)},
    "ft_transformer": {"architecture": "ft_transformer", "d_token": 16, "heads": 2, "layers": 2},
}


def _trained(table, schema, network=None, **train):
    """A quick model; ``network``: the ``train.model`` section (default: an MLP with one layer of 16)."""
    pre = Preprocessor.fit(table.iloc[:400], schema, TabularFeatures())
    cfg = TrainParams.model_validate(
        {"model": network or NETWORKS["mlp"], "epochs": 2, "batch_size": 64, "warmup_epochs": 0, **train}
    )
    model, _, _ = fit(
        Tensors.encode(table.iloc[:400], pre),
        Tensors.encode(table.iloc[400:], pre),
        tabular_config(pre, cfg),
        cfg,
        seed=0,
        task="classification",
    )
    return model.eval(), pre


@pytest.mark.parametrize("network", list(NETWORKS.values()), ids=list(NETWORKS))
def test_raw_input_graph_matches_pytorch(table, schema, network):
    model, pre = _trained(table, schema, network)
    graph = build_onnx(model, pre, opset=17)
    onnx.checker.check_model(graph, full_check=True)

    inputs = {i.name: i for i in graph.graph.input}
    assert set(inputs) == {"x", "noise", "colour"}  # one input per raw column, named after it
    assert inputs["x"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inputs["colour"].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert [d.dim_value for d in inputs["x"].type.tensor_type.shape.dim][1] == 1
    assert [o.name for o in graph.graph.output] == [PROBABILITIES, LABEL]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)

    # Held-out rows with missing numbers, missing categories and a category never seen in training.
    rows = table.iloc[400:].copy()
    rows.loc[rows.index[:5], "colour"] = "never-seen"
    expected = predict_proba(model, pre, rows)
    report = verify(graph.SerializeToString(), expected, rows, pre, tolerance=1e-5)
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] < 1e-5

    probabilities, labels = ort_session(graph.SerializeToString()).run(None, raw_inputs(rows, pre))
    assert probabilities.shape == (len(rows), 3)
    assert set(labels) <= set(pre.classes)


def test_verification_fails_when_the_paths_disagree(table, schema):
    model, pre = _trained(table, schema)
    graph = build_onnx(model, pre, opset=17).SerializeToString()
    rows = table.iloc[400:]
    wrong = predict_proba(model, pre, rows)
    wrong[0] = wrong[0][::-1]
    with pytest.raises(ExportError, match="ONNX and PyTorch disagree"):
        verify(graph, wrong, rows, pre, tolerance=1e-4)


def test_numeric_only_and_categorical_only_models_export(table, schema):

    for kept in (("x", "noise"), ("colour",)):
        features = tuple(f for f in schema.features if f.name in kept)
        sub = type(schema)(schema.target, features, schema.time_column, schema.classes)
        model, pre = _trained(table, sub, {**NETWORKS["mlp"], "categorical_encoding": "onehot"})
        rows = table.iloc[400:]
        report = verify(build_onnx(model, pre, 17).SerializeToString(), predict_proba(model, pre, rows), rows, pre, 1e-5)
        assert report["label_mismatches"] == 0


def test_output_name_clash_is_refused(table, schema):
    from pipeline.kinds.tabular.schema import Feature

    renamed = table.rename(columns={"noise": "label_"}).rename(columns={"x": "probabilities"})
    features = (Feature("probabilities", "numeric"), Feature("colour", "categorical"))
    sub = type(schema)(schema.target, features, schema.time_column, schema.classes)
    model, pre = _trained(renamed, sub)
    with pytest.raises(ExportError, match="probabilities"):
        build_onnx(model, pre, 17)
