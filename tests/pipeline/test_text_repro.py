"""The real ``dvc repro`` of the text kind (tweets by device, a small Transformer) on a slice, in a temporary
copy of the repo.

The params are the documented example (``examples/tweets/params.yaml``) with a slice: 1,500 tweets up to
2016, a one-layer Transformer (the example's bi-LSTM is exported and checked in the unit tests), two epochs. Ends in a verified ONNX model that takes raw strings and that
the gate scores with onnxruntime alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import copy_repo, edit_params
from tests.pipeline.test_dvc_repro import STAGES, ran_stages, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("evergreen-text"))
    shutil.copy(root / "examples/tweets/params.yaml", root / "params.yaml")
    edit_params(
        root,
        ingest={"max_rows": 1500, "min_rows": 100},
        features={"max_length": 32},
        train={
            "epochs": 2,
            "warmup_epochs": 0,
            "model": {"architecture": "text_transformer", "d_model": 16, "layers": 1, "heads": 2},
        },
        evaluate={"baseline_max_iter": 50},
    )
    return root


def test_text_repro_exports_a_verified_model_of_raw_strings(workspace):
    assert ran_stages(run(workspace, "dvc", "repro")) == STAGES

    parity = json.loads((workspace / "reports/export/parity.json").read_text())
    assert parity["label_mismatches"] == 0 and parity["max_abs_probability_diff"] <= 1e-4 and parity["rows"] > 100
    model = onnx.load(workspace / "models/model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["text"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert {"Tokenizer", "StringNormalizer", "LabelEncoder"} <= {node.op_type for node in model.graph.node}
    card = json.loads((workspace / "models/model_card.json").read_text())
    assert card["kind"] == "text" and card["target"] == "source" and card["inputs"][0]["tokenisation"]["max_length"] == 32
    assert card["classes"] == ["Twitter Web Client", "Twitter for Android", "Twitter for iPhone", "other"]

    # the tokeniser: fitted on the training split's texts only, saved as JSON
    tokenizer = json.loads((workspace / "models/preprocessor.json").read_text())
    assert tokenizer["kind"] == "text" and len(tokenizer["vocab"]) > 100
    split = json.loads((workspace / "reports/split/summary.json").read_text())
    assert (
        split["splits"]["test"]["rows"] == json.loads((workspace / "reports/evaluate/metrics.json").read_text())["test_rows"]
    )

    metrics = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(metrics["baseline_tfidf_logreg"]) and "baseline_majority" in metrics
    # tweets after the cutoff were held back: they are the later years that land as drift
    ingest = json.loads((workspace / "reports/ingest/profile.json").read_text())
    assert ingest["time_range"][1] <= "2016-12-31 23:59:59"


def test_the_gate_scores_the_text_model_with_onnxruntime(workspace):
    from pipeline.kinds import score_test
    from pipeline.lifecycle.gate import baseline_key, decide, parity_passed, trained_baseline
    from pipeline.params import load_params

    params = load_params(workspace / "params.yaml")
    paths = params.paths
    scores = score_test(workspace / paths.onnx, workspace / paths.model_card, workspace / paths.split)
    metrics = json.loads((workspace / paths.eval_metrics).read_text())
    assert np.isclose(scores["macro_f1"], metrics["model"]["macro_f1"]) and scores["rows"] == metrics["test_rows"]
    parity = json.loads((workspace / paths.export_report).read_text())
    metric = params.gate.metric
    decision = decide(
        scores[metric],
        None,
        metrics[baseline_key(metric)][metric],
        parity_passed(parity, params.export.tolerance),
        params.gate,
        trained_baseline(metrics, metric),
    )
    # the gate weighs the model against the majority class and against TF-IDF + logistic regression
    assert decision.metric == "macro_f1" and decision.baseline == metrics["baseline_majority"]["macro_f1"]
    assert decision.trained_baseline_name == "tfidf-logreg"
    assert decision.trained_baseline == metrics["baseline_tfidf_logreg"]["macro_f1"]
