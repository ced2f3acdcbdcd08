"""Training-set feature fetch: one Feast point-in-time row per distinct key (what training does) against one per
example row, on the same examples of a built warehouse.

`training.data.fetch_features` asks Feast once per distinct (user, day) and (item, day) and spreads the answers over
the examples (decision 15). This prints, for the evaluation window's examples (real exposures plus the profile's
sampled negatives, seed 0) and for ranker-like candidates (random pairs of the evaluation window's users and items,
all at its first day, as the ranker's candidates are), the rows, the distinct keys and the seconds of both ways, after
one warm-up call of each.

    python benchmarks/feature_fetch.py --warehouse warehouse

With ``--factors 1,10,100`` it measures memory instead: the evaluation window's real exposures, every user copied k
times under the up-scaler's ids, fetched per key (what training does) from the marts up-scaled the same way
(benchmarks/feast_materialize.py), in a fresh process per (factor, store): seconds, the process's own peak RSS and
its process tree's (Spark's JVM and workers included for the production variant's Spark offline store).

    python benchmarks/feature_fetch.py --warehouse warehouse --factors 1,10,100 --stores local,production
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
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


def scaled_examples(settings, factor: int) -> pd.DataFrame:
    """The evaluation window's real exposures with every user copied ``factor`` times (copy 0 keeps its id)."""
    from nightrec.adapters import load_adapter
    from nightrec.upscale import new_user_id
    from training import data, run

    split = data.split_for(load_adapter(settings.source).history_start, run.last_data_day(settings), settings.training)
    frame = data.load_examples(settings, *split.evaluation)
    copies = [frame.assign(user_id=frame["user_id"].map(lambda u, k=k: new_user_id(u, k))) for k in range(1, factor)]
    return pd.concat([frame, *copies], ignore_index=True)


def one_fetch(source: Path, warehouse: Path, variant: str, examples_file: Path) -> dict:
    """Apply the repository over ``warehouse`` and fetch ``examples_file``'s features per key (this process)."""
    from feast_materialize import own_peak_mib

    from nightrec import feature_store
    from training import data

    base = load_settings().with_overrides(warehouse_root=warehouse)
    settings = base.with_overrides(feast=replace(base.feast, variant=variant))
    feature_store.apply(settings)
    examples = pd.read_parquet(examples_file)
    items = data.Vocabulary.of(examples["item_id"])
    vocabularies = (data.Vocabulary.of(examples["user_id"]), items)
    attributes = data.ItemAttributes.load(settings.with_overrides(warehouse_root=source), items)  # not up-scaled
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        files = data.fetch_features(settings, examples, *vocabularies, attributes, Path(tmp))
        seconds = time.time() - t0
    return {
        "rows": len(examples),
        "written": files.rows,
        "seconds": seconds,
        "peak_rss_mib": own_peak_mib(),
    }


OFFLINE_STORES = {"local": "DuckDB", "redis": "DuckDB", "production": "Spark"}  # what each variant fetches from


def memory(args: argparse.Namespace) -> None:
    """Per (factor, store): the per-key fetch of the up-scaled evaluation exposures, in a fresh process."""
    from _scratch import scaled_marts
    from feast_materialize import feast_servers, measure

    source = args.warehouse.resolve()
    settings = load_settings().with_overrides(warehouse_root=source)
    variants = args.stores.split(",")
    table = []
    with feast_servers(variants, args.spark_master) as env:
        for factor in (int(f) for f in args.factors.split(",")):
            warehouse = (args.workdir / f"fetch_x{factor}" / "warehouse").resolve()
            shutil.rmtree(warehouse, ignore_errors=True)
            scaled_marts(source, factor, warehouse)
            examples_file = warehouse.parent / "examples.parquet"
            scaled_examples(settings, factor).to_parquet(examples_file)
            for variant in variants:
                command = ["--one-fetch", str(source), str(warehouse), variant, str(examples_file)]
                result = measure([sys.executable, __file__, *command], env)
                print(f"x{factor} {OFFLINE_STORES[variant]}: {result}", flush=True)
                table.append((factor, OFFLINE_STORES[variant], result))
    print("\n| factor | offline store | example rows | seconds | peak RSS MiB, Python | peak RSS MiB, process tree |")
    print("|---|---|---|---|---|---|")
    for factor, store, r in table:
        print(
            f"| {factor} | {store} | {r['rows']:,} | {r['seconds']:.1f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['tree_peak_mib']:,.0f} |"
        )
        data = f"{source.name} x{factor}: the evaluation window's exposures, {r['rows']:,} rows"
        record_figure("feature_fetch", f"per-key fetch peak RSS, {store}", round(r["peak_rss_mib"]), "MiB", data)
        record_figure(
            "feature_fetch",
            f"per-key fetch peak RSS of the process tree, {store}",
            round(r["tree_peak_mib"]),
            "MiB",
            data,
            seconds=round(r["seconds"], 1),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--candidates", type=int, default=100_000, help="cap on the candidate rows")
    parser.add_argument("--factors", help="measure memory at these up-scaling factors instead (comma-separated)")
    parser.add_argument("--stores", default="local,production", help="Feast variants for --factors")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory (--factors)")
    parser.add_argument("--spark-master", default="local[2]", help="the production variant's Spark master")
    parser.add_argument("--one-fetch", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_fetch:
        source, warehouse, variant, examples_file = args.one_fetch
        print("RESULT " + json.dumps(one_fetch(Path(source), Path(warehouse), variant, Path(examples_file))))
        return
    if args.factors:
        memory(args)
        return
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
