"""Publish the default dbt target's marts: Parquet exports at fixed paths, the analysts' DuckDB file, dbt docs.

* ``marts/parquet/<model>/part-00000.parquet``: what Feast and training read (microsecond timestamps, UTC).
* ``analytics/nightrec.duckdb``: a separate DuckDB file of views (schemas ``marts``, ``bronze``, ``silver``) over
  the Parquet files, rebuilt in a temporary file and renamed into place, so dbt's write lock on its own database
  never blocks an analyst and an analyst never sees a half-built file.
* ``docs/dbt/``: ``dbt docs generate`` output (index.html, manifest.json, catalog.json).
Each directory is swapped into place atomically.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from nightrec.config import Settings
from nightrec.storage import fresh_staging, replace_file, swap_into_place
from nightrec.warehouse import Warehouse

MARTS = (
    "fct_interactions",
    "training_examples",
    "dim_users",
    "dim_items",
    "user_features",
    "item_features",
    "user_item_features",
    "user_sequences",
)
SERVING_MARTS = ("topk_current",)  # dbt models tagged `serving`: built after the top-k is published
SEGMENT_MARTS = (
    "segment_membership",
    "segment_profiles",
    "lookalike_audiences",
)  # tagged `segments`: built after the segments job
# The analysts' views over the zones: daily partitions (ds=D/) and unpartitioned snapshot tables.
ZONE_VIEWS = {
    "bronze.events": Warehouse.bronze_events,
    "bronze.quarantine": Warehouse.bronze_quarantine,
    "silver.sequences": Warehouse.silver_sequences,
}
SNAPSHOT_VIEWS = {
    "bronze.item_attributes": Warehouse.bronze_item_attributes,
    "bronze.user_attributes": Warehouse.bronze_user_attributes,
    "bronze.attribute_quarantine": Warehouse.bronze_attribute_quarantine,
}


def export_marts(settings: Settings, names: tuple[str, ...] = MARTS) -> dict[str, int]:
    """Copy each mart of the duckdb target to ``marts/parquet/<model>/``; return the row counts."""
    import duckdb

    db = Warehouse.of(settings).duckdb_target_db()
    counts: dict[str, int] = {}
    # Not read_only: a process that also runs dbt in-process may only open the file with dbt-duckdb's configuration.
    with duckdb.connect(str(db)) as con:
        con.execute("set timezone = 'UTC'")
        for name in names:
            target = Warehouse.of(settings).mart_export(name)
            staging = fresh_staging(target)
            staging.mkdir(parents=True)
            con.execute(f"copy (select * from main.{name}) to '{staging / 'part-00000.parquet'}' (format parquet)")
            counts[name] = con.execute(f"select count(*) from main.{name}").fetchone()[0]
            swap_into_place(staging, target)
    return counts


def build_analyst_db(settings: Settings) -> Path:
    """Rebuild the analysts' DuckDB file of views and swap it into place."""
    import duckdb

    final = Warehouse.of(settings).analyst_db()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_staging(final)
    wh = Warehouse.of(settings)
    with duckdb.connect(str(tmp)) as con:
        for schema in ("marts", "bronze", "silver"):
            con.execute(f"create schema {schema}")
        for name in MARTS + tuple(n for n in SERVING_MARTS + SEGMENT_MARTS if wh.mart_export(n).is_dir()):
            files = wh.mart_export(name) / "*.parquet"
            con.execute(f"create view marts.{name} as select * from read_parquet('{files}')")
        for view, zone in ZONE_VIEWS.items():
            con.execute(
                f"create view {view} as select * from read_parquet('{zone(wh)}/ds=*/*.parquet', "
                "hive_partitioning = true, hive_types = {'ds': date})"
            )
        for view, table in SNAPSHOT_VIEWS.items():
            if table(wh).is_dir():
                con.execute(f"create view {view} as select * from read_parquet('{table(wh)}/*.parquet')")
    replace_file(tmp, final)
    return final


def publish_serving_marts(settings: Settings) -> dict[str, int]:
    """Build the dbt models over the published outputs (tag `serving`), export them, refresh the analysts' file."""
    from nightrec.dbt_runner import run_dbt

    run_dbt(settings, ["build", "--select", "tag:serving"], target="duckdb")
    counts = export_marts(settings, SERVING_MARTS)
    build_analyst_db(settings)
    return counts


def publish_segment_marts(settings: Settings, start: date, end: date) -> dict[str, int]:
    """Build the segment marts (tag `segments`) for the nights [start, end), export them, refresh the analysts' file."""
    from nightrec.dbt_runner import run_dbt

    run_dbt(settings, ["build", "--select", "tag:segments"], target="duckdb", start=start, end=end)
    counts = export_marts(settings, SEGMENT_MARTS)
    build_analyst_db(settings)
    return counts


def publish_dbt_docs(settings: Settings, target_dir: Path) -> Path:
    """Copy the static dbt docs site (index.html + JSON artifacts) to ``docs/dbt/``."""
    final = Warehouse.of(settings).dbt_docs()
    staging = fresh_staging(final)
    staging.mkdir(parents=True)
    for name in ("index.html", "manifest.json", "catalog.json"):
        shutil.copy2(target_dir / name, staging / name)
    swap_into_place(staging, final)
    return final


def split_queries(text: str) -> list[str]:
    """The statements of a SQL file: split on the semicolons outside comments and quoted text (an analyst's comment
    may hold one), dropping comment-only pieces."""
    pieces, start, i, quote = [], 0, 0, ""
    while i < len(text):
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif c == ";":
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    out = []
    for piece in pieces:
        code = "\n".join(line for line in piece.splitlines() if not line.strip().startswith("--")).strip()
        if code:
            out.append(piece.strip())
    return out
