"""Landing and drift for text: landed tables of texts screened and bad ones quarantined with a reason, ingest
stacking labelled batches whole after the source's cutoff, the drift frame (lengths, the share of tokens unseen
in training, the predicted class from the log or the model), the production model scored on labelled rows, and
a real Evidently check on real tweets: the 2017 tweets drift from the training era's, a held-out sample of the
training era does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.core.io import read_json
from pipeline.kinds.base import LOGGED_LABEL, PREDICTED
from pipeline.kinds.text import drift, ingest
from pipeline.kinds.text.data import read_dataset
from pipeline.kinds.text.export import build_text_onnx
from pipeline.kinds.text.tokenizer import TextTokenizer, split_tokens
from pipeline.lifecycle.drift import detect_drift
from pipeline.lifecycle.landing import REASON_SUFFIX, land_frame, screen_landed
from pipeline.lifecycle.monitoring import LandingSource, drift_columns
from pipeline.models import TextLSTMConfig, build_model
from pipeline.onnxio.card import parse_card
from pipeline.params import TextParams
from pipeline.shared.metrics import label_scores
from tests.conftest import make_params
from tests.unit.kinds.text.fixtures import EXAMPLE, TextModel, raw_tweets, train_text_model, tweets
from tests.unit.onnxio.fixtures import old_card_data

RUNTIME = kinds.get("text").runtime
CUTOFF = pd.Timestamp("2016-12-31 23:59:59")  # the example's ingest.time_cutoff


def before_cutoff(raw: pd.DataFrame) -> pd.Series:
    """Which raw tweets were sent up to the cutoff (their times are UTC: "2016-12-31T23:59:59Z")."""
    return pd.to_datetime(raw["created_at"]).dt.tz_convert("UTC").dt.tz_localize(None) <= CUTOFF


def text_params(tmp_path: Path, **ingest_keys) -> TextParams:
    """The tweets example with its paths under ``tmp_path`` and, as its source, 300 real tweets (every column)
    of the training era."""
    source = tmp_path / "raw" / "tweets.csv"
    source.parent.mkdir(parents=True)
    raw = raw_tweets()
    raw.loc[before_cutoff(raw)].head(300).to_csv(source, index=False)
    example = yaml.safe_load(EXAMPLE.read_text())
    params = make_params(example, tmp_path, ingest={"source": str(source), "min_rows": 10, **ingest_keys})
    assert isinstance(params, TextParams)
    return params


def later_tweets(rows: int) -> pd.DataFrame:
    """Real tweets sent after the cutoff, with every column of the source."""
    raw = raw_tweets()
    return raw.loc[~before_cutoff(raw)].head(rows).reset_index(drop=True)


def reasons(params) -> dict[str, str]:
    folder = Path(params.paths.quarantine)
    return {p.name.removesuffix(REASON_SUFFIX): p.read_text().strip() for p in folder.glob(f"*{REASON_SUFFIX}")}


# ---------------------------------------------------------------- landing and ingest


def test_text_batches_are_screened_and_bad_ones_quarantined_with_a_reason(tmp_path):
    params = text_params(tmp_path)
    landing = Path(params.paths.landing)
    later = later_tweets(50)
    land_frame(later, landing, "tweets_2017.csv")  # labelled, with times and the source's other columns
    land_frame(later[["text"]], landing, "texts_only.parquet")  # for drift: no labels, no times
    land_frame(later[["text", "source"]].assign(source=None), landing, "labels_empty.parquet")
    land_frame(later.drop(columns="text"), landing, "no_text.csv")
    land_frame(later.assign(text=range(50)), landing, "numbers.csv")
    land_frame(later.assign(text=None), landing, "missing_texts.parquet")
    land_frame(later.assign(text=" \t "), landing, "blank.parquet")
    land_frame(later.assign(text=[b"\x00\x01"] * 50), landing, "bytes.parquet")
    land_frame(later.assign(created_at="soon"), landing, "bad_time.csv")
    land_frame(later.assign(created_at=range(50)), landing, "numeric_time.csv")
    land_frame(later.drop(columns="created_at"), landing, "labelled_no_time.parquet")
    (landing / "header_only.csv").write_text("text,source,created_at\n")
    (landing / "empty.csv").write_bytes(b"")
    (landing / "corrupt.parquet").write_bytes(b"\x00garbage")
    (landing / "tweets.json").write_text("[]")

    good, moved = screen_landed(params)

    assert [(b.path.name, b.rows) for b in good] == [
        ("labels_empty.parquet", 50),
        ("texts_only.parquet", 50),
        ("tweets_2017.csv", 50),
    ]
    why = reasons(params)
    assert sorted(p.name for p in moved) == sorted(why)
    assert why == {
        "no_text.csv": "missing the text column 'text' (ingest.text_column)",
        "numbers.csv": "column 'text' (ingest.text_column) holds numbers, not texts",
        "missing_texts.parquet": "column 'text' (ingest.text_column) has no texts (all 50 values missing)",
        "blank.parquet": "column 'text' (ingest.text_column) has no texts (all 50 values missing or blank)",
        "bytes.parquet": "column 'text' (ingest.text_column): 50 value(s) are not texts (e.g. a bytes)",
        "bad_time.csv": "ingest.time_column 'created_at': no value parses as numbers or dates (e.g. 'soon')",
        "numeric_time.csv": "ingest.time_column 'created_at' holds numbers, the source's holds dates",
        "labelled_no_time.parquet": "labelled texts need the time column 'created_at' (ingest.time_column): "
        "ingest orders them by it; land the times, or the texts without labels",
        "header_only.csv": "file has a header but no rows",
        "empty.csv": "file is empty",
        "corrupt.parquet": why["corrupt.parquet"],
        "tweets.json": "unsupported file type '.json'; use one of ['.csv', '.parquet', '.pq']",
    }
    assert why["corrupt.parquet"].startswith("not a readable parquet file")


def test_ingest_stacks_labelled_batches_whole_after_the_sliced_source(tmp_path):
    params = text_params(tmp_path, max_rows=100)
    landing = Path(params.paths.landing)
    later = later_tweets(80)
    land_frame(later.head(50).assign(source=" Twitter for iPhone "), landing, "b1_labelled.csv")
    land_frame(later.tail(30)[["text"]], landing, "b2_unlabelled.parquet")

    report = ingest.run(params.ingest, params.paths, params.seed)

    frame, _ = read_dataset(params.paths.ingested)
    # The slice (100 of the source's 300) and the cutoff apply to the source; the labelled batch comes whole
    # after it, its labels read as the source's are (stripped); the unlabelled one is for drift only.
    assert len(frame) == 150 and report["rows"] == 150
    assert (frame["created_at"].iloc[:100] <= CUTOFF).all() and (frame["created_at"].iloc[100:] > CUTOFF).all()
    assert frame["created_at"].is_monotonic_increasing
    assert frame["text"].iloc[100:].tolist() == later.head(50).sort_values("created_at", kind="stable")["text"].tolist()
    assert set(frame["source"].iloc[100:]) == {"Twitter for iPhone"}
    assert [(b["file"], b["rows"], b["labelled"]) for b in report["landed_batches"]] == [
        ("b1_labelled.csv", 50, True),
        ("b2_unlabelled.parquet", 30, False),
    ]
    assert read_json(params.paths.ingest_report)["landed_batches"] == report["landed_batches"]

    land_frame(later.drop(columns="created_at"), landing, "b3_bad.csv")  # landed after the screen ran
    with pytest.raises(DataError, match=r"b3_bad.csv: landed batch cannot be used: labelled texts need the time column"):
        ingest.run(params.ingest, params.paths, params.seed)


# ---------------------------------------------------------------- the drift frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TextModel:
    """A real model: 2,000 tweets of the training era (to 2016), trained for three quick epochs."""
    rows = tweets()
    era = rows.loc[rows["created_at"] <= CUTOFF]
    return train_text_model(era.sample(2000, random_state=0), tmp_path_factory.mktemp("text-model"))


def test_the_drift_frame_holds_lengths_and_with_the_model_unseen_shares_and_classes(trained, tmp_path):
    params = text_params(tmp_path)
    # A landed row (the card's text column), a row of the prediction log (the text under "text", its answer
    # logged), and a landed row without a text.
    card = trained.card.model_copy(update={"text_column": "tweet"})
    frame = pd.DataFrame(
        {
            "tweet": ["Make America GREAT again!", None, None],
            "text": [None, "Thank you Ohio! #MAGA", None],
            LOGGED_LABEL: [None, "other", None],
        }
    )

    plain = RUNTIME.drift_frame(frame, card, params)
    full = RUNTIME.drift_frame(frame, card, params, trained.onnx)

    assert list(plain.columns) == ["chars", "words"] and (plain.dtypes == "float64").all()
    assert list(full.columns) == ["chars", "words", "oov_share", PREDICTED]
    assert list(full.dtypes.astype(str)) == ["float64", "float64", "float64", "string"]
    assert drift_columns(full) == (["chars", "words", "oov_share"], [PREDICTED])
    assert full["chars"].tolist()[:2] == [25.0, 21.0] and full["words"].tolist()[:2] == [5.0, 5.0]  # Ohio, !, #MAGA
    assert full.iloc[2].isna().all()  # no text: nothing to measure, nothing to predict
    assert full.loc[1, PREDICTED] == "other" and full.loc[0, PREDICTED] in trained.card.classes
    shares = full["oov_share"].iloc[:2]
    assert ((shares >= 0) & (shares <= 1)).all()
    # An empty frame (nothing new) keeps the columns.
    assert list(RUNTIME.drift_frame(pd.DataFrame(), trained.card, params, trained.onnx).columns) == list(full.columns)
    with pytest.raises(DataError, match=r"^the card is of a image model, not a text one$"):
        RUNTIME.drift_frame(frame, parse_card(old_card_data("image")), params)


def tiny_model(path: Path, vocab: tuple[str, ...]) -> Path:
    """An (untrained) exported model whose vocabulary is exactly ``vocab``, lower-casing first."""
    tokenizer = TextTokenizer("source", "text", ("a", "b"), lowercase=True, max_length=8, vocab=vocab)
    torch.manual_seed(0)
    network = build_model(TextLSTMConfig(tokenizer.vocab_size, 2, embedding_dim=4, hidden=4)).eval()
    path.write_bytes(build_text_onnx(network, tokenizer, opset=17).SerializeToString())
    return path


def test_the_unseen_share_counts_the_graphs_vocabulary_and_reads_it_once_per_file(tmp_path):
    model = tiny_model(tmp_path / "model.onnx", ("great", "again", "!"))
    texts = pd.DataFrame({"text": ["GREAT again, Ohio!", "great great", "Ohio", "", "  ", "#MAGA 🇺🇸"]})

    drift._read_vocabulary.cache_clear()
    frame = drift.text_columns(texts, "text", model)
    again = drift.text_columns(texts, "text", model)

    # great again , ohio ! -> "," and "ohio" unseen: 2 of 5 (upper case lower-cased, as the graph does)
    expected = [2 / 5, 0.0, 1.0, np.nan, np.nan, 1.0]
    np.testing.assert_allclose(frame["oov_share"].to_numpy(), expected)
    assert frame["words"].tolist() == [len(split_tokens(t)) for t in texts["text"]] == [5, 2, 1, 0, 0, 3]
    assert frame.equals(again)
    assert drift._read_vocabulary.cache_info().misses == 1  # the graph was read once
    assert drift.model_vocabulary(model) == drift.ModelVocabulary(frozenset({"great", "again", "!"}), lowercase=True)

    tiny_model(model, ("ohio",))  # the file replaced by another model: read again
    assert drift.model_vocabulary(model).tokens == frozenset({"ohio"})
    assert drift._read_vocabulary.cache_info().misses == 2

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"junk.onnx: not a readable ONNX model"):
        drift.model_vocabulary(tmp_path / "junk.onnx")


def test_predicted_classes_come_from_the_log_where_it_answered_and_from_the_model_elsewhere(trained, monkeypatch):
    texts = trained.train["text"].head(6).tolist()
    frame = pd.DataFrame({"text": texts, LOGGED_LABEL: ["other", None, "Twitter for iPhone", None, None, "other"]})
    scored: list[list[str]] = []
    predict = drift.predict_labels

    def recording(model, batch):
        scored.append(list(batch))
        return predict(model, batch)

    monkeypatch.setattr(drift, "predict_labels", recording)

    predicted = drift.text_columns(frame, "text", trained.onnx)[PREDICTED]

    assert scored == [[texts[1], texts[3], texts[4]]]  # only the rows the log has no answer for
    model_says = predict(trained.onnx, texts)
    assert predicted.tolist() == ["other", model_says[1], "Twitter for iPhone", model_says[3], model_says[4], "other"]


def test_score_rows_measures_the_model_on_the_rows_with_a_usable_label(trained, tmp_path):
    params = text_params(tmp_path)
    test = pd.read_parquet(trained.onnx.parent / "test.parquet")
    frame = pd.concat(
        [
            test[["text", "source"]],
            # no label, a missing-value token, a blank text: not scored; a rare device counts as "other"
            pd.DataFrame({"text": ["no label", "a token", "   ", "Sent from my fax"], "source": [None, "NA", "other", "Fax"]}),
        ],
        ignore_index=True,
    )

    scores = RUNTIME.score_rows(trained.onnx, trained.card, frame, params)

    truth = [*test["source"], "other"]
    predicted = drift.predict_labels(trained.onnx, [*test["text"], "Sent from my fax"])
    assert scores == label_scores(truth, predicted, list(trained.card.classes))
    assert scores["rows"] == len(test) + 1 and scores["accuracy"] == pytest.approx(
        trained.card.test_metrics["accuracy"], abs=0.01
    )
    assert RUNTIME.score_rows(trained.onnx, trained.card, frame.drop(columns="source"), params) == {}
    assert RUNTIME.score_rows(trained.onnx, trained.card, frame.assign(source=None), params) == {}


# ---------------------------------------------------------------- the drift check, on real tweets


@pytest.mark.parametrize("era", ["held-out training era", "2017"])
def test_the_2017_tweets_drift_and_a_held_out_sample_of_the_training_era_does_not(trained, tmp_path, era):
    params = text_params(tmp_path)
    rules = RUNTIME.landing_screen(params)
    rows = tweets()
    if era == "2017":
        batch = rows.loc[rows["created_at"] > CUTOFF].sample(600, random_state=1)
    else:
        unseen = rows.loc[(rows["created_at"] <= CUTOFF) & ~rows["text"].isin(trained.train["text"])]
        batch = unseen.sample(600, random_state=1)
    land_frame(batch, Path(params.paths.landing), "batch.parquet")
    good, moved = screen_landed(params, rules=rules)
    assert [b.path.name for b in good] == ["batch.parquet"] and moved == []

    reference_file = trained.onnx.parent / "train.parquet"  # what the registry keeps as the reference
    reference = RUNTIME.drift_frame(rules.read(reference_file), trained.card, params, trained.onnx)
    current = LandingSource(Path(params.paths.landing), rules=rules).pending(set())
    frame = RUNTIME.drift_frame(current.frame, trained.card, params, trained.onnx)
    assert len(frame) == 600 and list(frame.columns) == list(reference.columns)

    result = detect_drift(reference, frame, *drift_columns(reference))

    assert result.dataset_drift is (era == "2017"), result.drifted_columns
    if era == "2017":  # longer tweets (280 characters from November 2017), new words
        assert {"chars", "words"} <= set(result.drifted_columns)
    else:
        # The one column that moves: a training text's own tokens are in the vocabulary by construction (all
        # but those seen once, with features.min_count 2), so held-out texts of the same era have more unseen
        # tokens than the training split has (here 0.16 against 0.12 on average). One of four columns is not
        # dataset drift (monitor.drift_share 0.5).
        assert result.drifted_columns == ["oov_share"]
