"""The ranker of the published lists: LightGBM over the night's candidates (spark_jobs/build_candidates.py), trained
on leak-free anchors, judged beside the baselines and the models on the held-out window at two horizons, gated
against its champion and against the best baseline.

Training (nightrec/anchors.py): every training anchor A contributes its candidates with features from before A and
the label = the highest level the user reached on the item in [A, A + horizon) (0 if untouched); users without a
purchase among their candidates teach a ranking objective nothing and are left out. The ranker that is evaluated
learns from the anchors whose label windows end by T, the one that is published from every anchor (label windows end
by S, the day after the last data day). LambdaRank's gain is purchases only by default (ranker.label_gain).

Evaluation, on the candidates of the evaluation anchors (the same kernel, nightrec.ranking.rank_users, as the
published lists): the next 30 days' purchases from the fixed cut-off T, and the next 7 days' with the lists refreshed
(anchors T, T + refresh, ... inside the held-out window; every night in the benchmark). Every list is scored on the
same users: the ranker, each baseline (popularity, own history, co-visitation) and each model source's own list.

Decision: a new ranker replaces its champion unless it is worse on this window's NDCG@20 (30 days) beyond
training.champion_tolerance; the night publishes the ranker's lists only if that ranker beats the best baseline's
NDCG@20 on the same window, else that baseline's list (with popular fill) and says why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nightrec import ranking
from nightrec.adapters import load_adapter
from nightrec.anchors import AnchorPlan, Window, plan_for
from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.storage import read_json
from nightrec.warehouse import Warehouse, champion
from training import metrics, registry

log = logging.getLogger(__name__)

K = 20
GATE_METRIC = "ndcg@20"
# Candidates scored at once while judging: each list's scorer works on a slice of users of about this many candidates.
# Scoring a whole evaluation anchor at once was the ranker's peak (2.6 GiB at 10x the users, growing with them).
JUDGE_BATCH_ROWS = 250_000
HORIZONS = ("30d", "7d")
EVALUATED_FILE = ranking.EVALUATED_BOOSTER
SERVED_FILE = ranking.SERVED_BOOSTER


@dataclass
class Behaviour:
    """The pair-days of the warehouse (user_item_features): labels, purchases and history statistics per anchor."""

    pairs: pd.DataFrame  # user_id, item_id, ds, max_level_reached
    top_level: int

    @classmethod
    def load(cls, settings: Settings) -> Behaviour:
        path = Warehouse.of(settings).mart_export("user_item_features")
        if not any(path.glob("*.parquet")):
            raise InputError(f"No export of mart 'user_item_features' under {path}: run the marts first")
        frame = pq.read_table(path, columns=["user_id", "item_id", "ds", "max_level_reached"]).to_pandas()
        frame["ds"] = pd.to_datetime(frame["ds"]).dt.date
        return cls(frame, load_adapter(settings.source).max_level)

    def window(self, w: Window) -> pd.DataFrame:
        return self.pairs[(self.pairs["ds"] >= w.day) & (self.pairs["ds"] < w.end)]

    def labels(self, w: Window) -> pd.DataFrame:
        """user_id, item_id, label: the highest level reached on the pair in the window."""
        return (
            self.window(w)
            .groupby(["user_id", "item_id"], as_index=False)["max_level_reached"]
            .max()
            .rename(columns={"max_level_reached": "label"})
        )

    def purchases(self, w: Window) -> dict[str, set[str]]:
        bought = self.window(w)
        bought = bought[bought["max_level_reached"] == self.top_level]
        return {str(u): set(g.astype(str)) for u, g in bought.groupby("user_id")["item_id"]}

    def before(self, day: date) -> tuple[list[str], dict[str, int], int]:
        """The catalogue (items seen before `day`), distinct users per item and the number of users: what coverage,
        novelty and exposure fairness are measured against."""
        seen = self.pairs[self.pairs["ds"] < day]
        return (
            sorted(seen["item_id"].astype(str).unique()),
            seen.groupby("item_id")["user_id"].nunique().to_dict(),
            int(seen["user_id"].nunique()),
        )


@dataclass
class Candidates:
    """One night's candidate tables (anchor=<day>/ under `root`)."""

    root: Path

    def table(self, day: date, users: set[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """The candidates of anchor ``day`` (``columns`` of them, all by default); only the rows of ``users`` when
        given, read a column at a time and ordered by user (stably, so a user's rows keep the file's order).

        Training and judging need a window's buyers only. An anchor's file is small on disk but dense in memory (at
        100x one evaluation anchor holds 7.9 million candidates x 89 columns, about 5.6 GB decoded), and reading it
        whole beside the held-out set took the ranker's process past 24 GiB; a column at a time, only the kept rows
        of each stay. They come in user order because the one `take` that keeps them can order them too, and then
        `ranking.group_by_user` has nothing to sort (its own sorted copy cost as much memory again; decision 45).
        """
        path = self.root / f"anchor={day.isoformat()}"
        if not path.is_dir():
            raise InputError(f"No candidates for anchor {day} under {self.root}: run spark_jobs/build_candidates.py")
        if users is None:
            return pq.read_table(path, columns=columns)
        files = pq.ParquetDataset(path)
        ids = files.read(columns=["user_id"]).column("user_id")
        # a hash lookup: np.isin on object arrays compared every row with every user (10x the data took 100x the time)
        kept = pa.array(np.flatnonzero(pc.is_in(ids, value_set=pa.array(sorted(users), pa.string())).to_numpy()))
        rows = kept.take(pc.sort_indices(ids.take(kept)))  # Arrow's sort is stable
        names = columns or files.schema.names
        return pa.table({name: files.read(columns=[name]).column(name).take(rows) for name in names})

    def summary(self) -> dict[str, Any]:
        return read_json(self.root / "_SUCCESS")


@dataclass
class TrainingSet:
    features: np.ndarray  # rows x features, float32
    labels: np.ndarray  # the highest level reached in the label window
    groups: np.ndarray  # rows per (anchor, user), in row order
    names: list[str]
    anchors: list[str]
    positives: int

    def describe(self) -> dict[str, Any]:
        """What the report records of the set (its counts), so the set itself need not outlive its fit."""
        return {
            "anchors": self.anchors,
            "rows": len(self.labels),
            "buyers": len(self.groups),
            "purchases": self.positives,
        }


def training_set(
    candidates: Candidates, behaviour: Behaviour, windows: tuple[Window, ...], names: list[str]
) -> TrainingSet:
    """The candidates of the given training anchors with their labels; users without a purchase among their
    candidates are left out (a ranking objective learns nothing from them)."""
    parts, labels, groups, used = [], [], [], []
    for w in windows:
        # the keys decide which rows stay and in what order; the features (float64 columns) are then taken a column
        # at a time as float32, never as a whole table in pandas (which the merge, filter and sort each copied)
        table = candidates.table(w.day, set(behaviour.purchases(w)), ["user_id", "item_id", *names])
        keys = table.select(["user_id", "item_id"]).to_pandas()
        keys["row"] = np.arange(len(keys))
        keys = keys.merge(behaviour.labels(w), on=["user_id", "item_id"], how="left")
        keys["label"] = keys["label"].fillna(0).astype(np.int64)
        bought = keys.groupby("user_id")["label"].transform("max") == behaviour.top_level
        keys = keys[bought].sort_values(["user_id", "item_id"], kind="stable")
        if keys.empty:
            continue
        rows = keys["row"].to_numpy()
        features = np.empty((len(rows), len(names)), np.float32)
        for j, name in enumerate(names):
            features[:, j] = table.column(name).to_numpy()[rows]
        parts.append(features)
        labels.append(keys["label"].to_numpy())
        groups.append(keys.groupby("user_id", sort=False).size().to_numpy())
        used.append(str(w.day))
    if not parts:
        raise InputError(f"No training anchor has a buyer with a purchase among their candidates ({windows})")
    y = np.concatenate(labels)
    return TrainingSet(np.vstack(parts), y, np.concatenate(groups), names, used, int((y == behaviour.top_level).sum()))


def lgb_params(settings: Settings, top_level: int, seed: int) -> dict[str, Any]:
    r = settings.ranker
    params: dict[str, Any] = {
        "objective": r.objective,
        "learning_rate": r.learning_rate,
        "num_leaves": r.num_leaves,
        "min_data_in_leaf": r.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "deterministic": True,
        "num_threads": 2,
        "seed": seed,
        "verbose": -1,
    }
    if r.objective == "lambdarank":
        params["label_gain"] = list(r.label_gain) or [0.0] * top_level + [1.0]  # purchases only
        params["lambdarank_truncation_level"] = K
    return params


def fit(settings: Settings, data: TrainingSet, top_level: int, seed: int) -> Any:
    """A LightGBM booster on the training set (binary and XE-NDCG learn purchase or not)."""
    import lightgbm as lgb

    params = lgb_params(settings, top_level, seed)
    label = data.labels if params["objective"] == "lambdarank" else (data.labels == top_level).astype(np.int64)
    dataset = lgb.Dataset(
        data.features,
        label=label,
        group=None if params["objective"] == "binary" else data.groups,
        feature_name=data.names,
        free_raw_data=True,
    )
    # the binned training data the booster keeps is of no use once trained (at 100x it is rows x features bytes)
    return lgb.train(params, dataset, num_boost_round=settings.ranker.rounds).free_dataset()


@dataclass
class Judged:
    """Every list's metrics per horizon, and the per-user figures behind them (for paired bootstraps)."""

    table: dict[str, dict[str, dict[str, float]]]  # list -> horizon -> metric -> value
    per_user: dict[str, dict[str, dict[str, np.ndarray]]]  # list -> horizon -> recall/ndcg/keys


def judge(candidates: Candidates, behaviour: Behaviour, plan: AnchorPlan, scorers: dict[str, ranking.Scorer]) -> Judged:
    """Score every list at the evaluation anchors: 30 days from T, and 7 days from each refresh anchor."""
    table: dict[str, dict[str, dict[str, float]]] = {name: {} for name in scorers}
    per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in scorers}
    for horizon, windows in (("30d", (plan.eval_long,)), ("7d", plan.eval_short)):
        collected: dict[str, list[tuple[dict[str, np.ndarray], dict[str, float]]]] = {name: [] for name in scorers}
        for w in windows:
            relevant = behaviour.purchases(w)
            catalogue, item_users, n_users = behaviour.before(w.day)
            grouped = _grouped(candidates, w.day, set(relevant))
            for name, scorer in scorers.items():
                lists = ranked_lists(grouped, scorer)
                users = metrics.per_user_ranking(lists, relevant, K)
                users["keys"] = np.array([f"{w.day}|{u}" for u in users["users"]], dtype=object)
                fairness = metrics.exposure_fairness(lists, catalogue, K)
                shape = {
                    f"coverage@{K}": metrics.coverage(lists, len(catalogue), K),
                    f"novelty@{K}": metrics.novelty(lists, item_users, n_users, K),
                    f"gini_corrected@{K}": fairness.gini_corrected,
                    f"entropy_corrected@{K}": fairness.entropy_corrected,
                }
                collected[name].append((users, shape))
            # gone before the next anchor's are read: two anchors' candidates at once were the stage's peak at 100x
            del grouped
        for name, parts in collected.items():
            if not parts:
                continue
            joined = {key: np.concatenate([p[0][key] for p in parts]) for key in ("recall", "ndcg", "rr", "keys")}
            per_user[name][horizon] = joined
            shape_mean = {key: float(np.mean([p[1][key] for p in parts])) for key in parts[0][1]}
            table[name][horizon] = {
                "users": len(joined["keys"]),
                "anchors": len(parts),
                f"recall@{K}": float(joined["recall"].mean()) if len(joined["keys"]) else float("nan"),
                f"ndcg@{K}": float(joined["ndcg"].mean()) if len(joined["keys"]) else float("nan"),
                f"mrr@{K}": float(joined["rr"].mean()) if len(joined["keys"]) else float("nan"),
                **shape_mean,
            }
    return Judged(table, per_user)


def _grouped(candidates: Candidates, day: date, users: set[str]) -> pa.Table:
    return ranking.group_by_user(candidates.table(day, users))


def ranked_lists(grouped: pa.Table, scorer: ranking.Scorer) -> dict[str, list[str]]:
    """Each user's top-K under ``scorer`` (user -> item ids), a slice of users at a time: how every judged list is
    made (the nightly judging and the quality benchmark alike)."""
    return ranking.lists_of(ranking.rank_in_batches(grouped, scorer, K, JUDGE_BATCH_ROWS))


def list_scorers(booster_text: str | None, sources: tuple[str, ...]) -> dict[str, ranking.Scorer]:
    """The ranker (when given), the baselines, each model source's own list and the segment-popular list (the list
    of a user without a personal one: their segment's items, then the popular fill)."""
    scorers: dict[str, ranking.Scorer] = {}
    if booster_text is not None:
        scorers["ranker"] = ranking.BoosterScorer(booster_text)
    scorers.update({name: ranking.baseline_scorer(name) for name in ranking.BASELINES})
    scorers.update({m: ranking.SourceScorer(m, (m,)) for m in ranking.MODEL_SOURCES if m in sources})
    if "segment_popular" in sources:
        scorers["segment_popular"] = ranking.SourceScorer("segment_popular", ("segment_popular", "popular_30d"))
    return scorers


def best_baseline(table: dict[str, dict[str, dict[str, float]]], horizon: str = "30d") -> str:
    """The baseline with the highest NDCG@20 at `horizon` (ties: the simpler, in BASELINES' order)."""
    return max(
        ranking.BASELINES, key=lambda name: (table[name][horizon][GATE_METRIC], -list(ranking.BASELINES).index(name))
    )


def cold_start(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, str]:
    """The list of a user without a personal one: the segment-popular list where it beats the shop-wide popular list
    on the held-out window (NDCG@20, 30 days), else the popular list. Judged every night like the published lists:
    on Tmall the segments' items measured worse than popularity (docs/decisions.md, decision 21)."""
    if "segment_popular" not in table:
        return {"cold_start": "popularity", "cold_start_reason": "no segment-popular list"}
    segment, popular = table["segment_popular"]["30d"][GATE_METRIC], table["popularity"]["30d"][GATE_METRIC]
    if segment > popular:
        return {
            "cold_start": "segment_popular",
            "cold_start_reason": f"it beats popularity ({segment:.4f} > {popular:.4f})",
        }
    return {
        "cold_start": "popularity",
        "cold_start_reason": f"segment_popular does not beat it ({segment:.4f} <= {popular:.4f})",
    }


def decide(table: dict[str, dict[str, dict[str, float]]], ranker_version: str | None) -> dict[str, Any]:
    """What the night publishes: the ranker's lists if they beat the best baseline on the window, else its list; and
    the list of users without one (:func:`cold_start`)."""
    baseline = best_baseline(table)
    floor = table[baseline]["30d"][GATE_METRIC]
    if ranker_version is None or "ranker" not in table:
        return {
            "lists": baseline,
            "reason": "no ranker",
            "baseline": baseline,
            "baseline_value": floor,
            **cold_start(table),
        }
    value = table["ranker"]["30d"][GATE_METRIC]
    beats = value > floor
    return {
        **cold_start(table),
        "lists": "ranker" if beats else baseline,
        "ranker_version": ranker_version,
        "metric": GATE_METRIC,
        "ranker_value": value,
        "baseline": baseline,
        "baseline_value": floor,
        "reason": (
            f"the ranker beats {baseline} on the held-out window"
            if beats
            else f"the ranker does not beat {baseline} on the held-out window ({value:.4f} <= {floor:.4f}): "
            f"{baseline}'s list is published"
        ),
    }


def champion_booster(settings: Settings, names: list[str], version: str) -> tuple[str | None, str | None, str]:
    """(version, evaluated booster text) of the ranker's champion, if it reads the same features, and why not."""
    wh = Warehouse.of(settings)
    pointer = champion(wh, "ranker")
    if pointer is None:
        return None, None, "no champion yet"
    if pointer["version"] == version:  # a rerun of the champion's own night replaces it
        return None, None, f"a rerun of the champion's night {version}"
    directory = wh.model_dir("ranker", pointer["version"])
    path = directory / EVALUATED_FILE
    if not path.is_file():
        return None, None, f"champion {pointer['version']} has no evaluated booster"
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("feature_names") != names:
        return None, None, f"champion {pointer['version']} used other features"
    return pointer["version"], path.read_text(), f"champion {pointer['version']} re-scored on this window"


def run(
    settings: Settings,
    last_day: date,
    seed: int | None = None,
    version: str | None = None,
    plan: AnchorPlan | None = None,
    candidates_root: Path | None = None,
    gate_champions: bool = True,
) -> dict[str, Any]:
    """Train, judge, gate and write the night's ranker; returns the report (also the version's metrics.json).

    :param gate_champions: compare with the champion, move its pointer and decide the night's lists (the nightly
        run); off, the version is written and judged only (the benchmark's seeds).
    """
    import lightgbm as lgb

    started = time.time()
    seed = settings.training.seed if seed is None else seed
    version = version or last_day.isoformat()
    adapter = load_adapter(settings.source)
    plan = plan or plan_for(settings, adapter.history_start, last_day)
    wh = Warehouse.of(settings)
    candidates = Candidates(candidates_root or wh.candidates(last_day))
    behaviour = Behaviour.load(settings)
    names = ranking.feature_names(adapter.max_level, settings.ranker.sources)

    # where the stage's time goes (the report's "phase_seconds"): its judging once grew with users times buyers
    phases: dict[str, float] = {}
    lap = time.perf_counter()

    def done(phase: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        phases[phase] = round(now - lap, 2)
        lap = now

    held_out = training_set(candidates, behaviour, plan.ranker_anchors(plan.evaluation), names)
    done("held_out_set")
    evaluated = fit(settings, held_out, adapter.max_level, seed)
    done("held_out_fit")
    # each set is dropped once fit: the judging's candidates grow with the buyers too and are not held beside it
    held_out_summary = held_out.describe()
    del held_out
    log.info(
        f"ranker: held-out booster on {len(held_out_summary['anchors'])} anchors, {held_out_summary['rows']:,} "
        f"candidates of {held_out_summary['buyers']:,} buyers ({held_out_summary['purchases']:,} purchases)"
    )
    scorers = list_scorers(evaluated.model_to_string(), settings.ranker.sources)
    champion_version, champion_text, why = (None, None, "not gated (benchmark)")
    if gate_champions:
        champion_version, champion_text, why = champion_booster(settings, names, version)
        if champion_text is not None:
            scorers["champion"] = ranking.BoosterScorer(champion_text, name="champion")
    judged = judge(candidates, behaviour, plan, scorers)
    done("judging")
    table = judged.table
    champion_30d = table["champion"]["30d"] if "champion" in table else None
    gate = registry.gate(table["ranker"]["30d"], champion_30d, settings.training.champion_tolerance, why, GATE_METRIC)
    serving = training_set(candidates, behaviour, plan.ranker_anchors(plan.serve), names)
    served = fit(settings, serving, adapter.max_level, seed)
    serving_summary = serving.describe()
    del serving
    done("served")
    chosen = version if gate["publish"] else champion_version
    ranked = table["ranker"] if gate["publish"] or "champion" not in table else table["champion"]
    decision = decide({**table, "ranker": ranked}, chosen) if gate_champions else {}
    table.pop("champion", None)
    report = {
        "version": version,
        "plan": plan.describe(),
        "metrics": table,
        "gate": gate,
        "lists": decision,
        "training": {"held_out": held_out_summary, "served": serving_summary},
        "phase_seconds": phases,
    }
    importance = dict(zip(names, served.feature_importance("gain").tolist(), strict=True))
    path = registry.write_version(
        settings.warehouse_root,
        "ranker",
        version,
        {
            SERVED_FILE: lambda p: served.save_model(str(p)),
            EVALUATED_FILE: lambda p: evaluated.save_model(str(p)),
        },
        report,
        {
            "model": "ranker",
            "version": version,
            "source": settings.source,
            "seed": seed,
            "config": asdict(settings.ranker),
            "params": lgb_params(settings, adapter.max_level, seed),
            "feature_names": names,
            "feature_importance_gain": importance,
            "candidates": str(candidates.root),
            "plan": plan.describe(),
            "lightgbm": lgb.__version__,
            "code_version": registry.code_version(),
        },
    )
    if gate_champions and gate["publish"]:
        registry.set_champion(settings.warehouse_root, "ranker", {"version": version, "metrics": table, "gate": gate})
    report["path"] = str(path)
    report["seconds"] = round(time.time() - started, 1)
    _print_table(table, decision)
    return report


def _print_table(table: dict[str, dict[str, dict[str, float]]], decision: dict[str, Any]) -> None:
    for horizon in HORIZONS:
        cells = [
            f"{name} {row[horizon][f'recall@{K}']:.4f}/{row[horizon][f'ndcg@{K}']:.4f}"
            for name, row in table.items()
            if horizon in row
        ]
        log.info(f"ranker: recall/ndcg@{K}, next {horizon}: " + ", ".join(cells))
    if decision:
        log.info(f"ranker: publishes {decision['lists']}: {decision['reason']}")
