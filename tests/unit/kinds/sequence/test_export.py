"""Sequence export (pipeline/kinds/sequence/export.py): every architecture exports with parity in raw units, and
gets an int8 twin where onnxruntime quantises its cells and it comes out smaller, measured on the test windows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ExportError
from pipeline.core.io import INT8_FILE
from pipeline.engine import fit
from pipeline.kinds.sequence.encoder import SequenceEncoder
from pipeline.kinds.sequence.evaluate import predict
from pipeline.kinds.sequence.export import build_sequence_onnx, int8_twin, verify_sequence
from pipeline.kinds.sequence.train import prepare
from pipeline.kinds.sequence.windows import read_split_windows
from pipeline.lifecycle.gate import parity_passed
from pipeline.onnxio.card import Int8Report
from pipeline.onnxio.session import ort_session
from pipeline.params import TrainParams
from tests.unit.kinds.sequence.conftest import QUICK, stage_data

# Small models train fastest on one thread, and a busy machine's other processes cannot slow them.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETWORKS = {
    "lstm": {"architecture": "lstm", "hidden": 16},
    "gru": {"architecture": "gru", "hidden": 16},
    "seq_transformer": {"architecture": "seq_transformer", "d_model": 16, "heads": 2, "layers": 1},
}


@pytest.mark.parametrize("architecture", ["lstm", "gru", "seq_transformer"])
def test_each_architecture_trains_and_exports_with_parity_in_raw_units(tmp_path, architecture):
    params = stage_data(tmp_path, rows=700)
    cfg = TrainParams.model_validate({**QUICK, "model": NETWORKS[architecture]})
    prepared = prepare(params.features, cfg, params.paths)
    model, _, history = fit(prepared.train, prepared.val, prepared.config, cfg, seed=0, task=prepared.task)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]

    encoder = SequenceEncoder.from_dict(prepared.encoder)
    windows = read_split_windows(params.paths.split, "test", encoder.schema)
    graph = build_sequence_onnx(model, encoder, opset=17)
    (window,) = graph.graph.input
    assert window.name == "window" and [o.name for o in graph.graph.output] == ["forecast"]
    assert [d.dim_param or d.dim_value for d in window.type.tensor_type.shape.dim] == ["N", 24, 3]
    expected = predict(model, encoder, windows.x)  # raw units: GW
    report = verify_sequence(graph.SerializeToString(), expected, windows.x, encoder, tolerance=1e-4)
    assert report["max_scaled_diff"] <= 1e-4 and parity_passed(report, 1e-4)
    assert 2 < expected.mean() < 10  # forecasts come out in GW, not in normalised units

    session = ort_session(graph.SerializeToString())
    for rows in (1, 7):  # the batch axis is dynamic (the recurrent exporter warns about it; this checks it)
        (forecast,) = session.run(None, {"window": windows.x[:rows]})
        np.testing.assert_allclose(forecast, expected[:rows], atol=1e-4 * encoder.target_std)
    with pytest.raises(ExportError, match="ONNX and PyTorch disagree on the test windows"):
        verify_sequence(graph.SerializeToString(), expected + 0.01, windows.x, encoder, tolerance=1e-4)

    # The int8 twin: onnxruntime quantises LSTM cells and the attention and linear layers, not GRU cells.
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(graph.SerializeToString())
    measured, kept, note = int8_twin(fp32, tmp_path / "int8", windows, encoder)
    assert set(measured) == {"bytes", "fp32_bytes", "mae", "fp32_mae", "max_abs_diff"}
    assert measured["fp32_mae"] == pytest.approx(float(np.abs(expected - windows.y).mean()), rel=1e-4)
    assert kept is (architecture == "lstm") and (tmp_path / "int8" / INT8_FILE).exists() is kept
    if architecture == "lstm":  # 8,889 -> about 7,900 bytes, the MAE within a few hundredths of a percent
        assert measured["bytes"] < measured["fp32_bytes"] and note.startswith("dynamic int8 (onnxruntime)")
        assert abs(Int8Report(**measured).accuracy_loss) < 0.005
    elif architecture == "gru":
        assert note.startswith("not produced: onnxruntime's dynamic quantisation has no int8 GRU cell (measured: ")
    else:  # 16-wide attention: the quantiser's scales and casts outweigh the int8 weights (64-wide ones halve)
        assert note.startswith("not produced: dynamic quantisation does not make this model smaller")
