"""Lookalike audiences on demand: a seed expanded over the consumers of ``user_features`` on a day.

The population is every consumer with a ``user_features`` row on day D (active in the 90 days up to D); each is
represented by the mart's numeric columns (counts as log1p) and, where the night's consumer embedding table exists
(``models/consumer_encoder/<D>/``), the encoder's vector beside them: the best representation of decision 20's
benchmark. The seed is checked (``nightrec.seeds``), the expansion is measured on it first (30% hidden, five times:
recall at 1x, 5x and 10x beside random), then the whole seed is expanded (``nightrec.lookalike``).

Saved audiences (``conf/audiences/<source>.yaml``: a list of ``name``, ``seed_sql``, ``size`` and an optional
``description``) are rebuilt every night by the DAG's ``segments.build_audiences`` task (:func:`build_saved`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nightrec.config import PROJECT_ROOT, Settings
from nightrec.errors import ConfigError, InputError
from nightrec.lookalike import MULTIPLES, SHARES, hidden_recall, pu_scores, share_recall, split_seed
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
    and the evaluation (multiple -> (recall of hidden members, a random audience's recall), means over the hides;
    ``at_share``: share of the consumers -> (recall of hidden members, the best any ranking could reach; a random
    audience's recall is the share itself))."""

    day: date
    seed: SeedCheck
    rows: pd.DataFrame
    evaluation: dict[int, tuple[float, float]]
    representation: str = "user_features"
    at_share: dict[float, tuple[float, float]] = field(default_factory=dict)


def build(settings: Settings, seed_ids: Iterable[str], multiple: int, day: date | None = None) -> Audience:
    """Check the seed, measure the expansion on it, then expand the whole seed to ``multiple`` x its size.

    :raises SeedError: the seed cannot be expanded (empty, unknown, more than half the consumers).
    """
    if multiple < 1:
        raise InputError(f"The audience size is a multiple of the seed, at least 1 (got {multiple})")
    day, frame = population(settings, day)
    features, representation = represent(settings, day, frame)
    users = frame["user_id"].astype(str).tolist()
    seed = check_seed(seed_ids, users)
    evaluation: dict[int, tuple[float, float]] = {}
    at_share: dict[float, tuple[float, float]] = {}
    if len(seed.members) >= 2:
        runs, shares = [], []
        for hide in range(HIDES):
            visible, hidden = split_seed(seed.members, np.random.default_rng(hide))
            scores = pu_scores(features, visible)
            runs.append(hidden_recall(scores, visible, hidden))
            shares.append(share_recall(scores, visible, hidden))
        evaluation = {
            m: (float(np.mean([r.recall[m] for r in runs])), float(np.mean([r.random[m] for r in runs])))
            for m in MULTIPLES
        }
        # 10x a large seed can be every consumer: a share of the population says more, beside its ceiling
        at_share = {
            share: (
                float(np.mean([found[share] for found in shares])),
                float(np.mean([r.best_at_share(share) for r in runs])),
            )
            for share in SHARES
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
    return Audience(day, seed, rows, evaluation, representation, at_share)


def represent(settings: Settings, day: date, frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The population's features: ``user_features`` and, where the night's embedding table exists, the consumer
    encoder's vectors beside them (a consumer without a vector gets zeros: the encoder has not seen them)."""
    features, _ = feature_matrix(frame)
    path = Warehouse.of(settings).consumer_embeddings(day)
    if not path.is_file():
        return features, "user_features"
    table = pd.read_parquet(path)
    vectors = pd.Series(list(np.stack(table["embedding"].to_numpy())), index=table["user_id"].astype(str))
    dim = len(vectors.iloc[0]) if len(vectors) else 0
    zero = np.zeros(dim)
    rows = [vectors.get(u, zero) for u in frame["user_id"].astype(str)]
    return np.hstack([features, np.asarray(rows, dtype=np.float64).reshape(len(frame), dim)]), (
        f"user_features + consumer_encoder/{day}"
    )


@dataclass(frozen=True)
class SavedAudience:
    """An audience rebuilt every night: a seed predicate over the analysts' views and a size (multiple of the seed)."""

    name: str
    seed_sql: str
    size: int = 5
    description: str = ""


def audiences_file(source: str) -> Path:
    return PROJECT_ROOT / "conf" / "audiences" / f"{source}.yaml"


def saved_audiences(source: str, path: Path | None = None) -> list[SavedAudience]:
    """The source's saved audiences (none when it has no file).

    :raises ConfigError: the file is not a list of audiences with a unique ``name``, a ``seed_sql`` and a ``size`` of
        at least 1, or names an unknown key.
    """
    path = path or audiences_file(source)
    if not path.is_file():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"Could not parse {path}: {exc}") from exc
    if not isinstance(raw, list):
        raise ConfigError(f"{path} must hold a list of audiences, got {type(raw).__name__}")
    out: list[SavedAudience] = []
    allowed = set(SavedAudience.__dataclass_fields__)
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("seed_sql"):
            raise ConfigError(f"Audience {i + 1} in {path} needs a name and a seed_sql")
        unknown = set(entry) - allowed
        if unknown:
            raise ConfigError(f"Unknown key(s) {sorted(unknown)} in audience {entry['name']!r} of {path}")
        audience = SavedAudience(**entry)
        if not isinstance(audience.size, int) or audience.size < 1:
            raise ConfigError(f"Audience {audience.name!r} in {path}: size must be a whole multiple >= 1")
        if audience.name in {a.name for a in out}:
            raise ConfigError(f"Audience name {audience.name!r} appears twice in {path}")
        out.append(audience)
    return out


AUDIENCE_COLUMNS = ("audience", "user_id", "score", "rank", "is_seed")


def build_saved(
    settings: Settings, day: date, audiences: list[SavedAudience], timeout_s: float = 60.0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every saved audience for night ``day``: (their rows, a report per audience). An audience whose seed cannot
    be built or expanded is reported with its error and left out; the others are still built."""
    from nightrec.seeds import predicate_users

    frames, report = [], {}
    for audience in audiences:
        try:
            seed_ids = predicate_users(Warehouse.of(settings).analyst_db(), audience.seed_sql, timeout_s)
            built = build(settings, seed_ids, audience.size, day)
        except InputError as exc:
            report[audience.name] = {"error": str(exc)}
            continue
        rows = built.rows.assign(audience=audience.name)
        frames.append(rows)
        report[audience.name] = {
            "seed": len(built.seed.members),
            "unknown": len(built.seed.unknown),
            "expanded": int((~rows["is_seed"]).sum()),
            "size": audience.size,
            "representation": built.representation,
            "evaluation": {str(m): {"recall": r, "random": c} for m, (r, c) in built.evaluation.items()},
            "at_share": {str(share): {"recall": r, "best": b} for share, (r, b) in built.at_share.items()},
        }
    empty = pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in zip(AUDIENCE_COLUMNS, ("str", "str", "float64", "Int64", "bool"), strict=True)
        }
    )
    rows = pd.concat(frames, ignore_index=True) if frames else empty
    return rows[list(AUDIENCE_COLUMNS)], report
