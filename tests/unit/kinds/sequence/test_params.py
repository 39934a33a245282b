"""The sequence params (ingest.sequence, clean.sequence, augment.sequence, the sequence networks) and the example params file."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipeline.core.errors import ParamsError
from pipeline.params import parse_params
from tests.conftest import REPO
from tests.unit.kinds.sequence.conftest import SEQUENCE_INGEST


def test_params_errors_name_the_key(raw_params):
    def parse(**sections):
        data = copy.deepcopy(raw_params)
        for name, values in sections.items():
            data[name] = {**data[name], **values}
        return parse_params(data)

    with pytest.raises(ParamsError, match="ingest.time_column is required for ingest.kind 'sequence'"):
        parse(ingest={**SEQUENCE_INGEST, "time_column": None})
    with pytest.raises(ParamsError, match="ingest.categorical applies to tabular data only"):
        parse(ingest={**SEQUENCE_INGEST, "categorical": ["occ10"]})
    with pytest.raises(ParamsError, match=r"ingest.sequence.lookback = 1: Input should be greater than or equal to 2"):
        parse(ingest={**SEQUENCE_INGEST, "sequence": {"lookback": 1}})
    with pytest.raises(ParamsError, match=r"ingest.sequence.task = 'regress'"):
        parse(ingest={**SEQUENCE_INGEST, "sequence": {"task": "regress"}})
    with pytest.raises(ParamsError, match=r"augment.sequence.jitter.sigma: unknown key; allowed: enabled, std"):
        parse(augment={"sequence": {"jitter": {"sigma": 1}}})
    with pytest.raises(ParamsError, match=r"clean.sequence.impute = 'mean'"):
        parse(clean={"sequence": {"impute": "mean"}})
    with pytest.raises(ParamsError, match=r"train.seq_transformer.d_model \(30\) must be a multiple of heads \(4\)"):
        parse(train={"seq_transformer": {"d_model": 30}})


def test_the_example_params_switch_only_what_a_sequence_run_needs():
    """examples/elecdemand/params.yaml is a whole params file: it loads, and outside ingest, clean, train
    and gate it is the committed params.yaml (so it cannot drift from it unnoticed)."""
    example = yaml.safe_load((REPO / "examples/elecdemand/params.yaml").read_text())
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(example)
    assert params.ingest.kind == "sequence" and params.train.architecture == "lstm" and params.gate.metric == "mae"
    assert params.train.early_stopping.metric == "val_mae"
    assert {k for k in committed if committed[k] != example[k]} == {"ingest", "clean", "train", "gate"}
