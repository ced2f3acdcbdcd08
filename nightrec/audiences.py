"""Lookalike audiences on demand: a seed expanded over the consumers of ``user_features`` on a day.

The population is every consumer with a ``user_features`` row on day D (active in the 90 days up to D); each is
represented by the mart's numeric columns (counts as log1p). The seed is checked (``nightrec.seeds``), the
expansion is measured on it first (30% hidden, five times: recall at 1x, 5x and 10x beside random), then the whole
seed is expanded (``nightrec.lookalike``). The consumer encoder's embedding joins the representation once the nightly
run writes it (issue #23).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.lookalike import MULTIPLES, hidden_recall, pu_scores, split_seed
from nightrec.seeds import SeedCheck, check_seed
from nightrec.warehouse import Warehouse

HIDES = 5  # random hides the evaluation averages over


def population(settings: Settings, day: date | None = None) -> tuple[date, pd.DataFrame]:
    """(D, the ``user_features`` rows of day D sorted by user); D defaults to the mart's last day."""
    import duckdb

    files = Warehouse.of(settings).mart_export("user_features") / "*.parquet"
    try:
        if day is None:
            day = duckdb.sql(f"select max(ds) from read_parquet('{files}')").fetchall()[0][0]
        frame = duckdb.sql(f"select * from read_parquet('{files}') where ds = ? order by user_id", params=[day]).df()
    except duckdb.IOException as exc:
        raise InputError(f"No user_features export under {files.parent}: run the nightly DAG first") from exc
    if frame.empty:
        raise InputError(f"user_features has no consumer on {day} (under {files.parent})")
    return day, frame.reset_index(drop=True)


def feature_matrix(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The mart's numeric columns, counts (``n_*``) as log1p, missing values as 0 (a rate without events)."""
    columns = [
        c for c in frame.columns if c not in {"user_id", "ds", "feature_ts"} and pd.api.types.is_numeric_dtype(frame[c])
    ]
    values = frame[columns].astype("float64").fillna(0.0)
    for c in columns:
        if c.startswith("n_"):
            values[c] = np.log1p(values[c].clip(lower=0))
    return values.to_numpy(), columns


@dataclass(frozen=True)
class Audience:
    """An expanded seed: ``rows`` (user_id, score, rank, is_seed; rank 1.. outside the seed, none for its members)
    and the evaluation (multiple -> (recall of hidden members, a random audience's recall), means over the hides)."""

    day: date
    seed: SeedCheck
    rows: pd.DataFrame
    evaluation: dict[int, tuple[float, float]]


def build(settings: Settings, seed_ids: Iterable[str], multiple: int, day: date | None = None) -> Audience:
    """Check the seed, measure the expansion on it, then expand the whole seed to ``multiple`` x its size.

    :raises SeedError: the seed cannot be expanded (empty, unknown, more than half the consumers).
    """
    if multiple < 1:
        raise InputError(f"The audience size is a multiple of the seed, at least 1 (got {multiple})")
    day, frame = population(settings, day)
    features, _ = feature_matrix(frame)
    users = frame["user_id"].astype(str).tolist()
    seed = check_seed(seed_ids, users)
    evaluation: dict[int, tuple[float, float]] = {}
    if len(seed.members) >= 2:
        runs = []
        for hide in range(HIDES):
            visible, hidden = split_seed(seed.members, np.random.default_rng(hide))
            runs.append(hidden_recall(pu_scores(features, visible), visible, hidden))
        evaluation = {
            m: (float(np.mean([r.recall[m] for r in runs])), float(np.mean([r.random[m] for r in runs])))
            for m in MULTIPLES
        }
    scores = pu_scores(features, seed.members)
    in_seed = np.zeros(len(users), dtype=bool)
    in_seed[seed.members] = True
    outside = np.flatnonzero(~in_seed)
    ranked = outside[np.lexsort((outside, -scores[outside]))][: multiple * len(seed.members)]
    chosen = np.concatenate([seed.members, ranked])
    rows = pd.DataFrame(
        {
            "user_id": [users[i] for i in chosen],
            "score": scores[chosen],
            "rank": pd.array([None] * len(seed.members) + list(range(1, len(ranked) + 1)), dtype="Int64"),
            "is_seed": in_seed[chosen],
        }
    )
    return Audience(day, seed, rows, evaluation)
