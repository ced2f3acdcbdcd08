"""Feast objects over the marts: entities user and item, views user_features, item_features, user_sequence, and the
feature services `training` and `serving`.

Sources are the Parquet exports of the marts (``<warehouse>/marts/parquet/<model>/``, written by the DAG's
publish_marts task). Each view's schema is read from its export when `feast apply` runs, because the columns follow
the source's level map (a 4-level Tmall has rate_level_4_*, single-level H&M does not). Timestamps follow
docs/architecture.md, "Feature time, no leakage": every row carries feature_ts = D+1 00:00 UTC, the moment its day's
behaviour is complete.

Run through nightrec (`nightrec feast apply`), which points Feast at the feature_store.yaml of the configured
variant; plain `feast -f feature_repo/feature_store.local.yaml apply` works as well after `export
NIGHTREC_WAREHOUSE_ROOT=...`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Array, Bool, FeastType, Float32, Float64, Int32, Int64, String, UnixTimestamp

from nightrec.config import load_settings
from nightrec.errors import InputError
from nightrec.warehouse import Warehouse

# One row per user and day for users active in the last 90 days: a row older than this means no recent activity.
DAILY_TTL = timedelta(days=2)
KEYS = {"user_id", "item_id", "ds", "feature_ts"}
_SCALARS: dict[pa.DataType, FeastType] = {
    pa.string(): String,
    pa.int64(): Int64,
    pa.int32(): Int32,
    pa.float64(): Float64,
    pa.float32(): Float32,
    pa.bool_(): Bool,
}


def _feast_type(arrow: pa.DataType) -> FeastType:
    if pa.types.is_timestamp(arrow):
        return UnixTimestamp
    if pa.types.is_list(arrow):
        return Array(_feast_type(arrow.value_type))
    if arrow in _SCALARS:
        return _SCALARS[arrow]
    raise InputError(f"No Feast type for Arrow type {arrow}")


def _fields(files: list[Path]) -> list[Field]:
    """The feature fields of a table: every column of its first file but keys and timestamps."""
    return [Field(name=f.name, dtype=_feast_type(f.type)) for f in pq.read_schema(files[0]) if f.name not in KEYS]


def _source(name: str, path: Path, glob: str = "*.parquet") -> tuple[DataSource, list[Field]]:
    files = sorted(path.glob(glob))
    if not files:
        raise InputError(f"No Parquet files for '{name}' under {path}: run the marts first (`nightrec nightly`)")
    if load_settings().feast.variant == "production":  # the Spark offline store reads SparkSources only
        return SparkSource(name=name, path=str(path), file_format="parquet", timestamp_field="feature_ts"), _fields(
            files
        )
    # An explicit Parquet format and a glob: Feast's DuckDB store reads nothing (and fails later with a NoneType
    # error) for a directory path without a file format.
    source = FileSource(name=name, path=f"{path}/{glob}", file_format=ParquetFormat(), timestamp_field="feature_ts")
    return source, _fields(files)


def _mart_source(model: str) -> tuple[DataSource, list[Field]]:
    return _source(model, _warehouse.mart_export(model))


_warehouse = Warehouse.of(load_settings())  # the settings Feast's caller put in the environment
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A shop customer")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="An item (Tmall: a brand)")

_user_source, _user_fields = _mart_source("user_features")
_item_source, _item_fields = _mart_source("item_features")
_sequence_source, _sequence_fields = _mart_source("user_sequences")

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=DAILY_TTL,
    schema=_user_fields,
    source=_user_source,
    description="Recency, frequency, counts and shares per level over 7/30/90 days, breadth and repurchase over 90 "
    "days, top item and category.",
)
item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=DAILY_TTL,
    schema=_item_fields,
    source=_item_source,
    description="Popularity and buyers over 7/30/90 days, the 7-day trend, level-to-level conversion over 30 days, "
    "repurchase over 365 days.",
)
user_sequence = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=timedelta(0),  # no ttl: a user's latest sequence is their state until they act again
    schema=_sequence_fields,
    source=_sequence_source,
    description="The last N behaviour tokens (item ids, levels, gaps) as list features, and cumulative activity.",
)

training = FeatureService(
    name="training", features=[user_features, item_features, user_sequence], description="Model training sets"
)
# What online consumers read per request: the behaviour sequence (the user tower), activity and recency (the ranker,
# cold-start fallbacks) and item popularity. Every feature costs per entity on each lookup (Feast decodes each value
# from protobuf twice), so the per-level counts and rates stay in `training`: with all 56 features, 100 entities took
# 24 ms at p50 on Redis, with these 16 15 ms (benchmarks/feast_serving.py). Names that exist for every source.
SERVING_FEATURES = {
    "user_features": [
        "recency_days",
        "active_days_7d",
        "active_days_30d",
        "n_events_7d",
        "n_events_30d",
        "n_events_90d",
        "top_item_90d",
        "top_category_90d",
    ],
    "item_features": ["n_events_7d", "n_users_7d", "n_events_30d", "n_users_30d"],
    "user_sequence": ["seq_item_ids", "seq_levels", "seq_gap_seconds", "seq_length"],
}
_views = {v.name: v for v in (user_features, item_features, user_sequence)}
serving = FeatureService(
    name="serving",
    features=[_views[name][features] for name, features in SERVING_FEATURES.items()],
    description="Online lookups: the features services read per request",
)

# The published top-k lists (nightrec.topk_publish): registered once the first version exists, so a warehouse before
# its first training still applies. One row per user and day; no ttl: a user's latest lists stand until replaced.
_topk_lists = _warehouse.serving_user_topk()
if any(_topk_lists.glob("ds=*/*.parquet")):
    _topk_source, _topk_fields = _source("user_topk", _topk_lists, "ds=*/*.parquet")
    user_topk = FeatureView(
        name="user_topk",
        entities=[user],
        ttl=timedelta(0),
        schema=_topk_fields,
        source=_topk_source,
        description="The published top-k: item ids and scores in rank order, the list's source and model version.",
    )
    topk = FeatureService(name="topk", features=[user_topk], description="Precomputed recommendations per user")

# The consumer segments (spark_jobs/build_segments.py, the segment_membership mart): registered once the mart exists.
# One row per user and night; no ttl: a consumer's latest segment stands until the next night's.
_segments = _warehouse.mart_export("segment_membership")
if any(_segments.glob("*.parquet")):
    _segments_source, _segments_fields = _source("user_segments", _segments)
    user_segments = FeatureView(
        name="user_segments",
        entities=[user],
        ttl=timedelta(0),
        schema=_segments_fields,
        source=_segments_source,
        description="The consumer's segment that night: id (kept across nights), label and distance to its centroid.",
    )
    segments = FeatureService(
        name="segments", features=[user_segments], description="The consumer's segment, for group recommendations"
    )
