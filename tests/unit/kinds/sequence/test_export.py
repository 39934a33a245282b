"""Sequence export (pipeline/kinds/sequence/export.py): every architecture exports with parity in raw units."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ExportError
from pipeline.engine import fit
from pipeline.kinds.sequence.encoder import SequenceEncoder
from pipeline.kinds.sequence.evaluate import predict
from pipeline.kinds.sequence.export import build_sequence_onnx, verify_sequence
from pipeline.kinds.sequence.train import prepare
from pipeline.kinds.sequence.windows import read_split_windows
from pipeline.lifecycle.gate import parity_passed
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
