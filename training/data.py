"""Training data: temporal splits, exposures with sampled negatives, point-in-time features from Feast, batches.

Examples come from the `training_examples` mart (one real exposure per user, item and day, labelled with the highest
level reached: docs/architecture.md, "Exposure and labels"). For every real exposure, `negatives` items the user did not
touch that day are drawn by training popularity as category 0. Features come from Feast's `get_historical_features` (the
`training` service, point in time: an example at D 00:00 sees features through D-1), fetched `feature_chunk_days`
days at a time and written to Parquet, so memory stays bounded by one chunk; training streams those files in
batches.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.config import Settings, TrainingSettings, how_to_set
from nightrec.errors import HistoryTooShort, InputError
from nightrec.warehouse import Warehouse

log = logging.getLogger(__name__)

EXAMPLES_MART = "training_examples"
USER_VIEWS = ("user_features__", "user_sequence__")
ITEM_VIEWS = ("item_features__",)
SEQUENCE_COLUMNS = ("user_sequence__seq_item_ids", "user_sequence__seq_levels", "user_sequence__seq_gap_seconds")
# Item attributes the item tower embeds (canonical names, nightrec/contract.py), read from the dim_items export.
ITEM_ATTRIBUTES = ("category", "subcategory", "colour")
ITEMS_MART = "dim_items"


def midnight(d: date) -> datetime:
    """D 00:00 UTC as a naive timestamp: the time of an example on day D (it sees features through D-1)."""
    return datetime(d.year, d.month, d.day)


@dataclass(frozen=True)
class Split:
    """Day ranges (start inclusive, end exclusive) of one run's temporal split: the models train on `train`, stop
    early on `validation` and are evaluated on `evaluation` (the held-out window [T, E])."""

    train: tuple[date, date]
    validation: tuple[date, date]
    evaluation: tuple[date, date]


def split_for(first_day: date, last_day: date, t: TrainingSettings) -> Split:
    """Evaluate on the last `eval_days` days, validate on the `ranker_days` before, train on the rest."""
    end = last_day + timedelta(days=1)
    eval_start = end - timedelta(days=t.eval_days)
    validation_start = eval_start - timedelta(days=t.ranker_days)
    if validation_start <= first_day:
        raise HistoryTooShort(
            f"Data {first_day}..{last_day} is too short for training.eval_days={t.eval_days} and "
            f"training.ranker_days={t.ranker_days}: no days are left to train on; lower them or deliver more history "
            f"({how_to_set('training.eval_days', 'training.ranker_days')})"
        )
    return Split((first_day, validation_start), (validation_start, eval_start), (eval_start, end))


def load_examples(settings: Settings, start: date, end: date) -> pd.DataFrame:
    """Real exposures with ds in [start, end): user_id, item_id, category (= the level reached), example_ts, ds."""
    path = Warehouse.of(settings).mart_export(EXAMPLES_MART)
    if not any(path.glob("*.parquet")):
        raise InputError(f"No export of mart '{EXAMPLES_MART}' under {path}: run the marts first (`nightrec nightly`)")
    # the days asked for only: reading every day and filtering in pandas held the whole mart (all days, strings as
    # Python objects) once per window
    columns = ["user_id", "item_id", "label", "example_ts", "ds"]
    table = pq.read_table(path, columns=columns, filters=[("ds", ">=", start), ("ds", "<", end)])
    frame = table.to_pandas().rename(columns={"label": "category"})
    frame["category"] = frame["category"].astype(np.int64)
    return frame.sort_values(["ds", "user_id", "item_id"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Vocabulary:
    """Ids seen in training -> indices 1..n; 0 stands for every id the model never saw."""

    ids: tuple[str, ...]

    @classmethod
    def of(cls, values: pd.Series) -> Vocabulary:
        return cls(tuple(sorted(set(values.astype(str)))))

    def __len__(self) -> int:
        return len(self.ids) + 1

    def lookup(self) -> dict[str, int]:
        return {v: i + 1 for i, v in enumerate(self.ids)}

    def index(self, values: pd.Series) -> np.ndarray:
        return values.astype(str).map(self.lookup()).fillna(0).to_numpy(np.int64)


@dataclass(frozen=True)
class ItemAttributes:
    """Each item's values of ITEM_ATTRIBUTES as indices into per-attribute vocabularies (0 = null or a value no
    training item has: its embedding would never be trained). Attributes describe the item, not behaviour, so the
    dim_items snapshot is read whole (no point in time). Items the source has no attributes for get zeros, and a
    source without attribute files (Tmall) gets vocabularies of size 1: the tower adds nothing for them."""

    values: dict[str, tuple[str, ...]]  # attribute -> its known values (index 1..n)
    by_item: dict[str, tuple[int, ...]]  # item id -> one index per attribute (items with at least one value)

    @classmethod
    def load(
        cls, settings: Settings, training_items: Vocabulary, values: dict[str, tuple[str, ...]] | None = None
    ) -> ItemAttributes:
        """The vocabularies of the values training items have (or the given ones: a model's), items indexed."""
        path = Warehouse.of(settings).mart_export(ITEMS_MART)
        if not any(path.glob("*.parquet")):
            raise InputError(f"No export of mart '{ITEMS_MART}' under {path}: run the marts first (`nightrec nightly`)")
        frame = pq.read_table(path, columns=["item_id", *ITEM_ATTRIBUTES]).to_pandas()
        frame["item_id"] = frame["item_id"].astype(str)
        if values is None:
            trained = frame[frame["item_id"].isin(set(training_items.ids))]
            values = {a: tuple(sorted(trained[a].dropna().astype(str).unique())) for a in ITEM_ATTRIBUTES}
        return cls.of(frame, {a: tuple(values.get(a, ())) for a in ITEM_ATTRIBUTES})

    @classmethod
    def of(cls, frame: pd.DataFrame, values: dict[str, tuple[str, ...]]) -> ItemAttributes:
        """Index the items of `frame` (item_id and the attribute columns) with the given vocabularies."""
        columns = []
        for a in ITEM_ATTRIBUTES:
            lookup = {v: i + 1 for i, v in enumerate(values[a])}
            columns.append(frame[a].map(lambda v, lookup=lookup: lookup.get(str(v), 0) if pd.notna(v) else 0))
        indexed = np.stack([c.to_numpy(np.int64) for c in columns], axis=1).reshape(len(frame), len(columns))
        known = indexed.any(axis=1)
        ids = frame["item_id"].astype(str).to_numpy()[known]
        return cls(values, {i: tuple(int(x) for x in row) for i, row in zip(ids, indexed[known], strict=True)})

    def cardinalities(self) -> list[int]:
        """Embedding rows per attribute (0 included)."""
        return [len(self.values[a]) + 1 for a in ITEM_ATTRIBUTES]

    def index(self, item_ids: pd.Series) -> np.ndarray:
        """(rows x len(ITEM_ATTRIBUTES)) indices for these item ids."""
        unknown = (0,) * len(ITEM_ATTRIBUTES)
        rows = [self.by_item.get(i, unknown) for i in item_ids.astype(str)]
        return np.asarray(rows, dtype=np.int32).reshape(len(rows), len(ITEM_ATTRIBUTES))

    def remap_to(self, target: dict[str, tuple[str, ...]]) -> list[np.ndarray]:
        """Per attribute, an array mapping this vocabulary's indices to `target`'s (a model trained on other days)."""
        out = []
        for a in ITEM_ATTRIBUTES:
            lookup = {v: i + 1 for i, v in enumerate(target.get(a, ()))}
            out.append(np.array([0] + [lookup.get(v, 0) for v in self.values[a]], dtype=np.int64))
        return out


class Vocabularies(NamedTuple):
    """What a model's inputs are indexed with: its users, items and item attribute values."""

    users: Vocabulary
    items: Vocabulary
    attributes: ItemAttributes


def reindex(source: Vocabulary, target: Vocabulary) -> np.ndarray:
    """An array mapping `source` indices to `target` indices (0, and ids `target` lacks, map to 0)."""
    lookup = target.lookup()
    return np.array([0] + [lookup.get(i, 0) for i in source.ids], dtype=np.int64)


def encode_sequences(frame: pd.DataFrame, items: Vocabulary, length: int) -> tuple[np.ndarray, ...]:
    """The user_sequence lists -> right-aligned (B x length) item indices, levels and gap buckets; padding has
    level 0. A row without a sequence (no history before the example) is all padding."""
    from training.towers import gap_buckets

    n = len(frame)
    seq_items = np.zeros((n, length), np.int32)
    seq_levels = np.zeros((n, length), np.int32)
    seq_gaps = np.zeros((n, length), np.int32)
    if n == 0 or SEQUENCE_COLUMNS[0] not in frame:
        return seq_items, seq_levels, seq_gaps
    lookup = items.lookup()
    columns = zip(*(frame[c].to_numpy() for c in SEQUENCE_COLUMNS), strict=True)
    for row, (ids, levels, gaps) in enumerate(columns):
        if ids is None or not isinstance(ids, list | np.ndarray) or len(ids) == 0:
            continue
        k = min(len(ids), length)
        seq_items[row, length - k :] = [lookup.get(str(i), 0) for i in ids[-k:]]
        seq_levels[row, length - k :] = np.asarray(levels[-k:], dtype=np.int64)
        seq_gaps[row, length - k :] = gap_buckets(np.asarray(gaps[-k:], dtype=np.int64))
    return seq_items, seq_levels, seq_gaps


@dataclass(frozen=True)
class SampledNegatives:
    rows: pd.DataFrame
    drawn: int
    collisions: int  # drawn items the user did touch that day: discarded (they are real exposures, not negatives)


def sample_negatives(
    exposures: pd.DataFrame, popularity: pd.Series, per_exposure: int, rng: np.random.Generator
) -> SampledNegatives:
    """`per_exposure` items per real exposure, drawn with probability proportional to `popularity` (exposures per
    item in the training days), as category 0 at the exposure's time."""
    columns = ["user_id", "item_id", "category", "example_ts", "ds"]
    if per_exposure == 0 or exposures.empty:
        return SampledNegatives(pd.DataFrame(columns=columns), 0, 0)
    items = popularity.index.to_numpy()
    weights = popularity.to_numpy(np.float64)
    drawn = rng.choice(len(items), size=len(exposures) * per_exposure, p=weights / weights.sum())
    base = exposures.loc[exposures.index.repeat(per_exposure), ["user_id", "example_ts", "ds"]].reset_index(drop=True)
    base["item_id"] = items[drawn]
    base["category"] = 0
    touched = set(zip(exposures["user_id"], exposures["item_id"], exposures["ds"], strict=True))
    keep = np.array(
        [(u, i, d) not in touched for u, i, d in zip(base["user_id"], base["item_id"], base["ds"], strict=True)]
    )
    return SampledNegatives(base.loc[keep, columns].reset_index(drop=True), len(base), int((~keep).sum()))


def encode_dense(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Numeric features -> float32 matrix: sign(x) * log1p(|x|) (counts span orders of magnitude), nulls -> 0, and a
    last column saying whether the view had a row at all (a user without recent activity is information too)."""
    if not columns:
        return np.zeros((len(frame), 0), np.float32)
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    present = (~np.isnan(values)).any(axis=1, keepdims=True)
    values = np.nan_to_num(np.sign(values) * np.log1p(np.abs(values)), nan=0.0)
    return np.hstack([values, present]).astype(np.float32)


def numeric_feature_columns(frame: pd.DataFrame, prefixes: tuple[str, ...]) -> list[str]:
    return [
        c
        for c in frame.columns
        if c.startswith(prefixes)
        and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        and not pd.api.types.is_datetime64_any_dtype(frame[c])
    ]


@dataclass(frozen=True)
class FeatureFiles:
    """Parquet files of encoded examples and the feature columns they were encoded from (in order)."""

    paths: list[Path]
    rows: int
    user_columns: list[str]
    item_columns: list[str]


def fetch_features(
    settings: Settings,
    examples: pd.DataFrame,
    users: Vocabulary,
    items: Vocabulary,
    attributes: ItemAttributes,
    out_dir: Path,
    columns: tuple[list[str], list[str]] | None = None,
    label: str = "examples",
    shuffle_seed: int | None = None,
) -> FeatureFiles:
    """Point-in-time features for `examples` (user_id, item_id, category, example_ts, ds), `feature_chunk_days` days
    per Feast call, encoded and written as one Parquet file per chunk under `out_dir`.

    :param attributes: the item attribute vocabularies the item tower embeds (ItemAttributes.load).
    :param columns: the user and item feature columns to encode (a model's, at inference); taken from the first
        chunk when not given.
    :param shuffle_seed: write each chunk's rows in a seeded random order, so that every row group is a sample of
        its days (real exposures and sampled negatives mixed); row order is kept when None (inference).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    days = sorted(examples["ds"].unique())
    step = settings.training.feature_chunk_days
    paths: list[Path] = []
    rows = 0
    for n, lo in enumerate(range(0, len(days), step)):
        chunk_days = set(days[lo : lo + step])
        chunk = examples[examples["ds"].isin(chunk_days)].reset_index(drop=True)
        if shuffle_seed is not None:
            chunk = chunk.take(np.random.default_rng([shuffle_seed, n]).permutation(len(chunk))).reset_index(drop=True)
        t0 = time.time()
        user_keys, item_keys = EntityKeys.of(chunk, "user_id"), EntityKeys.of(chunk, "item_id")
        user_feats, item_feats = _features_per_key(settings, user_keys, item_keys)
        if columns is None:
            columns = (numeric_feature_columns(user_feats, USER_VIEWS), numeric_feature_columns(item_feats, ITEM_VIEWS))
        user_dense = encode_dense(user_feats, columns[0])[user_keys.row_key]
        item_dense = encode_dense(item_feats, columns[1])[item_keys.row_key]
        seq_items, seq_levels, seq_gaps = (
            a[user_keys.row_key] for a in encode_sequences(user_feats, items, settings.pipeline.sequence_length)
        )
        item_attrs = attributes.index(chunk["item_id"])
        table = pa.table(
            {
                "user_id": chunk["user_id"].astype(str),
                "item_id": chunk["item_id"].astype(str),
                "user": users.index(chunk["user_id"]),
                "item": items.index(chunk["item_id"]),
                "category": chunk["category"].to_numpy(np.int64),
                "ds": chunk["ds"],
                "user_dense": pa.FixedSizeListArray.from_arrays(user_dense.ravel(), user_dense.shape[1]),
                "item_dense": pa.FixedSizeListArray.from_arrays(item_dense.ravel(), item_dense.shape[1]),
                "item_attrs": pa.FixedSizeListArray.from_arrays(item_attrs.ravel(), item_attrs.shape[1]),
                "seq_items": pa.FixedSizeListArray.from_arrays(seq_items.ravel(), seq_items.shape[1]),
                "seq_levels": pa.FixedSizeListArray.from_arrays(seq_levels.ravel(), seq_levels.shape[1]),
                "seq_gaps": pa.FixedSizeListArray.from_arrays(seq_gaps.ravel(), seq_gaps.shape[1]),
            }
        )
        path = out_dir / f"chunk-{n:04d}.parquet"
        pq.write_table(table, path, row_group_size=16384)
        paths.append(path)
        rows += len(chunk)
        log.info(
            f"features ({label}): {min(chunk_days)}..{max(chunk_days)}: {len(chunk):,} rows in {time.time() - t0:.1f}s "
            f"({rows:,}/{len(examples):,})"
        )
    assert columns is not None or not paths
    user_cols, item_cols = columns if columns is not None else ([], [])
    return FeatureFiles(paths, rows, user_cols, item_cols)


@dataclass(frozen=True)
class EntityKeys:
    """The distinct (id, example time) pairs of one entity in a chunk, and which of them each chunk row has."""

    ids: pd.Series
    times: pd.Series
    row_key: np.ndarray  # chunk row -> index into ids/times

    @classmethod
    def of(cls, chunk: pd.DataFrame, column: str) -> EntityKeys:
        keys = pd.MultiIndex.from_arrays([chunk[column].astype(str), pd.to_datetime(chunk["example_ts"])])
        row_key, distinct = keys.factorize()
        return cls(pd.Series(distinct.get_level_values(0)), pd.Series(distinct.get_level_values(1)), row_key)


def _features_per_key(settings: Settings, users: EntityKeys, items: EntityKeys) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The user views' features per distinct (user, time) and the item views' per distinct (item, time), from one
    point-in-time Feast call.

    Every feature view joins on its own entity and time, so a row's user features do not depend on its item: asking
    once per distinct key and spreading the answer over the rows is the same training set. Examples repeat keys a lot
    (a user's exposures and sampled negatives share user and day; ranker candidates share one time), and the offline
    join costs per entity row (benchmarks/feature_fetch.py: 6x faster on the demo warehouse). The rows asking for
    one entity carry an empty id for the other, which no feature row has (ids are never empty: ingest quarantines
    them), so its views come back null and cost nothing.
    """
    from nightrec import feature_store

    n_users, n_items = len(users.ids), len(items.ids)
    entity_df = pd.DataFrame(
        {
            "user_id": pd.concat([users.ids, pd.Series([""] * n_items)], ignore_index=True),
            "item_id": pd.concat([pd.Series([""] * n_users), items.ids], ignore_index=True),
            "event_timestamp": pd.concat([users.times, items.times], ignore_index=True).dt.tz_localize("UTC"),
            "row_id": np.arange(n_users + n_items),
        }
    )
    feats = feature_store.historical_features(settings, entity_df).sort_values("row_id").reset_index(drop=True)
    return feats.iloc[:n_users].reset_index(drop=True), feats.iloc[n_users:].reset_index(drop=True)


def cached_features(out: Path, fetch: Callable[[], FeatureFiles]) -> FeatureFiles:
    """The feature files under `out` when an earlier call (or a killed run with the same inputs) finished them,
    else `fetch()` into a clean `out`, marked finished with its row count and columns."""
    done = out / "_SUCCESS"
    if done.exists():
        meta = json.loads(done.read_text())
        return FeatureFiles(sorted(out.glob("chunk-*.parquet")), meta["rows"], *meta["columns"])
    shutil.rmtree(out, ignore_errors=True)
    files = fetch()
    done.write_text(json.dumps({"rows": files.rows, "columns": [files.user_columns, files.item_columns]}))
    return files


@dataclass
class Batch:
    """One batch as NumPy arrays (see training.towers.Inputs for the meaning of each)."""

    user: np.ndarray
    user_dense: np.ndarray
    seq_items: np.ndarray
    seq_levels: np.ndarray
    seq_gaps: np.ndarray
    item: np.ndarray
    item_dense: np.ndarray
    item_attrs: np.ndarray
    category: np.ndarray

    def __len__(self) -> int:
        return len(self.category)


def _table_batch(table: pa.Table) -> Batch:
    def matrix(name: str, dtype: type) -> np.ndarray:
        column = table.column(name).combine_chunks()
        width = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(dtype, copy=False)

    return Batch(
        user=table.column("user").to_numpy(),
        user_dense=matrix("user_dense", np.float32),
        seq_items=matrix("seq_items", np.int64),
        seq_levels=matrix("seq_levels", np.int64),
        seq_gaps=matrix("seq_gaps", np.int64),
        item=table.column("item").to_numpy(),
        item_dense=matrix("item_dense", np.float32),
        item_attrs=matrix("item_attrs", np.int64),
        category=table.column("category").to_numpy(),
    )


def batches(
    files: FeatureFiles, batch_size: int, shuffle: bool = False, seed: int = 0, buffer_groups: int = 8
) -> Iterator[Batch]:
    """Stream batches from the feature files, never holding more than `buffer_groups` row groups: with `shuffle`,
    row groups are visited in a seeded random order and rows shuffled within that buffer."""
    rng = np.random.default_rng(seed)
    groups = [(p, g) for p in files.paths for g in range(pq.ParquetFile(p).num_row_groups)]
    if shuffle:
        rng.shuffle(groups)
    readers: dict[Path, pq.ParquetFile] = {}
    for start in range(0, len(groups), buffer_groups):
        tables = []
        for path, group in groups[start : start + buffer_groups]:
            reader = readers.setdefault(path, pq.ParquetFile(path))
            tables.append(reader.read_row_group(group))
        table = pa.concat_tables(tables)
        if shuffle:
            table = table.take(rng.permutation(len(table)))
        for lo in range(0, len(table), batch_size):
            yield _table_batch(table.slice(lo, batch_size))


def read_all(files: FeatureFiles, columns: list[str]) -> pd.DataFrame:
    """Some columns of every row (ids, categories, ds: small), in file order."""
    return pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in files.paths], ignore_index=True)
