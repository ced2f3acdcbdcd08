"""Training-set feature fetch: one Feast point-in-time row per distinct key (what training does) against one per
example row, on the same examples of a built warehouse.

`training.data.fetch_features` asks Feast once per distinct (user, day) and (item, day) and spreads the answers over
the examples (decision 15). This prints, for the evaluation window's examples (real exposures plus the profile's
sampled negatives, seed 0) and for ranker-like candidates (random pairs of the evaluation window's users and items,
all at its first day, as the ranker's candidates are), the rows, the distinct keys and the seconds of both ways, after
one warm-up call of each.

    python benchmarks/feature_fetch.py --warehouse warehouse
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import PROJECT_ROOT, load_settings


def per_row_seconds(settings, frame: pd.DataFrame) -> float:
    """One Feast entity row per example, as training did before the per-key fetch."""
    from nightrec import feature_store

    entity_df = (
        frame[["user_id", "item_id"]]
        .astype(str)
        .assign(event_timestamp=pd.to_datetime(frame["example_ts"]).dt.tz_localize("UTC"), row_id=np.arange(len(frame)))
    )
    t0 = time.perf_counter()
    feature_store.historical_features(settings, entity_df)
    return time.perf_counter() - t0


def per_key_seconds(settings, frame: pd.DataFrame, vocabularies, out: Path) -> float:
    from training import data

    one_chunk = settings.with_overrides(training=replace(settings.training, feature_chunk_days=10_000))
    t0 = time.perf_counter()
    data.fetch_features(one_chunk, frame, *vocabularies, out)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--candidates", type=int, default=100_000, help="cap on the candidate rows")
    args = parser.parse_args()
    settings = load_settings().with_overrides(warehouse_root=args.warehouse.resolve())

    from nightrec.adapters import load_adapter
    from training import data, run

    last_day = run.last_data_day(settings)
    split = data.split_for(load_adapter(settings.source).history_start, last_day, settings.training)
    train_ex = data.load_examples(settings, *split.train)
    eval_ex = data.load_examples(settings, *split.evaluation)
    popularity = train_ex["item_id"].value_counts().sort_index()
    negatives = data.sample_negatives(eval_ex, popularity, settings.training.negatives, np.random.default_rng(0))
    examples = pd.concat([eval_ex, negatives.rows], ignore_index=True)
    users, items = data.Vocabulary.of(train_ex["user_id"]), data.Vocabulary.of(train_ex["item_id"])
    vocabularies = (users, items, data.ItemAttributes.load(settings, items))

    rng = np.random.default_rng(0)
    at = data.midnight(split.evaluation[0])
    eval_users = eval_ex["user_id"].astype(str).unique()
    eval_items = eval_ex["item_id"].astype(str).unique()
    n = min(args.candidates, len(eval_users) * len(eval_items))
    candidates = pd.DataFrame(
        {"user_id": rng.choice(eval_users, n), "item_id": rng.choice(eval_items, n), "category": 0}
    ).assign(example_ts=at, ds=split.evaluation[0])

    print(
        f"Feature fetch on {settings.warehouse_root} ({settings.source}, profile {settings.profile}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    per_row_seconds(settings, examples.head(100))  # warm-up: registry, DuckDB, ibis
    with tempfile.TemporaryDirectory() as tmp:
        per_key_seconds(settings, examples.head(100), vocabularies, Path(tmp) / "warm")
        for name, frame in (("evaluation examples", examples), ("candidates at one time", candidates)):
            keys = (
                frame[["user_id", "ds"]].drop_duplicates().shape[0]
                + frame[["item_id", "ds"]].drop_duplicates().shape[0]
            )
            row = per_row_seconds(settings, frame)
            key = per_key_seconds(settings, frame, vocabularies, Path(tmp) / name.replace(" ", "-"))
            print(
                f"{name}: {len(frame):,} rows, {keys:,} distinct keys; per row {row:.1f}s, per key {key:.1f}s "
                f"(including encoding and writing the files), {row / key:.1f}x"
            )
            data = f"{settings.source} {name}, {len(frame):,} rows, {keys:,} distinct keys"
            record_figure(
                "feature_fetch", f"{name}: one Feast row per key", round(key, 1), "s", data, per_row_s=round(row, 1)
            )


if __name__ == "__main__":
    main()
