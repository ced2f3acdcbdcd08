"""The ranker stage (train the held-out and the served boosters, judge every list) at 1x, 10x, ... a built night.

The night's candidates and the `user_item_features` export (the labels) of a built warehouse are copied with every
user k times under the up-scaler's ids (nightrec/upscale.py), so users, candidates and buyers grow k-fold while each
user's candidates stay the same. `training.ranker.run` then trains and judges on the copy, as the nightly
`train_ranker` task does (without the champion gate). It prints the seconds of the stage and of the judging: a cost
that grows faster than k points at something quadratic (the judging's user filter was, until decision 34).

    python benchmarks/ranker_scaling.py --warehouse warehouse --factors 1,10
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs
from _scratch import built_night_arguments, copied_users

from nightrec.errors import InputError
from nightrec.warehouse import Warehouse
from training import ranker


def scaled_night(source: Warehouse, day: date, factor: int, target: Warehouse) -> Path:
    """The candidates of night ``day`` and the pair mart of ``source``, users copied ``factor`` times, in ``target``."""
    shutil.rmtree(target.root, ignore_errors=True)
    marts = target.mart_export("user_item_features")
    marts.mkdir(parents=True)
    pq.write_table(copied_users(pq.read_table(source.mart_export("user_item_features")), factor), marts / "0.parquet")
    night, candidates = source.candidates(day), target.candidates(day)
    for anchor in sorted(night.glob("anchor=*")):
        (candidates / anchor.name).mkdir(parents=True)
        pq.write_table(copied_users(pq.read_table(anchor), factor), candidates / anchor.name / "0.parquet")
    shutil.copy(night / "_SUCCESS", candidates / "_SUCCESS")
    return candidates


def main() -> None:
    args, settings = built_night_arguments(__doc__, "users", "the ranker's rounds and anchors")
    source = Warehouse.of(settings)
    nights = sorted(date.fromisoformat(p.name[3:]) for p in (source.root / "candidates").glob("ds=*"))
    if not nights:
        sys.exit(f"No candidates under {source.root}: run a nightly night first (make demo)")
    day = nights[-1]
    print("| factor | training rows | judged users (30d) | stage s | judging s |")
    print("|---|---|---|---|---|")
    for factor in (int(f) for f in args.factors.split(",")):
        scaled = settings.with_overrides(warehouse_root=(args.workdir / f"ranker_x{factor}" / "warehouse").resolve())
        candidates = scaled_night(source, day, factor, Warehouse.of(scaled))
        try:
            started = time.perf_counter()
            report = ranker.run(
                scaled,
                day,
                version=f"bench-x{factor}",
                gate_champions=False,
                candidates_root=candidates,
            )
            seconds = time.perf_counter() - started
        except InputError as exc:
            sys.exit(f"x{factor}: {exc}")
        judging = report["phase_seconds"]["judging"]
        rows, users = report["training"]["held_out"]["rows"], report["metrics"]["ranker"]["30d"]["users"]
        print(f"| {factor} | {rows:,} | {users:,} | {seconds:.1f} | {judging:.1f} |", flush=True)
        data = f"{source.root.name} night {day} x{factor}: {rows:,} training rows"
        record_figure("ranker_scaling", "ranker stage seconds", round(seconds, 1), "s", data)
        record_figure("ranker_scaling", "judging seconds", round(judging, 1), "s", data)


if __name__ == "__main__":
    main()
