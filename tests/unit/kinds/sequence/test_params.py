"""The sequence params (the sequence variants of ingest, clean and augment, the sequence networks) and the example params file."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipeline.core.errors import ParamsError
from pipeline.params import SequenceParams, load_params, parse_params
from tests.conftest import REPO
from tests.unit.kinds.sequence.conftest import elecdemand_raw


def test_params_errors_name_the_key():
    def parse(**sections):
        data = copy.deepcopy(elecdemand_raw())
        for name, values in sections.items():
            data[name] = {**data[name], **values}
        return parse_params(data)

    without_time = copy.deepcopy(elecdemand_raw())
    del without_time["ingest"]["time_column"]
    with pytest.raises(ParamsError, match=r"ingest\.time_column: required key is missing"):
        parse_params(without_time)
    with pytest.raises(ParamsError, match=r"ingest\.categorical: unknown key; allowed: .*lookback"):
        parse(ingest={"categorical": ["occ10"]})
    with pytest.raises(ParamsError, match=r"ingest\.lookback = 1: Input should be greater than or equal to 2"):
        parse(ingest={"lookback": 1})
    with pytest.raises(ParamsError, match=r"ingest\.task = 'regress'"):
        parse(ingest={"task": "regress"})
    with pytest.raises(ParamsError, match=r"augment\.jitter\.sigma: unknown key; allowed: enabled, std"):
        parse(augment={"jitter": {"sigma": 1}})
    with pytest.raises(ParamsError, match=r"clean\.impute = 'mean'"):
        parse(clean={"impute": "mean"})
    with pytest.raises(ParamsError, match=r"train\.model\.d_model \(30\) must be a multiple of heads \(4\)"):
        parse(train={"model": {"architecture": "seq_transformer", "d_model": 30}})
    with pytest.raises(
        ParamsError,
        match=r"train\.model\.architecture = 'mlp' does not fit ingest\.kind 'sequence'; choose lstm or gru or seq_transformer",
    ):
        parse(train={"model": {"architecture": "mlp"}})
    with pytest.raises(
        ParamsError, match=r"split\.method 'stratified' does not apply to ingest\.kind 'sequence'; choose time or group"
    ):
        parse(split={"method": "stratified"})


def test_the_example_params_are_a_sequence_run_sharing_the_committed_files_and_services():
    """examples/elecdemand/params.yaml is a whole params file: it loads as a sequence run, and its paths
    and the sections every kind shares are the committed params.yaml's (so they cannot drift unnoticed)."""
    example = load_params(REPO / "examples/elecdemand/params.yaml")
    committed = load_params(REPO / "params.yaml")
    assert isinstance(example, SequenceParams)
    assert example.train.model.architecture == "lstm" and example.gate.metric == "mae"
    assert example.train.early_stopping.metric == "val_mae" and example.split.method == "time"
    assert example.paths == committed.paths
    for section in ("evaluate", "export", "monitor", "serve"):
        assert getattr(example, section) == getattr(committed, section), section
    assert (
        yaml.safe_load((REPO / "examples/elecdemand/params.yaml").read_text()).keys()
        == yaml.safe_load((REPO / "params.yaml").read_text()).keys()
    )
