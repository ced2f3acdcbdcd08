"""The ranker stage (train the held-out and the served boosters, judge every list) at 1x, 10x, ... a built night.

The night's candidates and the `user_item_features` export (the labels) of a built warehouse are copied with every
user k times under the up-scaler's ids (nightrec/upscale.py), so users, candidates and buyers grow k-fold while each
user's candidates stay the same. `training.ranker.run` then trains and judges on the copy, as the nightly
`train_ranker` task does (without the champion gate), in a fresh process of its own per factor. It prints the seconds
of the stage and of the judging, and that process's peak resident memory: a cost that grows faster than k points at
something quadratic (the judging's user filter was, until decision 34), and the memory says at what size the stage
stops fitting on the machine (at 100x the users it once did not fit in 24 GiB; decision 44).

    python benchmarks/ranker_scaling.py --warehouse warehouse --factors 1,10
    python benchmarks/ranker_scaling.py --warehouse .bench/x10/warehouse --profile smoke --factors 10   # 100x users
"""

from __future__ import annotations

import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs
from _scratch import built_night_arguments, user_copy

from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.warehouse import Warehouse
from training import ranker


def _copied_file(source: pa.Table, factor: int, target: Path) -> None:
    """``factor`` copies of ``source`` written to ``target`` a copy at a time (no row group spans two copies), so that
    the benchmark's own process never holds the whole up-scaled table."""
    with pq.ParquetWriter(target, source.schema) as writer:
        for k in range(factor):
            writer.write_table(user_copy(source, k))


def scaled_night(source: Warehouse, day: date, factor: int, target: Warehouse) -> Path:
    """The candidates of night ``day`` and the pair mart of ``source``, users copied ``factor`` times, in ``target``."""
    shutil.rmtree(target.root, ignore_errors=True)
    marts = target.mart_export("user_item_features")
    marts.mkdir(parents=True)
    _copied_file(pq.read_table(source.mart_export("user_item_features")), factor, marts / "0.parquet")
    night, candidates = source.candidates(day), target.candidates(day)
    for anchor in sorted(night.glob("anchor=*")):
        (candidates / anchor.name).mkdir(parents=True)
        _copied_file(pq.read_table(anchor), factor, candidates / anchor.name / "0.parquet")
    shutil.copy(night / "_SUCCESS", candidates / "_SUCCESS")
    return candidates


def _stage(settings: Settings, day: date, factor: int, candidates: Path) -> dict[str, Any]:
    """The ranker stage on the copy, in the process that runs it (a fresh one per factor): its figures and that
    process's peak resident memory."""
    started = time.perf_counter()
    report = ranker.run(settings, day, version=f"bench-x{factor}", gate_champions=False, candidates_root=candidates)
    return {
        "seconds": time.perf_counter() - started,
        "judging": report["phase_seconds"]["judging"],
        "rows": report["training"]["held_out"]["rows"],
        "users": report["metrics"]["ranker"]["30d"]["users"],
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # Linux reports KiB
    }


def main() -> None:
    args, settings = built_night_arguments(__doc__, "users", "the ranker's rounds and anchors")
    source = Warehouse.of(settings)
    nights = sorted(date.fromisoformat(p.name[3:]) for p in (source.root / "candidates").glob("ds=*"))
    if not nights:
        sys.exit(f"No candidates under {source.root}: run a nightly night first (make demo)")
    day = nights[-1]
    print("| factor | training rows | judged users (30d) | stage s | judging s | peak GiB |")
    print("|---|---|---|---|---|---|")
    for factor in (int(f) for f in args.factors.split(",")):
        scaled = settings.with_overrides(warehouse_root=(args.workdir / f"ranker_x{factor}" / "warehouse").resolve())
        candidates = scaled_night(source, day, factor, Warehouse.of(scaled))
        # a fresh process per factor: its peak is the stage's alone, and the kernel ending it for memory ends only it
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            try:
                figures = pool.submit(_stage, scaled, day, factor, candidates).result()
            except InputError as exc:
                sys.exit(f"x{factor}: {exc}")
            except BrokenProcessPool:
                print(f"| {factor} | | | killed (out of memory?) | | |", flush=True)
                continue
        rows, users, seconds, judging = figures["rows"], figures["users"], figures["seconds"], figures["judging"]
        print(
            f"| {factor} | {rows:,} | {users:,} | {seconds:.1f} | {judging:.1f} | {figures['peak_gib']:.1f} |",
            flush=True,
        )
        data = f"{source.root.name} night {day} x{factor}: {rows:,} training rows"
        record_figure("ranker_scaling", "ranker stage seconds", round(seconds, 1), "s", data)
        record_figure("ranker_scaling", "judging seconds", round(judging, 1), "s", data)
        record_figure("ranker_scaling", "ranker stage peak memory", round(figures["peak_gib"], 1), "GiB", data)


if __name__ == "__main__":
    main()
