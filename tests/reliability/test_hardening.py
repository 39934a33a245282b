"""Issue 9's cases, reproduced: each bad input or fault ends in one line naming the problem, never in a
silently wrong model. (More cases join this suite as the rest of issue 9 lands.)"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
import yaml

from pipeline.core.errors import DataError, ParamsError, TrainError
from pipeline.engine import Tensors, fit
from pipeline.engine.callbacks import is_improvement
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.train import tabular_config
from pipeline.lifecycle.landing import land_frame
from pipeline.models import load_model
from pipeline.params import TabularFeatures, TrainParams, load_params, parse_params
from pipeline.shared.tables import read_table_file


@pytest.fixture
def raw():
    return yaml.safe_load(open("params.yaml"))


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_learning_rate_is_refused_naming_the_key(tmp_path, value):
    text = open("params.yaml").read().replace("  lr: 0.002", f"  lr: {value}", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"train\.lr = (-?inf|nan): must be a finite number"):
        load_params(tmp_path / "params.yaml")


def test_a_yaml_syntax_error_names_the_line_and_column(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 42\ningest:\n  kind: [tabular\n")
    with pytest.raises(ParamsError, match=r"not valid YAML at line \d+, column \d+"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    ("section", "key", "url"),
    [
        ("serve", "database_url", "postgresql://evergreen:secret@127.0.0.1:5432/log"),
        ("tune", "storage", "postgresql+psycopg://tuner:secret@127.0.0.1/optuna"),
    ],
)
def test_a_database_url_with_a_password_is_refused(raw, section, key, url):
    bad = copy.deepcopy(raw)
    bad[section][key] = url
    with pytest.raises(ParamsError, match=rf"{section}\.{key} = .*holds a password; set the URL in \$EVERGREEN_"):
        parse_params(bad)
    bad[section][key] = url.replace(":secret", "")  # a user name alone is fine
    parse_params(bad)


def test_a_nan_epoch_is_never_the_best_one():
    assert not is_improvement(math.nan, math.nan, "val_loss", 0.0)
    assert not is_improvement(math.inf, 1.0, "val_loss", 0.0)
    assert not is_improvement(math.nan, 0.5, "val_accuracy", 0.0)
    assert is_improvement(0.9, math.nan, "val_loss", 0.0)  # the first finite epoch is


def test_a_diverging_run_stops_with_one_line_instead_of_saving_nan(table, schema):
    pre = Preprocessor.fit(table.iloc[:480], schema, TabularFeatures())
    train, val = Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)
    poisoned = Tensors((train.inputs[0].clone(), *train.inputs[1:]), train.y)
    poisoned.inputs[0][0, 0] = math.inf  # one impossible value reaching the network makes the loss NaN
    cfg = TrainParams.model_validate({"model": {"architecture": "mlp", "hidden": (8,)}, "epochs": 3, "warmup_epochs": 0})
    with pytest.raises(TrainError, match=r"epoch 0: train_loss = nan.*the training diverged; lower train\.lr"):
        fit(poisoned, val, tabular_config(pre, cfg), cfg, seed=0, task="classification")


def test_duplicate_csv_headers_are_refused_naming_the_column(tmp_path):
    path = tmp_path / "batch.csv"
    path.write_text("age,income,age\n30,100,31\n40,200,41\n")
    with pytest.raises(DataError, match=r"batch\.csv: the header names column\(s\) \['age'\] more than once"):
        read_table_file(path)


@pytest.mark.parametrize("name", ["../outside", "/tmp/elsewhere", "sub/dir", ".hidden", ""])
def test_a_landed_batch_name_is_a_plain_file_name(tmp_path, name):
    landing = tmp_path / "landing"
    with pytest.raises(DataError, match="give a plain file name"):
        land_frame(pd.DataFrame({"a": [1]}), landing, name)
    assert not (tmp_path / "outside.parquet").exists()


def test_a_run_that_diverges_to_finite_but_absurd_losses_stops_with_one_line(table, schema):
    """train.lr: 1e6 kept the losses finite (val_loss 3e30) and every stage exited 0; now the run stops."""
    pre = Preprocessor.fit(table.iloc[:480], schema, TabularFeatures())
    train, val = Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)
    cfg = TrainParams.model_validate(
        {"model": {"architecture": "mlp", "hidden": (8,)}, "epochs": 3, "warmup_epochs": 0, "lr": 1e6, "grad_clip": None}
    )
    with pytest.raises(TrainError, match=r"epoch \d: val_loss = .* over train\.divergence_factor = 10 times the untrained"):
        fit(train, val, tabular_config(pre, cfg), cfg, seed=0, task="classification")


def test_evaluate_and_export_refuse_a_model_whose_weights_are_nan(tmp_path, table, schema):
    pre = Preprocessor.fit(table.iloc[:480], schema, TabularFeatures())
    cfg = TrainParams.model_validate({"model": {"architecture": "mlp", "hidden": (8,)}, "epochs": 1, "warmup_epochs": 0})
    train, val = Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)
    model, best, _ = fit(train, val, tabular_config(pre, cfg), cfg, seed=0, task="classification")
    best["model_state"] = {
        k: v.clone().fill_(math.nan) if v.is_floating_point() else v for k, v in best["model_state"].items()
    }
    torch.save(best, tmp_path / "model.pt")
    with pytest.raises(DataError, match=r"model\.pt: weight\(s\) .* hold NaN or infinity \(a diverged training\)"):
        load_model(tmp_path / "model.pt")  # what evaluate and export load the model with
