"""Published top-k versions under serving/topk/ and the pointer readers follow.

    serving/topk/ds=<D>/model=<name>-<version>/   part-*.parquet (user_id, rank, item_id, score, source,
                                                  model_version[, p_at_least]) and _SUCCESS (counts)
    serving/topk/current.json                     {"ds", "model_version", "path", "history": [earlier pointers]}
    serving/topk/current -> ds=<D>/model=<...>    a relative symlink for readers that take a path (dbt, DuckDB)
    serving/user_topk/ds=<D>/part-00000.parquet   one row per user with the lists: the Feast `user_topk` source
                                                  (ds only in the path: Spark adds it from there)

A version directory is complete before the pointer names it (written beside it and renamed into place), and the
pointer and the link are each replaced by one rename, so a reader sees the old version or the new one, never half
of either. Rolling back points both at the previous version in the history. A backfill of an earlier day writes its
version but does not move the pointer backwards (docs/architecture.md, "Landing and history").
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from nightrec import feature_store
from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.storage import fresh_staging, read_json, replace_file, staged, write_json_atomic
from nightrec.warehouse import Warehouse

log = logging.getLogger(__name__)

POINTER = "current.json"
LINK = "current"


def version_dir(settings: Settings, day: date, model_version: str) -> Path:
    return Warehouse.of(settings).serving_topk() / f"ds={day.isoformat()}" / f"model={model_version}"


def current(settings: Settings) -> dict[str, Any] | None:
    path = Warehouse.of(settings).serving_topk() / POINTER
    return read_json(path) if path.exists() else None


def _point(settings: Settings, pointer: dict[str, Any]) -> None:
    """Point readers at ``pointer``'s version: the ``current`` link first, then the pointer document.

    The pointer is the record of what is published (``current``, ``rollback`` and ``publish_topk`` read it), so it
    is written last: a process killed between the two steps leaves the pointer as it was, and the retry of the same
    command (a rerun of the night's scoring, a second ``rollback``) reads the same pointer and ends where one clean
    run would, rather than a step further (tests/integration/test_topk.py, the killed rollback)."""
    root = Warehouse.of(settings).serving_topk()
    link_tmp = fresh_staging(root / LINK)  # removes a killed run's temporary link
    link_tmp.symlink_to(Path(pointer["path"]))  # relative to serving/topk/: the warehouse may move
    replace_file(link_tmp, root / LINK)
    write_json_atomic(root / POINTER, pointer)


def publish(settings: Settings, day: date, model_version: str, counts: dict[str, Any]) -> dict[str, Any]:
    """Point readers at the written version ``ds=day/model=model_version``; returns the pointer now in force."""
    target = version_dir(settings, day, model_version)
    if not (target / "_SUCCESS").is_file():
        raise InputError(f"No complete top-k version at {target} (no _SUCCESS): nothing to publish")
    before = current(settings)
    if before and date.fromisoformat(before["ds"]) > day:
        log.info(f"top-k: {day} is older than the published {before['ds']}: written, pointer kept")
        return before
    path = str(target.relative_to(Warehouse.of(settings).serving_topk()))
    history = list((before or {}).get("history", []))
    if before and before["path"] != path:  # a rerun of the same version adds nothing to roll back to
        history.append({k: v for k, v in before.items() if k != "history"})
    pointer = {
        "ds": day.isoformat(),
        "model_version": model_version,
        "path": path,
        "counts": counts,
        "publication": (before or {}).get("publication", 0) + 1,
        "history": history[-settings.topk.keep_versions :],
    }
    _point(settings, pointer)
    return pointer


def rollback(settings: Settings) -> dict[str, Any]:
    """Point readers at the previous published version; raise when there is none left to return to."""
    now = current(settings)
    if not now or not now.get("history"):
        raise InputError(f"No earlier top-k version to roll back to under {Warehouse.of(settings).serving_topk()}")
    previous = now["history"][-1]
    if not (Warehouse.of(settings).serving_topk() / previous["path"] / "_SUCCESS").is_file():
        raise InputError(f"The previous top-k version {previous['path']} is gone: cannot roll back")
    # served_ds: the online lists of the latest day now carry this version (see write_online_lists)
    pointer = {
        **previous,
        "served_ds": now.get("served_ds", now["ds"]),
        "publication": now.get("publication", 0) + 1,
        "history": now["history"][:-1],
    }
    _point(settings, pointer)
    return pointer


def served_day(pointer: dict[str, Any]) -> date:
    """The day whose online lists show this pointer's version: its own day, or after a rollback the latest day."""
    return date.fromisoformat(pointer.get("served_ds", pointer["ds"]))


def feature_time(pointer: dict[str, Any]) -> datetime:
    """served day + 1 at 00:00 UTC (known at the end of the day), plus one microsecond per publication.

    The microseconds make every publication newer than the last: Redis (Feast) ignores a write whose timestamp is not
    later than the stored one, so a same-day rerun or a rollback would otherwise never reach the online store.
    """
    return feature_store.known_at(served_day(pointer)) + timedelta(microseconds=int(pointer["publication"]))


def write_online_lists(settings: Settings, pointer: dict[str, Any]) -> tuple[Path, int]:
    """The published version as one row per user (the lists in rank order), the Feast `user_topk` source.

    feature_ts: :func:`feature_time`.
    """
    import duckdb

    day = served_day(pointer)
    files = Warehouse.of(settings).serving_topk() / pointer["path"] / "*.parquet"
    target = Warehouse.of(settings).serving_user_topk() / f"ds={day.isoformat()}"
    feature_ts = feature_time(pointer).replace(tzinfo=None).isoformat(sep=" ")
    with staged(target) as staging, duckdb.connect() as con:
        con.execute("set timezone = 'UTC'")
        con.execute(
            f"""
            copy (
                select
                    user_id,
                    list(item_id order by rank) as topk_item_ids,
                    list(score order by rank) as topk_scores,
                    arg_min(source, rank) as topk_source,  -- the first item's: a cold-start list mixes two
                    any_value(model_version) as topk_model_version,
                    timestamp '{feature_ts}' as feature_ts
                from read_parquet('{files}')
                group by user_id
                order by user_id
            ) to '{staging / "part-00000.parquet"}' (format parquet)
            """
        )
        users = con.execute(f"select count(*) from read_parquet('{staging / 'part-00000.parquet'}')").fetchall()[0][0]
    return target, int(users)


def serve(settings: Settings) -> dict[str, Any]:
    """Bring every reader to the current version: the online lists (written, registered, materialized) and the
    analysts' `topk_current` mart. Run after each publication and rollback; rerunning it changes nothing."""
    from nightrec.marts_publish import publish_serving_marts

    pointer = current(settings)
    if pointer is None:
        raise InputError(
            f"No published top-k under {Warehouse.of(settings).serving_topk()}: run `nightrec topk score` first"
        )
    lists, users = write_online_lists(settings, pointer)
    feature_store.apply(settings)  # registers user_topk once its first lists exist
    materialized = feature_store.materialize_topk(settings, feature_time(pointer))
    marts = publish_serving_marts(settings)
    return {
        "current": pointer["path"],
        "served_ds": served_day(pointer).isoformat(),
        "online_users": users,
        "materialized_users": materialized,
        "lists": str(lists),
        "marts": marts,
    }
