"""Scratch warehouses for the benchmarks: one per up-scaling factor, with its history file; the flags of the
benchmarks that copy the users of an already built night, and the two ways they copy them (an Arrow table, a
warehouse's Feast sources). Copies name users as `nightrec.upscale` does, so a copied night is the night the pipeline
would build from the up-scaled log, user for user."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from nightrec.adapters import SourceAdapter
from nightrec.config import PROJECT_ROOT, Settings, load_settings
from nightrec.feature_store import VIEW_EXPORTS
from nightrec.upscale import copy_suffix, new_user_id, upscale
from nightrec.warehouse import Warehouse

USER_EXPORTS = ("user_features", "user_sequences")  # keyed by user: repeated per copy


def scratch_warehouse(adapter: SourceAdapter, factor: int, workdir: Path, base: Settings) -> tuple[Settings, Path]:
    """A fresh directory ``workdir/x<factor>``: settings pointing at its warehouse, and the history to replay."""
    work = workdir / f"x{factor}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundled = adapter.bundled_events if factor == 1 else upscale(adapter, factor, work / adapter.bundled_events.name)
    return base.with_overrides(warehouse_root=work / "warehouse"), bundled


def built_night_arguments(description: str, copied: str, profile_sets: str) -> tuple[argparse.Namespace, Settings]:
    """The flags of a benchmark over a built night whose ``copied`` (users, consumers) it copies k times: --warehouse,
    --factors, --profile (what it sets: ``profile_sets``), --workdir; and the settings of that warehouse."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--factors", default="1,10", help=f"copies of every one of the {copied} (comma-separated)")
    parser.add_argument("--profile", default="local", help=f"the settings profile ({profile_sets})")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    args = parser.parse_args()
    return args, load_settings(args.profile, env={}).with_overrides(warehouse_root=args.warehouse.resolve())


def user_copy(table: pa.Table, k: int) -> pa.Table:
    """Copy ``k`` of ``table``: its users renamed as the up-scaler renames copy k's (copy 0 is ``table`` itself)."""
    if k == 0:
        return table
    where = table.column_names.index("user_id")
    renamed = pc.binary_join_element_wise(table.column("user_id"), pa.scalar(copy_suffix(k)), "")
    return table.set_column(where, table.schema.field(where), renamed)


def copied_users(table: pa.Table, factor: int) -> pa.Table:
    """``factor`` copies of ``table``, copy k's users renamed as the up-scaler renames them."""
    return pa.concat_tables([user_copy(table, k) for k in range(factor)])


def scaled_marts(source: Path, factor: int, target: Path) -> dict[str, int]:
    """Write the Feast sources of ``source`` (a warehouse root) up-scaled ``factor`` times under ``target``."""
    import duckdb

    rows = {}
    with duckdb.connect() as con:
        con.execute("set timezone = 'UTC'")
        for export in VIEW_EXPORTS.values():
            src = Warehouse(source, "").mart_export(export) / "*.parquet"  # marts are per root, not per source
            out = Warehouse(target, "").mart_export(export)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if export in USER_EXPORTS and factor > 1:
                # the same ids as the up-scaler gives (checked against new_user_id below)
                suffixes = ", ".join(f"('{copy_suffix(k)}')" for k in range(factor))
                query = (
                    f"select * replace (user_id || suffix as user_id) "
                    f"from read_parquet('{src}'), (values {suffixes}) as copies(suffix)"
                )
            else:
                query = f"select * from read_parquet('{src}')"
            con.execute(f"copy ({query}) to '{out / 'part-00000.parquet'}' (format parquet, row_group_size 100000)")
            rows[export] = con.execute(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall()[0][0]
        if factor > 1:
            sample = con.execute(
                f"select user_id from read_parquet('{target}/marts/parquet/user_features/*.parquet') "
                "where user_id like '%x1' limit 1"
            ).fetchall()
            original = sample[0][0][: -len("x1")]
            assert sample[0][0] == new_user_id(original, 1), "scaled ids differ from the up-scaler's"
    return rows
