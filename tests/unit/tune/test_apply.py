"""pipeline.tune apply: the best values into params.yaml line by line, comments kept; network keys
(``model.<key>``) into the nested ``train.model``; the result still valid params."""

from __future__ import annotations

import pytest
import yaml

from pipeline import tune
from pipeline.core.errors import DataError, ParamsError
from pipeline.params import load_params, parse_params
from tests.conftest import REPO

BEST = {"lr": 0.0031234, "batch_size": 256, "model.hidden": [128, 64], "model.dropout": 0.25, "weight_decay": 1.5e-05}


def write_best(path, train: dict, **fields) -> None:
    path.write_text(yaml.safe_dump({"study": "s", "trial": 3, "metric": "val_loss", "value": 0.8, **fields, "train": train}))


def test_apply_rewrites_train_values_and_keeps_everything_else(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    params_file.write_text(original)
    write_best(tmp_path / "best_params.yaml", BEST, architecture="mlp")

    tune.main(["--params", str(params_file), "apply", "--best", str(tmp_path / "best_params.yaml")])

    rewritten = params_file.read_text()
    before, after = original.splitlines(), rewritten.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == len(BEST)
    for old_line, new_line in changed:
        key = old_line.split(":")[0].strip()
        indent = "    " if f"model.{key}" in BEST else "  "  # the network's keys inside train.model
        assert (f"model.{key}" in BEST or key in BEST) and new_line.startswith(f"{indent}{key}: ")
        if "#" in old_line:  # the comment is kept, in its column when the value fits
            assert new_line[new_line.index("#") :] == old_line[old_line.index("#") :]
    assert "  weight_decay: 1.5e-05    # L2" in after  # the comment stays in its column
    raw = yaml.safe_load(rewritten)
    expected = yaml.safe_load(original)
    expected["train"].update({key: value for key, value in BEST.items() if "." not in key})
    expected["train"]["model"].update(hidden=[128, 64], dropout=0.25)
    assert raw == expected  # nothing else moved
    params = parse_params(raw)
    assert params.train.model.hidden == (128, 64) and params.train.model.dropout == 0.25 and params.train.lr == 0.0031234
    out = capsys.readouterr().out
    assert "train.batch_size: 512 -> 256" in out and "train.model.hidden: [256, 128] -> [128, 64]" in out


def test_a_network_key_the_file_does_not_set_is_added_to_train_model():
    text = (
        "train:\n  model:                # the network\n    architecture: lstm\n    hidden: 64\n"
        "    # seq_transformer: d_model 64\n  lr: 0.1   # rate\nevaluate:\n  batch_size: 3"
    )

    rewritten = tune.rewrite_train_values(text, {"model.layers": 2, "model.hidden": 128, "lr": 0.01, "grad_clip": 1.0})

    assert rewritten == (
        "train:\n  model:                # the network\n    architecture: lstm\n    hidden: 128\n    layers: 2\n"
        "    # seq_transformer: d_model 64\n  lr: 0.01  # rate\n  grad_clip: 1.0\nevaluate:\n  batch_size: 3"
    )
    # train.model last in the section: a key added to each lands in its own block.
    text = "train:\n  lr: 0.1\n  model:\n    architecture: lstm\n    hidden:\n    - 8\nevaluate:\n  x: 1\n"
    assert tune.rewrite_train_values(text, {"grad_clip": 1.0, "model.layers": 2, "model.hidden": 16}) == (
        "train:\n  lr: 0.1\n  model:\n    architecture: lstm\n    hidden: 16\n    layers: 2\n  grad_clip: 1.0\nevaluate:\n  x: 1\n"
    )


def test_apply_refuses_a_key_it_cannot_find_on_its_own_line():
    text = 'seed: 1\ntrain:\n  lr: 0.1   # rate\n  "batch_size": 8\n  model: {architecture: lstm, hidden: 8}\nevaluate:\n  batch_size: 3\n'

    with pytest.raises(ParamsError) as info:
        tune.rewrite_train_values(text, {"batch_size": 64})
    message = str(info.value)
    assert "no line '  batch_size: <value>' in train" in message and "train.batch_size: 64" in message and "\n" not in message
    with pytest.raises(ParamsError) as info:
        tune.rewrite_train_values(text, {"model.hidden": 16})
    assert "no 'model:' block in the train section; set train.model.hidden: 16 by hand" in str(info.value)
    # Another section's key of the same name is left alone; a float keeps its YAML float form.
    rewritten = tune.rewrite_train_values(text, {"lr": 1e-05})
    assert "  lr: 1.0e-05 # rate\n" in rewritten and rewritten.endswith("evaluate:\n  batch_size: 3\n")
    assert yaml.safe_load(rewritten)["train"]["lr"] == 1e-05


def test_apply_rewrites_the_block_lists_dvc_exp_writes():
    """``dvc exp run -S`` / ``dvc exp apply`` rewrite params.yaml with lists one item a line and
    null as an empty value: apply turns those into one-line values and keeps the rest."""
    text = (
        "train:\n  model:\n    architecture: mlp\n    hidden:\n    - 256\n    - 128\n    dropout: 0.2\n"
        "    embedding_dim:           # null: automatic\n  early_stopping:\n    metric: val_loss\nevaluate:\n  bins: 3\n"
    )

    rewritten = tune.rewrite_train_values(text, {"model.hidden": [64], "model.embedding_dim": 8})

    assert rewritten == (
        "train:\n  model:\n    architecture: mlp\n    hidden: [64]\n    dropout: 0.2\n"
        "    embedding_dim: 8         # null: automatic\n  early_stopping:\n    metric: val_loss\nevaluate:\n  bins: 3\n"
    )


def test_apply_writes_network_keys_into_an_example_and_it_still_loads(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "examples/elecdemand/params.yaml").read_text())
    write_best(tmp_path / "best.yaml", {"model.hidden": 128, "model.layers": 2, "lr": 0.001}, architecture="lstm")

    changes = tune.apply(params_file, tmp_path / "best.yaml")

    assert changes == {"model.hidden": (64, 128), "model.layers": (1, 2), "lr": (0.005, 0.001)}
    params = load_params(params_file)
    assert (params.train.model.architecture, params.train.model.hidden, params.train.model.layers) == ("lstm", 128, 2)
    assert "    hidden: 128\n" in params_file.read_text()


def test_apply_refuses_values_tuned_for_another_network_or_invalid_ones(tmp_path):
    params_file = tmp_path / "params.yaml"
    original = (REPO / "examples/elecdemand/params.yaml").read_text()
    params_file.write_text(original)

    write_best(tmp_path / "best.yaml", {"model.hidden": 128}, architecture="gru")
    with pytest.raises(ParamsError) as info:
        tune.apply(params_file, tmp_path / "best.yaml")
    assert "tuned for train.model.architecture 'gru'" in str(info.value) and "trains 'lstm'" in str(info.value)

    write_best(tmp_path / "best.yaml", {"model.hidden": 0}, architecture="lstm")
    with pytest.raises(ParamsError) as info:
        tune.apply(params_file, tmp_path / "best.yaml")
    assert "train.model.hidden" in str(info.value)
    assert params_file.read_text() == original  # nothing written


def test_apply_without_a_search_names_the_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(DataError) as info:
        tune.apply(tmp_path / "params.yaml", tmp_path / "reports/tune/best_params.yaml")
    assert "best_params.yaml: file not found" in str(info.value)
