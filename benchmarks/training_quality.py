"""List and model quality on the real data, over several seeds, with paired-bootstrap 95% intervals: the lists the
nightly run publishes against the baselines a shop could run, at both horizons. A benchmark, not a CI gate.

Needs a built warehouse whose marts are exported and whose Feast repository is applied (`make demo` builds
./warehouse; `nightrec bootstrap --end <last day>` is enough). It runs the product's own pipeline for the warehouse's
last data day E, once per seed, under a scratch version of the models and candidates (nothing the nightly run
reads is changed): the embedding models (training/run.py), the candidates of every anchor (spark_jobs/
build_candidates.py, a local Spark session), the ranker (training/ranker.py) and the kernel the published lists
come from (nightrec/ranking.py). The 7-day horizon refreshes the lists every night of the held-out window (the
nightly report refreshes weekly). Then it prints:

- the full table: every list (the published one, the ranker, the ranker without any model feature, each baseline,
  each model source; with the segment_popular source also the segment-popular list and the ranker without that
  source's features) x every metric at both horizons, mean (standard deviation) over the seeds;
- the published lists and the ranker minus the best baseline of each horizon (and minus every other list):
  Recall@20 and NDCG@20, mean over seeds with a paired bootstrap over users (each replicate resamples users; a
  user's refreshed nights stay together; the same resample for both sides and every seed);
- GNOLR against its ordinal baselines, both with our heads (a scale and a learned bias per head) and with the
  paper's (sigmoid(cos), no scale, no bias): AUC per level boundary on real exposures, with intervals;
- the seconds each stage took (a nightly run trains the models and the ranker once: these are its figures).

    python benchmarks/training_quality.py --warehouse warehouse --seeds 0,1,2 [--json quality.json]
    NIGHTREC_SOURCE=hm python benchmarks/training_quality.py --warehouse <an H&M warehouse>

`--select` first compares the ranker's objectives and label gains, then its leaves per tree and boosting rounds, on
validation (cross-validation over the training anchors whose labels end before the held-out window), and prints both
tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec import ranking
from nightrec.adapters import load_adapter
from nightrec.anchors import AnchorPlan, plan_for
from nightrec.config import ORDINAL_KINDS, PROJECT_ROOT, Settings, load_settings
from nightrec.warehouse import Warehouse
from training import data, metrics, ranker, run, trainer

ORDINAL_COMPARISON = ORDINAL_KINDS  # GNOLR first, then its baselines
LIST_KEYS = ("recall@20", "ndcg@20", "mrr@20", "coverage@20", "novelty@20", "gini_corrected@20", "entropy_corrected@20")
MODEL_FEATURES = ("two_tower", "gnolr")


def _ci(samples: np.ndarray) -> str:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return f"[{lo:+.4f}, {hi:+.4f}]"


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (the settings' own check does not run on these overrides)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE of a ranker setting, the value parsed as YAML (numbers, lists, words)."""
    import yaml

    key, _, value = text.partition("=")
    parsed = yaml.safe_load(value)
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def _aligned_real(prepared: run.Prepared, exceed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real evaluation exposures sorted by (user, item, day): the same rows in the same order for every seed."""
    frame = data.read_all(prepared.evaluation, ["user_id", "item_id", "ds", "category"])
    frame["row"] = np.arange(len(frame))
    real = frame[frame["category"] > 0].sort_values(["user_id", "item_id", "ds"], kind="stable")
    return real["category"].to_numpy(), exceed[real["row"].to_numpy()]


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.time()
        out = fn()
        self.seconds.setdefault(name, []).append(time.time() - t0)
        return out


def without_models(names: list[str]) -> list[str]:
    """The ranker's features less every model column (the ablation: what the embedding models add)."""
    return [n for n in names if not any(n.endswith(f"__{m}") or n.startswith(f"{m}__") for m in MODEL_FEATURES)]


def without_segments(names: list[str]) -> list[str]:
    """The ranker's features less the segment-popular source's rank and score (what the segments add as features;
    the items the source proposes stay candidates)."""
    return [n for n in names if not n.endswith("__segment_popular")]


def judge_seed(
    settings: Settings, plan: AnchorPlan, candidates: ranker.Candidates, behaviour: ranker.Behaviour, seed: int
) -> tuple[ranker.Judged, dict[str, Any]]:
    """Train the evaluated ranker (and the ablation) on the anchors before T and judge every list."""
    levels = behaviour.top_level
    names = ranking.feature_names(levels, settings.ranker.sources)
    anchors = plan.ranker_anchors(plan.evaluation)
    full = ranker.fit(settings, ranker.training_set(candidates, behaviour, anchors, names), levels, seed)
    reduced_names = without_models(names)
    reduced = ranker.fit(settings, ranker.training_set(candidates, behaviour, anchors, reduced_names), levels, seed)
    scorers = ranker.list_scorers(full.model_to_string(), settings.ranker.sources)
    scorers["ranker_no_models"] = ranking.BoosterScorer(reduced.model_to_string(), name="ranker_no_models")
    if "segment_popular" in settings.ranker.sources:
        plain = without_segments(names)
        no_segments = ranker.fit(settings, ranker.training_set(candidates, behaviour, anchors, plain), levels, seed)
        scorers["ranker_no_segments"] = ranking.BoosterScorer(no_segments.model_to_string(), name="ranker_no_segments")
    judged = ranker.judge(candidates, behaviour, plan, scorers)
    decision = ranker.decide(judged.table, "benchmark")
    published = decision["lists"]
    judged.table["published"] = judged.table[published]
    judged.per_user["published"] = judged.per_user[published]
    importance = dict(zip(names, full.feature_importance("gain").tolist(), strict=True))
    return judged, {"decision": decision, "importance": importance}


def _validation_folds(plan: AnchorPlan) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The held-out ranker's training anchors (all before T) and four folds of them, every fourth anchor each."""
    anchors = plan.ranker_anchors(plan.evaluation)
    return anchors, [anchors[f::4] for f in range(min(4, len(anchors)))]


def _fold_metrics(
    candidates: ranker.Candidates, behaviour: ranker.Behaviour, fold: tuple[Any, ...], scorer: ranking.Scorer
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-user Recall@20 and NDCG@20 of the scorer's lists at the fold's anchors, against their label windows."""
    recall, ndcg = [], []
    for w in fold:
        relevant = behaviour.purchases(w)
        grouped = ranker._grouped(candidates, w.day, set(relevant))
        users = metrics.per_user_ranking(ranker.ranked_lists(grouped, scorer), relevant, 20)
        recall.append(users["recall"])
        ndcg.append(users["ndcg"])
    return recall, ndcg


def select_objective(settings: Settings, plan: AnchorPlan, candidates: ranker.Candidates, behaviour: ranker.Behaviour):
    """Objective and label gain on validation, by cross-validation over the held-out anchors (all before T): each fold
    leaves every fourth anchor out, learns on the others and judges the left-out anchors' lists against their label
    windows' purchases. Anchors a week apart have disjoint label windows, and each anchor's features come from
    before it, so a fold never sees the purchases it is judged on."""
    levels = behaviour.top_level
    names = ranking.feature_names(levels, settings.ranker.sources)
    anchors, folds = _validation_folds(plan)
    graded = tuple(float(2**lv - 1) for lv in range(levels + 1))
    configs = {
        "lambdarank, purchases only": {"objective": "lambdarank", "label_gain": ()},
        "lambdarank, graded by level": {"objective": "lambdarank", "label_gain": graded},
        "rank_xendcg (purchase)": {"objective": "rank_xendcg", "label_gain": ()},
        "binary (purchase)": {"objective": "binary", "label_gain": ()},
    }
    print(
        f"\nObjective on validation: {len(folds)}-fold over {len(anchors)} anchors before T (each fold judged on its "
        "left-out anchors' next 7 days)"
    )
    print("| objective | recall@20 | ndcg@20 | buyer-weeks |")
    print("|---|---|---|---|")
    results = {}
    for label, change in configs.items():
        chosen = settings.with_overrides(ranker=replace(settings.ranker, **change))
        recall, ndcg = [], []
        for fold in folds:
            learn = tuple(w for w in anchors if w not in fold)
            booster = ranker.fit(chosen, ranker.training_set(candidates, behaviour, learn, names), levels, 0)
            r, n = _fold_metrics(candidates, behaviour, fold, ranking.BoosterScorer(booster.model_to_string()))
            recall += r
            ndcg += n
        r, n = np.concatenate(recall), np.concatenate(ndcg)
        results[label] = {"recall@20": float(r.mean()), "ndcg@20": float(n.mean()), "users": len(r)}
        print(f"| {label} | {r.mean():.4f} | {n.mean():.4f} | {len(r):,} |")
    return results


CAPACITY_LEAVES = (3, 7, 15)
CAPACITY_ROUNDS = (100, 200, 300, 500, 800)


def select_capacity(settings: Settings, plan: AnchorPlan, candidates: ranker.Candidates, behaviour: ranker.Behaviour):
    """Leaves per tree and boosting rounds on validation, the same folds as the objective's and the settings'
    objective: one booster per leaves and fold, trained for the most rounds and cut at each count (LightGBM's
    first r trees are the booster of r rounds), so the table is the list metric along each training run, the
    ranker's early stopping done on what it is for."""
    levels = behaviour.top_level
    names = ranking.feature_names(levels, settings.ranker.sources)
    anchors, folds = _validation_folds(plan)
    current = (settings.ranker.num_leaves, settings.ranker.rounds)
    print(
        f"\nLeaves and rounds on validation ({settings.ranker.objective}, learning rate "
        f"{settings.ranker.learning_rate}): the same folds; * the settings' ({current[0]} leaves, {current[1]} rounds)"
    )
    print("| leaves | rounds | recall@20 | ndcg@20 |")
    print("|---|---|---|---|")
    results: dict[str, dict[str, float]] = {}
    for leaves in CAPACITY_LEAVES:
        chosen = settings.with_overrides(
            ranker=replace(settings.ranker, num_leaves=leaves, rounds=max(CAPACITY_ROUNDS))
        )
        per_rounds: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {r: ([], []) for r in CAPACITY_ROUNDS}
        for fold in folds:
            learn = tuple(w for w in anchors if w not in fold)
            booster = ranker.fit(chosen, ranker.training_set(candidates, behaviour, learn, names), levels, 0)
            for rounds in CAPACITY_ROUNDS:
                scorer = ranking.BoosterScorer(booster.model_to_string(num_iteration=rounds))
                r, n = _fold_metrics(candidates, behaviour, fold, scorer)
                per_rounds[rounds][0].extend(r)
                per_rounds[rounds][1].extend(n)
        for rounds, (recall, ndcg) in per_rounds.items():
            r, n = np.concatenate(recall), np.concatenate(ndcg)
            results[f"{leaves} leaves, {rounds} rounds"] = {"recall@20": float(r.mean()), "ndcg@20": float(n.mean())}
            mark = " *" if (leaves, rounds) == current else ""
            print(f"| {leaves} | {rounds}{mark} | {r.mean():.4f} | {n.mean():.4f} |")
    best = max(results, key=lambda k: results[k]["ndcg@20"])
    print(f"best NDCG@20 on validation: {best} ({results[best]['ndcg@20']:.4f})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least 3 for the quality bar)")
    parser.add_argument("--epochs", type=_positive, help="maximum epochs (default: the profile's)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--eval-days", type=_positive, help="days in the held-out window (default: the profile's)")
    parser.add_argument("--ranker-days", type=_positive, help="the models' validation days (default: the profile's)")
    parser.add_argument("--no-ordinal", action="store_true", help="skip the GNOLR comparison")
    parser.add_argument(
        "--select",
        action="store_true",
        help="first compare the ranker's objectives, then its leaves and rounds, on validation (the first seed)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--ranker",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ranker setting (repeatable), e.g. --ranker max_anchors=52 --ranker objective=rank_xendcg",
    )
    args = parser.parse_args()
    settings = load_settings().with_overrides(warehouse_root=args.warehouse.resolve())
    overrides = {"epochs": args.epochs, "eval_days": args.eval_days, "ranker_days": args.ranker_days}
    chosen = {key: value for key, value in overrides.items() if value is not None}
    if chosen:
        settings = settings.with_overrides(training=replace(settings.training, **chosen))
    settings = settings.with_overrides(spark=replace(settings.spark, master="local[2]", shuffle_partitions=4))
    if args.ranker:
        settings = settings.with_overrides(ranker=replace(settings.ranker, **dict(_setting(a) for a in args.ranker)))
    seeds = [int(s) for s in args.seeds.split(",")]
    device, mixed = trainer.pick_device(settings.training.device)
    last_day = run.last_data_day(settings)
    adapter = load_adapter(settings.source)
    plan = plan_for(settings, adapter.history_start, last_day, refresh_every_days=1)
    wh = Warehouse.of(settings)
    work = Path(tempfile.mkdtemp(prefix="nightrec-quality-"))
    timer = Timer()
    behaviour = ranker.Behaviour.load(settings)
    judged_by_seed: list[ranker.Judged] = []
    selection: dict[str, Any] = {}
    extras: list[dict[str, Any]] = []
    exposures: dict[str, list[np.ndarray]] = {}
    ordinal_table: dict[str, list[dict[str, float]]] = {}
    categories, levels = None, adapter.max_level
    started = time.time()
    from spark_jobs import build_candidates
    from spark_jobs.common import build_spark

    spark = build_spark(settings, "training-quality")
    try:
        for seed in seeds:
            version = f"_quality-seed{seed}"
            seed_work = work / f"seed-{seed}"
            if not args.no_ordinal:
                prepared = timer(
                    "features", lambda seed=seed, seed_work=seed_work: run.prepare(settings, last_day, seed, seed_work)
                )
                for kind in ORDINAL_COMPARISON:
                    outcome = timer(
                        kind,
                        lambda kind=kind, prepared=prepared, seed=seed: run.train_and_evaluate(
                            kind, prepared, settings, seed, device, mixed
                        ),
                    )
                    ordinal_table.setdefault(kind, []).append(outcome.metrics)
                    categories, aligned = _aligned_real(prepared, outcome.exceed)
                    exposures.setdefault(kind, []).append(aligned)
            timer(
                "models (nightly: two_tower, gnolr, refit, anchor embeddings)",
                lambda seed=seed, version=version, seed_work=seed_work: run.train_models(
                    settings, last_day, seed, version, plan, False, seed_work
                ),
            )
            candidates = ranker.Candidates(work / f"candidates-{seed}")
            timer(
                "candidates (Spark)",
                lambda version=version, candidates=candidates: build_candidates.run(
                    spark, settings, plan, version, candidates.root
                ),
            )
            if args.select and seed == seeds[0]:
                selection = {
                    "objective": select_objective(settings, plan, candidates, behaviour),
                    "capacity": select_capacity(settings, plan, candidates, behaviour),
                }
            judged, extra = timer(
                "ranker (train and judge)",
                lambda seed=seed, candidates=candidates: judge_seed(settings, plan, candidates, behaviour, seed),
            )
            judged_by_seed.append(judged)
            extras.append(extra)
            for kind in MODEL_FEATURES:
                shutil.rmtree(wh.model_dir(kind, version), ignore_errors=True)
            print(f"seed {seed} done after {time.time() - started:.0f}s", flush=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = print_report(settings, last_day, plan, seeds, judged_by_seed, extras, args.bootstrap)
    if not args.no_ordinal:
        report["ordinal"] = print_ordinal(ordinal_table, exposures, categories, levels, args.bootstrap)
    report["seconds"] = {k: float(np.mean(v)) for k, v in timer.seconds.items()}
    report["selection"] = selection
    print("\nSeconds per seed (mean), this machine:")
    for name, values in timer.seconds.items():
        print(f"  {name}: {np.mean(values):.1f}")
    print(f"\n{time.time() - started:.0f}s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


def print_report(
    settings: Settings,
    last_day: Any,
    plan: AnchorPlan,
    seeds: list[int],
    judged: list[ranker.Judged],
    extras: list[dict[str, Any]],
    replicates: int,
) -> dict[str, Any]:
    print(f"\nList quality on {settings.warehouse_root} ({settings.source}), data through {last_day}, seeds {seeds}")
    print(
        f"held-out window [{plan.evaluation}, {plan.serve}): next 30 days from the cut-off, and next 7 days with "
        f"the lists refreshed every night ({len(plan.eval_short)} nights); purchases; mean over seeds (std)"
    )
    names = list(judged[0].table)
    out: dict[str, Any] = {"table": {}, "differences": {}, "decisions": [e["decision"] for e in extras]}
    for horizon in ranker.HORIZONS:
        users = judged[0].table[names[0]][horizon]["users"]
        print(f"\nNext {horizon} ({users:,} buyer-{'nights' if horizon == '7d' else 'periods'}):")
        print("| list | " + " | ".join(LIST_KEYS) + " |")
        print("|---" * (len(LIST_KEYS) + 1) + "|")
        for name in names:
            frame = pd.DataFrame([j.table[name][horizon] for j in judged])
            out["table"].setdefault(name, {})[horizon] = frame[list(LIST_KEYS)].mean().to_dict()
            cells = [f"{frame[k].mean():.4f} ({frame[k].std(ddof=0):.4f})" for k in LIST_KEYS]
            print(f"| {name} | " + " | ".join(cells) + " |")
            data = f"{settings.source} through {last_day}, next {horizon} ({users:,} buyers), seeds {seeds}"
            for k in ("recall@20", "ndcg@20"):
                if k in LIST_KEYS:
                    record_figure(
                        "quality",
                        f"{name} {k}",
                        round(float(frame[k].mean()), 4),
                        k,
                        data,
                        std=float(frame[k].std(ddof=0)),
                    )
    rng = np.random.default_rng(0)
    for horizon in ranker.HORIZONS:
        keys = judged[0].per_user["ranker"][horizon]["keys"]
        owners = np.array([k.split("|", 1)[1] for k in keys], dtype=object)
        clusters, index = np.unique(owners, return_inverse=True)
        draws = [rng.integers(0, len(clusters), len(clusters)) for _ in range(replicates)]
        table = out["table"]
        best = ranker.best_baseline(table, horizon)
        print(
            f"\nNext {horizon}: minus the best baseline ({best}) and the others, mean over seeds [95% paired bootstrap]"
        )
        pairs = [
            (name, other)
            for name in ("published", "ranker", "ranker_no_models")
            for other in [best, *[n for n in names if n not in (best, name, "published", "ranker_no_models")]]
            if name != other
        ]
        if "segment_popular" in names:  # the fallback list of a user in a segment against the shop-wide one
            pairs.append(("segment_popular", "popularity"))
        for name, other in pairs:
            for metric in ("recall", "ndcg"):
                diff = np.mean(
                    [j.per_user[name][horizon][metric] - j.per_user[other][horizon][metric] for j in judged],
                    axis=0,
                )
                sums, counts = np.bincount(index, diff), np.bincount(index)
                samples = np.array([sums[d].sum() / counts[d].sum() for d in draws])
                label = f"{name} - {other}"
                out["differences"].setdefault(horizon, {})[f"{label} {metric}@20"] = {
                    "mean": float(diff.mean()),
                    "low": float(np.percentile(samples, 2.5)),
                    "high": float(np.percentile(samples, 97.5)),
                }
                print(f"  {label:<40} {metric}@20: {diff.mean():+.4f} {_ci(samples)}")
                if name == "published" and other == best:
                    data = f"{settings.source} through {last_day}, next {horizon}, seeds {seeds}"
                    interval = out["differences"][horizon][f"{label} {metric}@20"]
                    record_figure(
                        "quality",
                        f"{label} {metric}@20",
                        round(interval["mean"], 4),
                        "difference",
                        data,
                        low=interval["low"],
                        high=interval["high"],
                    )
    decisions = [e["decision"]["lists"] for e in extras]
    print(
        f"\nPublished per seed (the night's rule: the ranker if it beats the best baseline's NDCG@20, 30 days): "
        f"{decisions}"
    )
    importance = pd.DataFrame([e["importance"] for e in extras]).mean().sort_values(ascending=False)
    print(
        "Ranker features by gain (mean over seeds), top 15: "
        + ", ".join(f"{n} {v:,.0f}" for n, v in importance.head(15).items())
    )
    out["importance"] = importance.to_dict()
    return out


def print_ordinal(
    table: dict[str, list[dict[str, float]]],
    exposures: dict[str, list[np.ndarray]],
    categories: np.ndarray | None,
    levels: int,
    replicates: int,
) -> dict[str, Any]:
    keys = [f"auc_c{c}" for c in range(1, levels)] + [
        "auc_sampled_c0",
        "gauc_top",
        "recall@20",
        "ndcg@20",
        "train_samples_per_s",
    ]
    print(
        "\nGNOLR and its ordinal baselines (our heads: scale and learned bias; _paper: sigmoid(cos), no scale, no "
        "bias), on the held-out window's real exposures"
    )
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    out: dict[str, Any] = {"table": {}, "differences": {}}
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
        out["table"][name] = {k: float(frame[k].mean()) for k in keys if k in frame}
        print(f"| {name} | " + " | ".join(cells) + " |")
    if categories is None or levels < 2:
        return out
    rng = np.random.default_rng(1)
    n = len(categories)
    resamples = [rng.integers(0, n, n) for _ in range(replicates)]
    print("\nGNOLR minus each baseline, AUC per boundary on real exposures: mean over seeds [95% paired bootstrap]")
    for other in ORDINAL_COMPARISON[1:]:
        for c in range(1, levels):
            labels = categories > c

            def diff(idx: Any, c: int = c, other: str = other, labels: np.ndarray = labels) -> float:
                return float(
                    np.mean(
                        [
                            metrics.auc(labels[idx], g[idx, c]) - metrics.auc(labels[idx], o[idx, c])
                            for g, o in zip(exposures["gnolr"], exposures[other], strict=True)
                        ]
                    )
                )

            samples = np.array([diff(idx) for idx in resamples])
            value = diff(slice(None))
            out["differences"][f"gnolr - {other} c{c}"] = {
                "mean": value,
                "low": float(np.percentile(samples, 2.5)),
                "high": float(np.percentile(samples, 97.5)),
            }
            print(f"  gnolr - {other:<11} c{c}: {value:+.4f} {_ci(samples)}")
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
