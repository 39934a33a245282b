"""Benchmark: the drift check per kind, on 10,000 images, on 100,000 sequence steps and on 10,000 texts.

Each check is timed as the monitor runs it: read the reference (the training split file) and one landed
batch with the kind's ``LandingScreen.read``, take the kind's drift frame of each, and run Evidently with
the monitor's default samples (20,000 rows each, seeded). Images: real digits (8x8, 0..16), drawn with
replacement to 10,000, and the same at 64x64 (``ingest.size``, resized on read) to show how reading
scales with pixels; the batch is brightened by 3 units. Sequences: real elecdemand, six copies as six
series (105,120 steps) as the reference and 100,000 steps with +5 deg C and +0.5 GW as the batch.
Texts: real tweets (dslabs::trump_tweets), 10,000 of the training era (to 2016) as the reference and
10,000 drawn with replacement from the 2017 ones as the batch; the drift frame with the lengths alone,
and with a model of the example's size (a bi-LSTM, 64 units; trained for one epoch on 2,000 tweets
before the clocks start) giving each text's share of unseen tokens and its predicted class (onnxruntime).
Evidently's import (once per process) is paid before the clocks start.

    python bench/drift_kinds.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import kinds  # noqa: E402
from pipeline.kinds.image.ingest import load_digits_images  # noqa: E402
from pipeline.kinds.sequence.ingest import load_elecdemand  # noqa: E402
from pipeline.lifecycle.drift import DriftResult, _import_evidently  # noqa: E402
from pipeline.lifecycle.landing import landing_rules  # noqa: E402
from pipeline.lifecycle.monitoring import compare_frames  # noqa: E402
from pipeline.onnxio.card import ModelCard, parse_card  # noqa: E402
from pipeline.params import Params  # noqa: E402
from tests.conftest import make_params  # noqa: E402
from tests.unit.kinds.text.fixtures import train_text_model, tweets  # noqa: E402
from tests.unit.onnxio.fixtures import old_card_data  # noqa: E402

TEXT_CUTOFF = pd.Timestamp("2016-12-31 23:59:59")  # the tweets example's ingest.time_cutoff


def params_for(example: str, tmp: Path, **ingest) -> Params:
    raw = yaml.safe_load((REPO / "examples" / example / "params.yaml").read_text())
    return make_params(raw, tmp, ingest=ingest) if ingest else make_params(raw, tmp)


def check(
    kind: str, params: Params, reference: Path, batch: Path, card: ModelCard | None = None, model: Path | None = None
) -> tuple[float, float, DriftResult]:
    """(seconds to read and prepare both frames, seconds for Evidently, the result). ``card`` defaults to the
    kind's committed test card; ``model``: the production model the monitor passes to ``drift_frame``."""
    runtime = kinds.get(kind).runtime
    card = card or parse_card(old_card_data(kind))
    start = time.perf_counter()
    rules = landing_rules(runtime.landing_screen(params))  # as the monitor builds it
    ref = runtime.drift_frame(rules.read(reference), card, params, model)
    cur = runtime.drift_frame(rules.read(batch), card, params, model)
    read = time.perf_counter() - start
    start = time.perf_counter()
    result = compare_frames(ref, cur, params.monitor, params.seed)  # as the monitor compares them
    return read, time.perf_counter() - start, result


def main() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    started = time.perf_counter()
    version = _import_evidently()
    print(f"evidently {version}, {os.cpu_count()} CPU cores; import (once per process): {time.perf_counter() - started:.2f} s")
    print(f"{'check':<44}{'ref':>8}{'cur':>8}{'read s':>8}{'check s':>9}{'total s':>9}  drifted")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        x, y = load_digits_images()
        for size in (None, (64, 64)):
            pick, batch_pick = rng.integers(0, len(x), 10_000), rng.integers(0, len(x), 10_000)
            np.savez(tmp / "train.npz", x=x[pick], y=y[pick])
            np.savez(tmp / "batch.npz", x=np.clip(x[batch_pick] + 3, 0, 16))
            params = params_for("digits", tmp / f"img{size}", **({"size": list(size)} if size else {}))
            read, took, result = check("image", params, tmp / "train.npz", tmp / "batch.npz")
            name = f"images 10k, {'8x8' if size is None else '8x8 read as 64x64'}, brightened"
            print(
                f"{name:<44}{result.reference_rows:>8}{result.current_rows:>8}{read:>8.2f}{took:>9.2f}{read + took:>9.2f}  {result.drifted_columns}"
            )

        source = load_elecdemand("time")
        series = pd.concat([source.assign(series=f"s{k}") for k in range(6)], ignore_index=True)
        series.to_parquet(tmp / "train.parquet")
        batch = series.sample(100_000, random_state=0)
        batch.assign(Temperature=batch["Temperature"] + 5, Demand=batch["Demand"] + 0.5).to_parquet(tmp / "steps.parquet")
        params = params_for("elecdemand", tmp / "seq")
        read, took, result = check("sequence", params, tmp / "train.parquet", tmp / "steps.parquet")
        name = "sequence steps 100k, warmer, more demand"
        print(f"{name:<44}{len(series):>8}{100_000:>8}{read:>8.2f}{took:>9.2f}{read + took:>9.2f}  {result.drifted_columns}")

        rows = tweets()
        era = rows.loc[rows["created_at"] <= TEXT_CUTOFF]
        era.sample(10_000, random_state=0).to_parquet(tmp / "texts_train.parquet")
        rows.loc[rows["created_at"] > TEXT_CUTOFF].sample(10_000, replace=True, random_state=0).to_parquet(
            tmp / "texts_2017.parquet"
        )
        example = yaml.safe_load((REPO / "examples/tweets/params.yaml").read_text())
        trained = train_text_model(
            era.sample(2_000, random_state=1), tmp / "text-model", network=example["train"]["model"], epochs=1
        )
        params = params_for("tweets", tmp / "text")
        for model in (None, trained.onnx):
            read, took, result = check(
                "text", params, tmp / "texts_train.parquet", tmp / "texts_2017.parquet", trained.card, model
            )
            name = f"texts 10k, 2017 tweets, {'lengths only' if model is None else 'with the model'}"
            print(
                f"{name:<44}{result.reference_rows:>8}{result.current_rows:>8}{read:>8.2f}{took:>9.2f}{read + took:>9.2f}  {result.drifted_columns}"
            )


if __name__ == "__main__":
    main()
