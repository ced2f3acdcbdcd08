"""The LightGBM LambdaRank re-ranker over the union of candidates from the retrieval baselines and models.

Candidates for a user at time t: the top `CANDIDATES` items of each source (own history, co-visitation, popularity,
and each retrieval model's embeddings), all computed from exposures before t. Features per (user, item): the rank in
each source (CANDIDATES + 1 when absent), each model's score, the user's history with the item (exposures, highest
level, days since the last one, the decayed own-history score), and the user's and the item's Feast features as of
t (point in time, through t - 1).

Training (no leakage): t = T - ranker_days, candidates from history before t and models trained before t; the label
of a candidate is the highest level the user reached on the item in [t, T) (0 when untouched), so LambdaRank's gains
favour purchases. Evaluation: t = T, the same features, ranked for the users who buy in [T, E].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nightrec.config import Settings
from training import data, retrieval_baselines

CANDIDATES = 50
# Small trees, a slow rate: the ranker window holds ~600 users with a positive candidate. On the Tmall split
# (3-epoch models, seed 0) 31 leaves x 200 rounds at 0.05 gave Recall@20 0.139 (below own history's 0.152);
# 7 leaves x 300 rounds at 0.02 gave 0.159.
LGB_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "learning_rate": 0.02,
    "num_leaves": 7,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "deterministic": True,
    "num_threads": 2,
    "verbose": -1,
}
ROUNDS = 300


@dataclass
class EmbeddingSource:
    """A retrieval model's unified embeddings at one time t: rows of `users`/`items` in the given order."""

    name: str
    users: dict[str, int]
    user_vectors: np.ndarray
    items: list[str]
    item_vectors: np.ndarray

    def top(self, users: list[str], k: int) -> dict[str, list[str]]:
        """The k items with the largest inner product per user (users without a vector are left out); ties by
        item order."""
        known = [u for u in users if u in self.users]
        if not known:
            return {}
        scores = self.user_vectors[[self.users[u] for u in known]] @ self.item_vectors.T
        k = min(k, len(self.items))
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out = {}
        for row, user in enumerate(known):
            cand = part[row]
            out[user] = [self.items[j] for j in cand[np.lexsort((cand, -scores[row, cand]))]]
        return out

    def scores(self, users: pd.Series, items: pd.Series) -> np.ndarray:
        item_index = {item: n for n, item in enumerate(self.items)}
        u = users.map(self.users).to_numpy()
        i = items.map(item_index).to_numpy()
        ok = ~(pd.isna(u) | pd.isna(i))
        out = np.full(len(users), np.nan, np.float32)
        out[ok] = np.einsum(
            "ij,ij->i", self.user_vectors[u[ok].astype(int)], self.item_vectors[i[ok].astype(int)]
        ).astype(np.float32)
        return out


def candidate_lists(
    history: retrieval_baselines.History, users: list[str], models: list[EmbeddingSource]
) -> dict[str, dict[str, list[str]]]:
    lists = {name: fn(history, users, CANDIDATES) for name, fn in retrieval_baselines.BASELINES.items()}
    for model in models:
        lists[model.name] = model.top(users, CANDIDATES)
    return lists


def candidate_frame(
    history: retrieval_baselines.History, users: list[str], models: list[EmbeddingSource]
) -> pd.DataFrame:
    """One row per (user, candidate item) with the rank of the item in every source and each model's score."""
    lists = candidate_lists(history, users, models)
    rows = {(u, i) for source in lists.values() for u, items in source.items() for i in items}
    frame = pd.DataFrame(sorted(rows), columns=["user_id", "item_id"])
    for name, source in lists.items():
        ranks = {(u, i): r + 1 for u, items in source.items() for r, i in enumerate(items)}
        frame[f"rank_{name}"] = [
            ranks.get(key, CANDIDATES + 1) for key in zip(frame["user_id"], frame["item_id"], strict=True)
        ]
    for model in models:
        frame[f"score_{model.name}"] = model.scores(frame["user_id"], frame["item_id"])
    return frame


def history_features(history: retrieval_baselines.History, frame: pd.DataFrame) -> pd.DataFrame:
    per_pair = (
        history.with_recency()
        .groupby(["user_id", "item_id"])
        .agg(
            hist_exposures=("category", "size"),
            hist_max_level=("category", "max"),
            hist_days_since=("age", "min"),
            hist_score=("decayed", "sum"),
        )
    )
    out = frame.merge(per_pair.reset_index(), on=["user_id", "item_id"], how="left")
    out[["hist_exposures", "hist_max_level", "hist_score"]] = out[
        ["hist_exposures", "hist_max_level", "hist_score"]
    ].fillna(0)
    out["hist_days_since"] = out["hist_days_since"].fillna(9999)
    return out


def labels(exposures: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """The highest level each candidate pair reached in the label window (0 when untouched)."""
    best = exposures.groupby(["user_id", "item_id"])["category"].max().rename("label").reset_index()
    return frame.merge(best, on=["user_id", "item_id"], how="left")["label"].fillna(0).astype(int).to_numpy()


def feature_matrix(
    settings: Settings,
    frame: pd.DataFrame,
    at: date,
    columns: tuple[list[str], list[str]],
    work_dir: Path,
    vocabularies: data.Vocabularies,
) -> tuple[np.ndarray, list[str]]:
    """Candidate features plus the Feast user and item features as of `at` (rows in `frame` order)."""
    pairs = frame[["user_id", "item_id"]].assign(category=0, example_ts=data.midnight(at), ds=at)
    files = data.fetch_features(settings, pairs, *vocabularies, work_dir, columns, label=f"ranker candidates at {at}")
    dense = data.read_all(files, ["user_dense", "item_dense"])
    user_dense = np.stack(dense["user_dense"].to_numpy()) if len(dense) else np.zeros((0, len(columns[0]) + 1))
    item_dense = np.stack(dense["item_dense"].to_numpy()) if len(dense) else np.zeros((0, len(columns[1]) + 1))
    own = [c for c in frame.columns if c.startswith(("rank_", "score_", "hist_"))]
    names = (
        own
        + [f"user:{c}" for c in columns[0]]
        + ["user:present"]
        + [f"item:{c}" for c in columns[1]]
        + ["item:present"]
    )
    matrix = np.hstack([frame[own].to_numpy(np.float32), user_dense, item_dense]).astype(np.float32)
    return matrix, names


@dataclass
class RankerOutcome:
    booster: Any
    feature_names: list[str]
    recommended: dict[str, list[str]]
    train_groups: int
    train_rows: int
    eval_frame: pd.DataFrame
    eval_matrix: np.ndarray

    def rank_with(self, booster: Any, k: int) -> dict[str, list[str]]:
        """Top k per evaluation user under another booster (the champion, re-scored on the same candidates)."""
        return rank(self.eval_frame, booster.predict(self.eval_matrix), k)


def rank(frame: pd.DataFrame, scores: np.ndarray, k: int) -> dict[str, list[str]]:
    ordered = frame[["user_id", "item_id"]].assign(score=scores)
    ordered = ordered.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    return {u: g["item_id"].head(k).astype(str).tolist() for u, g in ordered.groupby("user_id", sort=False)}


def train_and_rank(
    settings: Settings,
    train_history: retrieval_baselines.History,
    label_exposures: pd.DataFrame,
    train_models: list[EmbeddingSource],
    eval_history: retrieval_baselines.History,
    eval_users: list[str],
    eval_models: list[EmbeddingSource],
    columns: tuple[list[str], list[str]],
    vocabularies: data.Vocabularies,
    work_dir: Path,
    k: int,
    seed: int,
) -> RankerOutcome:
    """Fit LambdaRank on the ranker window's candidates and rank the evaluation users' candidates."""
    import lightgbm as lgb

    train_users = sorted(label_exposures["user_id"].astype(str).unique())
    frame = history_features(train_history, candidate_frame(train_history, train_users, train_models))
    frame["label"] = labels(label_exposures, frame)
    useful = frame.groupby("user_id")["label"].transform("max") > 0  # a user with no positive candidate teaches nothing
    frame = frame[useful].reset_index(drop=True)
    x, names = feature_matrix(settings, frame, train_history.until, columns, work_dir / "ranker-train", vocabularies)
    groups = frame.groupby("user_id", sort=False).size().to_numpy()  # frame is sorted by user: groups are contiguous
    booster = lgb.train(
        {**LGB_PARAMS, "eval_at": [k], "seed": seed},
        lgb.Dataset(x, label=frame["label"].to_numpy(), group=groups, feature_name=[_safe(n) for n in names]),
        num_boost_round=ROUNDS,
    )
    eval_frame = history_features(eval_history, candidate_frame(eval_history, eval_users, eval_models))
    x_eval, _ = feature_matrix(
        settings, eval_frame, eval_history.until, columns, work_dir / "ranker-eval", vocabularies
    )
    recommended = rank(eval_frame, booster.predict(x_eval), k)
    return RankerOutcome(booster, names, recommended, len(groups), len(frame), eval_frame, x_eval)


def _safe(name: str) -> str:
    """LightGBM rejects some characters in feature names (JSON specials)."""
    return "".join(ch if ch.isalnum() or ch in "_:" else "_" for ch in name).replace(":", "__")
