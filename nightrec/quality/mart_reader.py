"""Read the marts a dbt target built, and the bronze totals they must reconcile with (through DuckDB)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from pathlib import Path

import pandas as pd

from nightrec.adapters import SourceAdapter
from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.marts_publish import MARTS
from nightrec.warehouse import Warehouse

# Marts with one partition per day D; the run checks only its own days of them.
DAILY_MARTS = {
    "fct_interactions",
    "training_examples",
    "user_features",
    "item_features",
    "user_item_features",
    "user_sequences",
}
DIMENSIONS = {"dim_users", "dim_items"}  # whole tables, one row per user or item


def _relation(settings: Settings, name: str) -> str:
    if settings.dbt_target == "duckdb":
        return f"main.{name}"
    # dbt-spark writes Parquet tables (ds partitions as directories) under its warehouse dir.
    root = Warehouse.of(settings).marts("spark") / "tables" / "nightrec.db" / name
    return f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"


def read_marts(settings: Settings, days: list[date], names: Collection[str] = tuple(MARTS)) -> dict[str, pd.DataFrame]:
    """The marts ``names`` as pandas: the daily marts on ``days``, the dimensions whole."""
    import duckdb

    db = Warehouse.of(settings).duckdb_target_db()
    if settings.dbt_target == "duckdb" and not db.is_file():
        raise InputError(f"The dbt marts database {db} does not exist: run dbt build first (`nightrec dbt build`)")
    # Not read_only: a process that also runs dbt in-process (tests, `nightrec dbt`) may only open the file with
    # the configuration dbt-duckdb used. Nothing here writes.
    con = duckdb.connect(str(db)) if settings.dbt_target == "duckdb" else duckdb.connect()
    try:
        con.execute("set timezone = 'UTC'")
        out = {}
        for name in names:
            where = ""
            if name in DAILY_MARTS:
                where = f" where ds >= date '{days[0]}' and ds <= date '{days[-1]}'" if days else " where false"
            out[name] = con.execute(f"select * from {_relation(settings, name)}{where}").df()
        return out
    finally:
        con.close()


def bronze_totals(warehouse: Warehouse, adapter: SourceAdapter, days: list[date] | None) -> dict[str, int]:
    """Events, events per level, distinct users, items and active user-days in bronze (all days, or only ``days``)."""
    import duckdb

    root: Path = warehouse.bronze_events()
    paths = [str(root / f"ds={d}" / "*.parquet") for d in days] if days is not None else [str(root / "ds=*/*.parquet")]
    levels = ", ".join(f"count(*) filter (where level = {lv})" for lv in range(1, adapter.max_level + 1))
    with duckdb.connect() as con:
        row = con.execute(
            f"select count(*), count(distinct user_id), count(distinct item_id), {levels} from read_parquet(?)",
            [paths],
        ).fetchone()
        user_days = con.execute(
            "select count(*) from (select distinct user_id, ds from read_parquet(?, hive_partitioning = true))",
            [paths],
        ).fetchone()
    assert row is not None and user_days is not None
    out = {"events": int(row[0]), "users": int(row[1]), "items": int(row[2]), "user_days": int(user_days[0])}
    out.update({f"level_{lv}": int(row[2 + lv]) for lv in range(1, adapter.max_level + 1)})
    return out
