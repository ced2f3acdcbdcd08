"""Consumer segments night after night: encoder time, the segments job's time, silhouette and stability (ARI).

For each up-scaling factor of a source's history (``--source``, default the Tmall log), a scratch warehouse gets the
whole history (land, attribute snapshots, ingest, sequences in one pass), then the nights D-n+1..D each run what the
nightly DAG's segments group runs, in-process: the consumer encoder (training/consumer_embeddings.py) and the
segments job (spark_jobs/build_segments.py, one Spark session). The first night starts the encoder from random
weights and picks k by silhouette; the later ones continue (decision 21).
Prints one line per night and a table; nothing is asserted.

    python benchmarks/segments_nightly.py --factors 1 --nights 3                # the local profile's encoder
    python benchmarks/segments_nightly.py --factors 10 --nights 2 --epochs 1    # the job's time on the 10x copy
    python benchmarks/segments_nightly.py --source hm --nights 3 --seed 1       # H&M, attributes in the encoder

Factors above 1 replicate every user with new ids (``nightrec upscale``), so consumers come in identical groups:
their silhouette and ARI say nothing about real data, only the times do.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from _figures import record_figure
from _scratch import scratch_warehouse  # benchmarks/ is on sys.path when a script here runs

from nightrec.adapters import load_adapter
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.landing import replay
from nightrec.warehouse import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1", help="comma-separated up-scaling factors (default 1)")
    parser.add_argument("--nights", type=int, default=3, help="consecutive nights ending on --end (default 3)")
    parser.add_argument("--end", type=date.fromisoformat, help="the last night (default: the history's last day)")
    parser.add_argument("--profile", default="local", help="configuration profile whose segments settings run")
    parser.add_argument("--source", default="tmall_brand", help="source adapter (default tmall_brand)")
    parser.add_argument("--seed", type=int, help="override training.seed (the encoder's initialisation and batches)")
    parser.add_argument("--epochs", type=int, help="override segments.epochs (e.g. 1 for a timing run at scale)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a segments setting, e.g. --set fine_tune_learning_rate=1e-4 (repeatable)",
    )
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch warehouses")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from nightrec.attributes import ingest_attributes
    from nightrec.logs import show_progress
    from spark_jobs import build_segments, build_sequences, ingest_events
    from spark_jobs.common import JobRun, build_spark
    from training import consumer_embeddings

    show_progress()
    adapter = load_adapter(args.source)
    base = load_settings(args.profile, env={}).with_overrides(source=adapter.name)
    if args.seed is not None:
        base = base.with_overrides(training=replace(base.training, seed=args.seed))
    changes: dict[str, object] = {"epochs": args.epochs} if args.epochs else {}
    for item in args.set:
        key, _, value = item.partition("=")
        kind = type(getattr(base.segments, key))
        changes[key] = kind(value) if kind is not bool else value.lower() in {"1", "true", "yes"}
    if changes:
        base = base.with_overrides(segments=replace(base.segments, **changes))
    last = args.end or adapter.history_end
    nights = [last - timedelta(days=i) for i in range(args.nights - 1, -1, -1)]
    spark = build_spark(base, "benchmark-segments")
    rows = []
    for factor in [int(f) for f in args.factors.split(",")]:
        settings, bundled = scratch_warehouse(adapter, factor, args.workdir, base)
        wh = Warehouse(settings.warehouse_root, adapter.name)
        end = last + timedelta(days=1)
        replay(adapter, wh, adapter.history_start, end, bundled)
        ingest_attributes(adapter, wh)
        ingest_events.run(spark, settings, adapter.history_start, end)
        build_sequences.run(spark, settings, adapter.history_start, end)
        for night in nights:
            t = time.time()
            encoder = consumer_embeddings.run(settings, night)
            t_encoder = time.time() - t
            t = time.time()
            segments = build_segments.run(JobRun("build_segments", settings, night, night + timedelta(days=1), spark))
            t_job = time.time() - t
            fresh = max(v for k, v in segments["silhouettes"].items() if k.startswith("k="))
            row = (factor, night, encoder, t_encoder, segments, t_job, fresh)
            rows.append(row)
            print(f"x{factor} {night}: encoder {t_encoder:.1f}s, segments {t_job:.1f}s", flush=True)
        if not args.keep:
            shutil.rmtree(settings.warehouse_root.parent, ignore_errors=True)
    spark.stop()

    s = base.segments
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; source {adapter.name}, "
        f"seed {base.training.seed}; profile {args.profile}: "
        f"encoder {s.objective}, {s.epochs} epochs, {s.dim}-d, {s.layers} layers, learning rate {s.learning_rate} "
        f"(continued nights {s.fine_tune_learning_rate}); k {s.k or f'{s.k_min}..{s.k_max}'}, {s.kmeans_starts} "
        f"k-means starts, keep margin {s.keep_margin}"
    )
    print(
        f"{'factor':>6} {'night':>10} {'consumers':>9} {'enc s':>6} {'epoch':>5} {'val@10x':>7} {'cos prev':>8} "
        f"{'job s':>6} {'k':>2} {'clustering':>10} {'silh':>6} {'fresh':>6} {'ARI':>6}"
    )
    for factor, night, enc, t_enc, seg, t_job, fresh in rows:
        cosine = number(enc["alignment"].get("mean_cosine_to_previous"))
        validation = number(enc.get("validation_recall@10x"))
        print(
            f"{factor:>6} {night!s:>10} {enc['consumers']:>9,} {t_enc:>6.1f} {enc['best_epoch']:>5} {validation:>7} "
            f"{cosine:>8} {t_job:>6.1f} {seg['k']:>2} {seg['clustering']:>10} {seg['silhouette']:>6.3f} "
            f"{fresh:>6.3f} {number(seg['ari']):>6}"
        )
        data = f"{adapter.name} x{factor}, {enc['consumers']:,} consumers, night {night}"
        record_figure("segments", "consumer encoder", round(t_enc, 1), "s", data)
        record_figure("segments", "segments job", round(t_job, 1), "s", data, k=seg["k"], silhouette=seg["silhouette"])
        if seg["ari"] is not None:
            record_figure("segments", "stability (ARI with the night before)", round(seg["ari"], 3), "ARI", data)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
