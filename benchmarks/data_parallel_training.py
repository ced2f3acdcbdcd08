"""Data-parallel training (training.processes, training/distributed.py) against one process: the night's models
trained on a built warehouse with 1 and with N processes, for several seeds; their held-out figures and seconds.

Two processes must give the figures of one within the seed-to-seed spread (each step still sees `batch_size`
examples, split over the processes). On a machine with few cores the processes share them, so more processes are
not faster there; one process per GPU is where the time goes down.

    python benchmarks/data_parallel_training.py --warehouse warehouse --profile smoke --seeds 0,1,2 --processes 1,2

Nothing is published: the models are written as versions `bench-dp<N>-s<seed>` (not gated) and removed afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import PROJECT_ROOT, load_settings

FIGURES = {"two_tower": ("recall@20", "ndcg@20"), "gnolr": ("recall@20", "ndcg@20", "auc_mean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--profile", default=None, help="settings profile (default: NIGHTREC_PROFILE or local)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (the first is the base)")
    args = parser.parse_args()
    from nightrec.logs import show_progress
    from training import registry, run

    show_progress()
    base = load_settings(args.profile).with_overrides(warehouse_root=args.warehouse.resolve())
    base = base.with_overrides(training=replace(base.training, models=tuple(FIGURES)))
    last_day = run.last_data_day(base)
    seeds = [int(s) for s in args.seeds.split(",")]
    counts = [int(n) for n in args.processes.split(",")]
    results: dict[tuple[int, int], dict] = {}
    for seed in seeds:
        for n in counts:
            settings = base.with_overrides(training=replace(base.training, processes=n))
            version = f"bench-dp{n}-s{seed}"
            t0 = time.perf_counter()
            try:
                report = run.train_models(settings, last_day, seed, version, None, gate_champions=False)
            finally:
                for kind in FIGURES:
                    shutil.rmtree(registry.model_dir(base.warehouse_root, kind, version), ignore_errors=True)
            seconds = time.perf_counter() - t0
            results[(n, seed)] = {"seconds": seconds, **{k: report["models"][k]["metrics"] for k in FIGURES}}

    data = f"{base.source}, data through {last_day}, profile {base.profile}"
    print(f"\n{data}; processes {counts}, seeds {seeds}")
    header = "".join(f"{f'{n} process(es): mean (min-max)':>34}" for n in counts)
    print(f"{'figure':<24}{header}{'mean diff':>12}{'seed range':>12}")
    for kind, names in FIGURES.items():
        for name in names:
            cols = {n: np.array([results[(n, s)][kind][name] for s in seeds]) for n in counts}
            line = f"{kind + ' ' + name:<24}"
            for n in counts:
                line += f"{f'{cols[n].mean():.4f} ({cols[n].min():.4f}-{cols[n].max():.4f})':>34}"
                record_figure("data_parallel", f"{kind} {name}, {n} process(es)", float(cols[n].mean()), "", data)
            diffs = "".join(f"{(cols[n] - cols[counts[0]]).mean():>+12.4f}" for n in counts[1:])
            print(f"{line}{diffs}{np.ptp(cols[counts[0]]):>12.4f}")
    for n in counts:
        secs = float(np.mean([results[(n, s)]["seconds"] for s in seeds]))
        print(f"{'seconds (train_models)':<24}{n:>3} process(es): {secs:.1f}")
        record_figure("data_parallel", f"train_models seconds, {n} process(es)", secs, "s", data)


if __name__ == "__main__":
    main()
