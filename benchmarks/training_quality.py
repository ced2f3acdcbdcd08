"""Model quality on the real data: every model and baseline on the same temporal split, over several seeds, with
paired-bootstrap 95% intervals. A benchmark, not a CI gate.

Needs a built warehouse whose marts are exported and whose Feast repository is applied (`make demo` builds
./warehouse). For each seed it prepares the split (negatives are seeded), trains every model of `training.models`
and the LightGBM ranker, and scores the retrieval baselines. It prints:

- the full table: every model x every metric, mean (and standard deviation) over the seeds, and CPU samples/s;
- GNOLR minus each ordinal baseline (independent BCE, ESMM, Neural OLR): AUC per level boundary on real exposures;
- the best retrieval model (the ranker, which the top-k tables publish) minus each retrieval baseline: Recall@20 and
  NDCG@20 on next-period purchases;
- a GNOLR diagnostic: the real evaluation exposures per category, each boundary's room (the cosine up to which
  P(k > c) stays at or below P(k > c - 1), training/ordinal.py `order_room`) and the spread of each sub-embedding's
  cosine on those exposures; a boundary with almost no room scores, in effect, like the one before it.

Intervals: the evaluation exposures (or buyers) are resampled with replacement, the same resample for both sides of
a difference and for every seed; each replicate's difference is averaged over seeds.

    python benchmarks/training_quality.py --warehouse warehouse --seeds 0,1,2

Another source's warehouse (NIGHTREC_SOURCE names it) may need a longer evaluation window, e.g. MovieLens, whose
last 30 days hold 877 ratings by 16 users: `--eval-days 730 --ranker-days 180`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nightrec.config import PROJECT_ROOT, load_settings
from training import data, metrics, ordinal, run, trainer


def _aligned_real(prepared: run.Prepared, exceed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real evaluation exposures sorted by (user, item, day): the same rows in the same order for every seed."""
    frame = data.read_all(prepared.evaluation, ["user_id", "item_id", "ds", "category"])
    frame["row"] = np.arange(len(frame))
    real = frame[frame["category"] > 0].sort_values(["user_id", "item_id", "ds"], kind="stable")
    return real["category"].to_numpy(), exceed[real["row"].to_numpy()]


def _cosine_spread(model: torch.nn.Module, prepared: run.Prepared, device: torch.device) -> np.ndarray:
    """Standard deviation of each sub-embedding's cosine over the real evaluation exposures (T,)."""
    parts = []
    with torch.no_grad():
        for batch in data.batches(prepared.evaluation, 8192):
            x = trainer.to_tensors(batch, device)
            real = x.category >= 1
            parts.append(model.cosines(model.user_vectors(x), model.item_vectors(x))[real].float().cpu().numpy())
    return np.concatenate(parts).std(axis=0)


def _ci(samples: np.ndarray) -> str:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return f"[{lo:+.4f}, {hi:+.4f}]"


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (the settings' own check does not run on these overrides)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least 3 for the quality bar)")
    parser.add_argument("--epochs", type=_positive, help="maximum epochs (default: the profile's)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument(
        "--eval-days",
        type=_positive,
        help="days in the evaluation window (default: the profile's; MovieLens has too few recent users for 30)",
    )
    parser.add_argument("--ranker-days", type=_positive, help="days in the ranker's window (default: the profile's)")
    args = parser.parse_args()
    settings = load_settings().with_overrides(warehouse_root=args.warehouse.resolve())
    overrides = {"epochs": args.epochs, "eval_days": args.eval_days, "ranker_days": args.ranker_days}
    chosen = {key: value for key, value in overrides.items() if value is not None}
    if chosen:
        settings = settings.with_overrides(training=replace(settings.training, **chosen))
    seeds = [int(s) for s in args.seeds.split(",")]
    device, mixed = trainer.pick_device(settings.training.device)
    last_day = run.last_data_day(settings)
    work = Path(tempfile.mkdtemp(prefix="nightrec-quality-"))
    table: dict[str, list[dict[str, float]]] = {}
    exposures: dict[str, list[np.ndarray]] = {}  # model -> per seed, aligned P(k > c) of the real exposures
    per_user: dict[str, list[dict[str, np.ndarray]]] = {}
    rooms, spreads = [], []  # GNOLR per seed: order_room per boundary, cosine spread per sub-embedding
    categories = None
    levels = 0
    started = time.time()
    try:
        for seed in seeds:
            prepared = run.prepare(settings, last_day, seed, work / f"seed-{seed}")
            levels = prepared.levels
            trained = {}
            for name, recommended in run.baseline_recommendations(prepared).items():
                table.setdefault(name, []).append(run.retrieval_metrics(prepared, recommended))
                per_user.setdefault(name, []).append(metrics.per_user_ranking(recommended, prepared.relevant, run.K))
            for kind in settings.training.models:
                outcome = run.train_and_evaluate(kind, prepared, settings, seed, device, mixed)
                trained[kind] = outcome.model
                table.setdefault(kind, []).append(outcome.metrics)
                categories, aligned = _aligned_real(prepared, outcome.exceed)
                exposures.setdefault(kind, []).append(aligned)
                if kind == "gnolr":
                    head = outcome.model.head()
                    rooms.append(ordinal.order_room(head["cut_points"], head["gamma"]))
                    spreads.append(_cosine_spread(outcome.model, prepared, device))
                per_user.setdefault(kind, []).append(
                    metrics.per_user_ranking(outcome.recommended, prepared.relevant, run.K)
                )
            ranked = run.fit_ranker(prepared, settings, trained, seed, device)
            table.setdefault("ranker", []).append(run.retrieval_metrics(prepared, ranked.recommended))
            per_user.setdefault("ranker", []).append(
                metrics.per_user_ranking(ranked.recommended, prepared.relevant, run.K)
            )
            print(f"seed {seed} done after {time.time() - started:.0f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    keys = [
        "auc_c1",
        "auc_c2",
        "auc_c3",
        "auc_sampled_c0",
        "gauc_top",
        "recall@20",
        "ndcg@20",
        "mrr@20",
        "coverage@20",
        "novelty@20",
        "gini_corrected@20",
        "entropy_corrected@20",
        "train_samples_per_s",
    ]
    print(
        f"\nTraining quality on {settings.warehouse_root} ({settings.source}), data through {last_day}, seeds {seeds}"
    )
    split = settings.training
    print(f"evaluation: the last {split.eval_days} days; ranker: the {split.ranker_days} days before; models: earlier")
    print(f"device {device}; mean over seeds (std); AUCs on real exposures; retrieval vs next-period purchases")
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, rows in table.items():
        frame = pd.DataFrame(rows)
        cells = []
        for key in keys:
            if key not in frame or frame[key].isna().all():
                cells.append("-")
            elif key == "train_samples_per_s":
                cells.append(f"{frame[key].mean():,.0f}")
            else:
                cells.append(f"{frame[key].mean():.4f} ({frame[key].std(ddof=0):.4f})")
        print(f"| {name} | " + " | ".join(cells) + " |")

    rng = np.random.default_rng(0)
    assert categories is not None
    n = len(categories)
    resamples = [rng.integers(0, n, n) for _ in range(args.bootstrap)]
    print("\nGNOLR minus each ordinal baseline, AUC per boundary on real exposures: mean [95% paired bootstrap]")
    for other in ("bce", "esmm", "nolr"):
        if other not in exposures or "gnolr" not in exposures:
            continue
        for c in range(1, levels):
            labels = categories > c

            def diff(idx: np.ndarray | slice, c: int = c, other: str = other, labels: np.ndarray = labels) -> float:
                return float(
                    np.mean(
                        [
                            metrics.auc(labels[idx], g[idx, c]) - metrics.auc(labels[idx], o[idx, c])
                            for g, o in zip(exposures["gnolr"], exposures[other], strict=True)
                        ]
                    )
                )

            samples = np.array([diff(idx) for idx in resamples])
            print(f"  gnolr - {other:<5} c{c}: {diff(slice(None)):+.4f} {_ci(samples)}")

    if rooms:
        counts = np.bincount(categories, minlength=levels + 1)[1:]
        print("\nGNOLR's room per boundary and its sub-embeddings' cosine spread (mean over seeds)")
        by_level = ", ".join(f"k={k} {n:,}" for k, n in enumerate(counts, 1))
        print(f"  real evaluation exposures by highest level: {by_level}")
        room, spread = np.mean(rooms, axis=0), np.mean(spreads, axis=0)
        print(f"  cosine std on those exposures, sub-embedding 0: {spread[0]:.3f}")
        for c in range(1, levels):
            print(f"  boundary c{c}: room (a_c - a_c-1) / gamma {room[c - 1]:.3f}, cosine std {spread[c]:.3f}")

    users = len(per_user["own_history"][0]["users"])
    user_resamples = [rng.integers(0, users, users) for _ in range(args.bootstrap)]
    print("\nRanker (the published blend) minus each retrieval baseline: mean [95% paired bootstrap]")
    for other in ("popularity", "covisitation", "own_history", *[m for m in ("two_tower", "gnolr") if m in per_user]):
        for metric in ("recall", "ndcg"):
            a = np.mean([p[metric] for p in per_user["ranker"]], axis=0)
            b = np.mean([p[metric] for p in per_user[other]], axis=0)
            samples = np.array([np.mean(a[idx] - b[idx]) for idx in user_resamples])
            print(f"  ranker - {other:<12} {metric}@20: {np.mean(a - b):+.4f} {_ci(samples)}")
    print(f"\n{time.time() - started:.0f}s in all")


if __name__ == "__main__":
    main()
