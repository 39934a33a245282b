from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pipeline import kinds
from pipeline.kinds.tabular.runtime import as_model_inputs
from pipeline.lifecycle.monitoring import (
    GroupDrift,
    GroupReport,
    LandingSource,
    decide_retrain,
    drift_columns,
    drifted_groups,
    idempotency_key,
    label_column,
    last_retrain,
)
from pipeline.onnxio.card import CategoricalInput, NumericInput, SequenceCard, TabularCard, parse_card
from pipeline.params import MonitorParams
from tests.conftest import make_params
from tests.unit.onnxio.fixtures import old_card_data, old_card_path

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CFG = MonitorParams(drift_share=0.5, min_rows=100, accuracy_tolerance=0.05, cooldown_hours=24)


def decision(**overrides):
    args = dict(
        drifted_share=0.6,
        current_rows=1000,
        accuracy=None,
        reference_accuracy=0.7,
        key="k1",
        triggered_keys=set(),
        last_retrain_at=None,
        retrain_running=False,
        now=NOW,
        cfg=CFG,
    )
    args.update(overrides)
    return decide_retrain(**args)


def test_drift_share_at_the_threshold_triggers():
    assert decision(drifted_share=0.5).retrain
    assert not decision(drifted_share=0.49).retrain


def test_tiny_batches_never_trigger():
    result = decision(current_rows=99, drifted_share=1.0)
    assert not result.retrain and "monitor.min_rows" in result.reasons[0]


def test_accuracy_drop_on_labelled_data_triggers_without_drift():
    assert decision(drifted_share=0.0, accuracy=0.64).retrain  # 0.64 < 0.70 - 0.05
    assert not decision(drifted_share=0.0, accuracy=0.66).retrain


def test_cooldown_after_a_retrain():
    recent = decision(last_retrain_at=NOW - timedelta(hours=23))
    assert not recent.retrain and recent.blocked_by.startswith("cooldown")
    assert decision(last_retrain_at=NOW - timedelta(hours=25)).retrain


def test_the_last_retrain_is_the_later_of_the_state_and_the_shared_registry_history():
    history = [
        {"event": "register", "version": "v0001", "time": "2026-11-25T09:00:00.000+00:00"},
        {"event": "promote", "version": "v0001", "time": "2026-11-25T09:30:00.000+00:00"},  # not a retrain's end
        {"event": "unchanged", "version": "v0001", "time": "2026-11-25T10:00:00.123456+00:00"},  # a worker elsewhere
        {"event": "rejected", "version": "v0002", "time": "not a time"},  # hand-edited: ignored
    ]
    assert last_retrain(None, history) == datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    assert last_retrain("2026-11-25T11:00:00+00:00", history) == datetime(2026, 11, 25, 11, tzinfo=UTC)
    assert last_retrain(None, history[1:2]) is None
    assert not decision(last_retrain_at=last_retrain(None, history)).retrain  # 2 h ago: cooldown


def test_no_trigger_while_a_retrain_runs():
    result = decision(retrain_running=True)
    assert not result.retrain and result.blocked_by == "a retrain is running"


def test_same_data_never_triggers_twice():
    key = idempotency_key(["b", "a"])
    assert key == idempotency_key(["a", "b"]) != idempotency_key(["a", "c"])
    result = decision(key=key, triggered_keys={key})
    assert not result.retrain and "already triggered" in result.blocked_by


def test_landing_source_returns_only_unseen_batches(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "b1.csv", index=False)
    pd.DataFrame({"a": [3]}).to_parquet(tmp_path / "b2.parquet")
    (tmp_path / ".b3.parquet.4242-0a1b2c3d.tmp").write_bytes(b"half-written")  # atomic_path's temporary
    source = LandingSource(tmp_path)
    first = source.pending(set())
    assert first.sources == ("b1.csv", "b2.parquet") and len(first.frame) == 3
    again = source.pending(set(first.keys))
    assert again.empty and again.frame.empty


def test_landing_source_never_follows_a_link_and_leaves_an_unreadable_batch_pending(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    pd.DataFrame({"a": [1, 2]}).to_csv(landing / "b1.csv", index=False)
    pd.DataFrame({"a": [9]}).to_csv(tmp_path / "outside.csv", index=False)
    (landing / "link.csv").symlink_to(tmp_path / "outside.csv")
    (landing / "corrupt.parquet").write_bytes(b"\x00garbage")  # landed after the screening ran
    current = LandingSource(landing).pending(set())
    assert current.sources == ("b1.csv",) and current.frame["a"].tolist() == [1, 2]
    assert len(current.keys) == 1  # the corrupt batch has no key: still pending for the next screening


def test_model_inputs_are_typed_like_training():
    inputs = [NumericInput.of("n"), CategoricalInput.of("c", ("441",))]
    frame = pd.DataFrame({"n": ["1.5", "x"], "c": [441.0, None], "other": [1, 2]})
    out = as_model_inputs(frame, inputs)
    assert list(out.columns) == ["n", "c"]
    assert out["n"].iloc[0] == pytest.approx(1.5) and pd.isna(out["n"].iloc[1])
    assert out["c"].iloc[0] == "441" and pd.isna(out["c"].iloc[1])


def test_the_drift_frame_tells_numbers_from_categories_as_the_card_does(raw_params, tmp_path):
    card = TabularCard.load(old_card_path("tabular"))
    frame = pd.DataFrame({name: ["1", None, "x"] for name in card.input_names})  # text everywhere: typed by the card
    drifting = kinds.get("tabular").runtime.drift_frame(frame, card, make_params(raw_params, tmp_path))
    assert list(drifting.columns) == list(card.input_names)
    assert drift_columns(drifting) == (list(card.numeric_names), list(card.categorical_names))


def groups_report(*groups: GroupDrift) -> GroupReport:
    return GroupReport("series", groups, small=0, over_limit=0)


def test_a_series_that_drifts_on_its_own_counts_as_drift_and_a_new_one_does_not():
    report = groups_report(
        GroupDrift("a", 900, 1200, "checked", 2 / 3, ("Demand", "Temperature")),
        GroupDrift("b", 800, 1200, "checked", 0.5, ("Demand",)),  # at the threshold
        GroupDrift("c", 700, 1200, "checked", 1 / 3, ("Temperature",)),
        GroupDrift("thin", 650, 100, "few_reference_rows"),
        GroupDrift("new", 600, 0, "new"),
        GroupDrift("empty", 600, 1200, "not_compared", note="no column to compare"),
    )
    assert drifted_groups(report, drift_share=0.5) == ("a", "b")
    assert drifted_groups(report, drift_share=0.6) == ("a",)
    assert drifted_groups(None, drift_share=0.5) == ()  # a kind without groups, or one series


def test_drifted_series_ask_for_a_retrain_when_the_pooled_columns_do_not():
    result = decision(drifted_share=0.0, drifted_groups=("a", "b"), group_column="series")
    assert result.retrain and result.reasons == (
        "2 series group(s) drifted on their own, each at least 50% of columns: 'a', 'b'",
    )
    assert result.signals["drifted_groups"] == ["a", "b"]
    many = decision(drifted_share=0.0, drifted_groups=tuple("abcdefg"), group_column="series")
    assert many.reasons[0].endswith("'a', 'b', 'c', 'd', 'e', ...")
    assert not decision(drifted_share=0.0).retrain
    blocked = decision(drifted_share=0.0, drifted_groups=("a",), retrain_running=True)
    assert not blocked.retrain and blocked.blocked_by == "a retrain is running"
    tiny = decision(current_rows=99, drifted_share=0.0, drifted_groups=("a",))
    assert not tiny.retrain and tiny.blocked_by == "waiting for more rows"


def test_the_group_report_is_plain_json_and_a_markdown_table():
    report = GroupReport(
        "se|ries", (GroupDrift("a|b", 900, 1200, "checked", 0.5, ("x",)), GroupDrift("n", 600, 0, "new")), 3, 1
    )
    data = report.to_dict()
    assert data["column"] == "se|ries" and (data["small_groups"], data["groups_over_limit"]) == (3, 1)
    assert data["groups"][1] == {
        "group": "n",
        "current_rows": 600,
        "reference_rows": 0,
        "status": "new",
        "drifted_share": None,
        "drifted_columns": (),
        "note": None,
    }
    lines = report.markdown_table().splitlines()
    assert lines[0].startswith("| se\\|ries | new rows |") and lines[2] == "| a\\|b | 900 | 1200 | checked | 50% | x |"
    assert lines[-1] == "Not checked: 3 with too few new rows; 1 past monitor.max_groups."


def test_late_labels_go_into_the_target_unless_the_model_reads_the_target_as_an_input():
    assert label_column(TabularCard.load(old_card_path("tabular"))) == TabularCard.load(old_card_path("tabular")).target
    forecaster = SequenceCard.load(old_card_path("sequence"))
    assert forecaster.target in forecaster.features and label_column(forecaster) is None  # actuals are later steps
    classifier = parse_card({**old_card_data("sequence"), "sequence_task": "classify", "target": "kind"})
    assert label_column(classifier) == "kind"  # a window's class is its label


def test_max_groups_is_validated_with_its_name():
    assert MonitorParams().max_groups == 20 and MonitorParams(max_groups=0).max_groups == 0
    with pytest.raises(ValueError, match="max_groups"):
        MonitorParams(max_groups=-1)
