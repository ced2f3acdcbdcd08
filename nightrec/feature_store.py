"""The Feast feature store: apply the repository, materialize a run's data interval, read training sets and serve.

Feature time (docs/architecture.md, "Feature time, no leakage"): the rows a run computes for data day D carry
feature_ts = D+1 00:00 UTC. A run over the data days [start, end) therefore materializes exactly the feature times
[start + 1 day, end] (Feast's window is inclusive at both ends), in chunks of ``feast.materialize_chunk_days`` days,
and never from wall-clock time (``materialize-incremental`` on historical data writes nothing: docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from nightrec.config import PROJECT_ROOT, Settings
from nightrec.errors import InputError, ReconciliationError
from nightrec.warehouse import Warehouse

log = logging.getLogger(__name__)

FEATURE_REPO = PROJECT_ROOT / "feature_repo"
VIEWS = ("user_features", "item_features", "user_sequence")
VIEW_EXPORTS = {"user_features": "user_features", "item_features": "item_features", "user_sequence": "user_sequences"}
TOPK_VIEW = "user_topk"  # registered once a top-k version is published (serving/user_topk/), materialized after it
FEAST_SPARK_DRIVER_MEMORY = "NIGHTREC_FEAST_SPARK_DRIVER_MEMORY"  # feature_store.production.yaml's spark.driver.memory
SEGMENTS_VIEW = "user_segments"  # registered once the segment_membership mart exists, materialized by publish_segments


def view_files(settings: Settings, view: str) -> Path:
    """The Parquet files (a glob) behind a feature view."""
    if view == TOPK_VIEW:
        return Warehouse.of(settings).serving_user_topk() / "ds=*" / "*.parquet"
    if view == SEGMENTS_VIEW:
        return Warehouse.of(settings).mart_export("segment_membership") / "*.parquet"
    return Warehouse.of(settings).mart_export(VIEW_EXPORTS[view]) / "*.parquet"


def store_yaml(settings: Settings) -> Path:
    return FEATURE_REPO / f"feature_store.{settings.feast.variant}.yaml"


def use_settings(settings: Settings) -> None:
    """Point this process's Feast at the settings: feature_store.yaml's ${VARS} and definitions.py read them from the
    environment (:meth:`Settings.environment`).

    :raises InputError: the variant needs a server address the environment does not give.
    """
    if settings.feast.variant in {"redis", "production"} and "NIGHTREC_REDIS" not in os.environ:
        raise InputError(
            f"Feast variant '{settings.feast.variant}' needs NIGHTREC_REDIS (host:port of the Redis server)"
        )
    os.environ.update(settings.environment())
    # The production variant's Spark sessions (offline store, engine) start their driver with the profile's memory, not
    # Spark's 1g default: at 100x the Tmall log a training fetch ran out of heap with 1g (decision 33).
    os.environ[FEAST_SPARK_DRIVER_MEMORY] = settings.spark.driver_memory
    # The production variant's Spark offline store and materialization engine start Python workers: without this they
    # run whatever `python3` is first on PATH, which lacks Feast (spark_jobs.common does the same for the jobs).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def open_store(settings: Settings) -> Any:
    """A FeatureStore for the configured variant (the YAML's ${VARS} are expanded from the environment)."""
    use_settings(settings)
    Warehouse.of(settings).feast().mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=store_yaml(settings))


def repo_objects(settings: Settings) -> list[Any]:
    """The Feast objects of feature_repo/definitions.py, loaded afresh (its schemas follow the current exports)."""
    from feast import Entity, FeatureService, FeatureView

    use_settings(settings)
    spec = importlib.util.spec_from_file_location("nightrec_feature_repo", FEATURE_REPO / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [v for v in vars(module).values() if isinstance(v, Entity | FeatureView | FeatureService)]


def apply(settings: Settings) -> dict[str, int]:
    """`feast apply` of the repository (idempotent): register entities, views and services."""
    store = open_store(settings)
    objects = repo_objects(settings)
    store.apply(objects)
    counts = {
        "entities": len(store.list_entities()),
        "feature_views": len(store.list_feature_views()),
        "feature_services": len(store.list_feature_services()),
    }
    log.info(f"feast apply ({settings.feast.variant}): {counts}")
    return counts


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def known_at(day: date) -> datetime:
    """The feature time of what is computed from data day D: D+1 00:00 UTC (known once the day is over)."""
    return _midnight(day + timedelta(days=1))


def materialization_window(start: date, end: date) -> tuple[datetime, datetime]:
    """Feature times written for the data days [start, end): [start + 1 day, end], both inclusive."""
    return known_at(start), _midnight(end)


@dataclass
class MaterializeChunk:
    days: tuple[date, date]
    rows: dict[str, int]
    seconds: float


def materialize(settings: Settings, start: date, end: date, views: tuple[str, ...] = VIEWS) -> list[MaterializeChunk]:
    """Write the features of ``views`` for the data days [start, end) to the online store, chunk by chunk."""
    if end <= start:
        raise InputError(f"Empty materialization range [{start}, {end})")
    store = open_store(settings)
    step = timedelta(days=settings.feast.materialize_chunk_days)
    chunks: list[MaterializeChunk] = []
    lo = start
    total_days = (end - start).days
    while lo < end:
        hi = min(lo + step, end)
        window = materialization_window(lo, hi)
        rows = _rows_in_window(settings, views, *window)
        t0 = time.time()
        with _quiet_offline_store():
            store.materialize(start_date=window[0], end_date=window[1], feature_views=list(views))
        chunk = MaterializeChunk((lo, hi - timedelta(days=1)), rows, time.time() - t0)
        chunks.append(chunk)
        done = (hi - start).days
        log.info(
            f"feast materialize: data days {lo}..{hi - timedelta(days=1)} ({done}/{total_days} days): "
            f"{sum(rows.values()):,} feature rows in {chunk.seconds:.1f}s"
        )
        lo = hi
    return chunks


def materialize_topk(settings: Settings, at: datetime) -> int:
    """Write the published top-k lists whose feature time is ``at`` (nightrec.topk_publish.feature_time)."""
    return materialize_at(settings, TOPK_VIEW, at)


def materialize_at(settings: Settings, view: str, at: datetime) -> int:
    """Write the rows of one view whose feature time is ``at`` (to the second): one publication's rows."""
    store = open_store(settings)
    lo = at.replace(microsecond=0)
    hi = lo + timedelta(seconds=1)
    rows = _rows_in_window(settings, (view,), lo, hi)[view]
    t0 = time.time()
    with _quiet_offline_store():
        store.materialize(start_date=lo, end_date=hi, feature_views=[view])
    log.info(f"feast materialize: {view} at {at.isoformat()}: {rows:,} users in {time.time() - t0:.1f}s")
    return rows


def _rows_in_window(settings: Settings, views: tuple[str, ...], lo: datetime, hi: datetime) -> dict[str, int]:
    """Feature rows of each view whose feature_ts falls in [lo, hi] (what one materialize call reads)."""
    import duckdb

    out = {}
    with duckdb.connect() as con:
        con.execute("set timezone = 'UTC'")
        for view in views:
            files = view_files(settings, view)
            row = con.execute(
                f"select count(*) from read_parquet('{files}') where feature_ts between ? and ?",
                [lo.replace(tzinfo=None), hi.replace(tzinfo=None)],
            ).fetchone()
            out[view] = int(row[0]) if row else 0
    return out


@contextlib.contextmanager
def _quiet_offline_store() -> Iterator[None]:
    """ibis (under Feast's DuckDB offline store) calls a method this DuckDB deprecates, once per query: noise in every
    training and materialization log, nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)
        yield


def historical_features(settings: Settings, entity_df: Any, service: str = "training") -> Any:
    """Point-in-time features for ``entity_df`` (user_id, item_id, event_timestamp): one output row per input row.

    Features are named ``<view>__<feature>``; a feature row is used only if its feature_ts <= event_timestamp. Rows
    are asked ``feast.fetch_batch_rows`` at a time (each row's answer depends on that row alone), so the offline
    store's memory stays bounded however many rows a training set has. The answers are concatenated batch by batch,
    each in the order Feast gives (callers that need the input order carry a row id, as training.data does).

    :raises ReconciliationError: the offline store returned a different number of rows than it was given.
    """
    import pandas as pd

    store = open_store(settings)
    features = store.get_feature_service(service)
    step = settings.feast.fetch_batch_rows
    parts = []
    for lo in range(0, max(len(entity_df), 1), step):
        batch = entity_df.iloc[lo : lo + step]
        with _quiet_offline_store():
            out = store.get_historical_features(entity_df=batch, features=features, full_feature_names=True).to_df()
        if len(out) != len(batch):
            raise ReconciliationError(
                f"get_historical_features returned {len(out):,} rows for {len(batch):,} entity rows: a training set "
                "must have exactly the rows of its entity dataframe (Feast's file offline store drops rows silently; "
                "docs/architecture.md)"
            )
        parts.append(out)
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def online_features(settings: Settings, rows: list[dict[str, str]], service: str = "serving") -> dict[str, list]:
    """Online lookups of ``rows`` (each with user_id and item_id); unknown entities give nulls, not errors.

    Features are named ``<view>__<feature>`` (user and item views share names such as n_events_7d).
    """
    from feast.errors import FeatureServiceNotFoundException

    store = open_store(settings)
    try:
        service_ref = store.get_feature_service(service)
    except FeatureServiceNotFoundException as exc:
        known = sorted(s.name for s in store.list_feature_services())
        later = {"topk": "the nightly DAG's publish_topk", "segments": "the nightly DAG's segments group"}
        hint = f"; it is registered once {later[service]} has published it" if service in later else ""
        raise InputError(
            f"No feature service '{service}' in the Feast registry of {settings.warehouse_root}{hint}. "
            f"Registered now: {', '.join(known) or 'none (run `nightrec feast apply`)'}."
        ) from exc
    return store.get_online_features(features=service_ref, entity_rows=rows, full_feature_names=True).to_dict()
