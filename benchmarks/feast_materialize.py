"""Feast materialization rows/s and peak memory, SQLite and Redis, on the real marts and on an up-scaled copy.

The copy for factor k is what the pipeline produces from `nightrec.upscale` with factor k, row for row: every user's
feature and sequence rows repeated k times under the up-scaler's user ids (copy 0 keeps the original id), the item
rows once (the up-scaler copies users, not items, so the item table keeps its rows; only its counts would grow, and
values do not change what a write costs). Building it from the marts skips re-running Spark and dbt on the bigger log.

Each (factor, store) pair runs in a fresh process that applies the repository and materializes the whole history in
the profile's chunks (the bootstrap's job), so the peak RSS printed is that of one materialization.

    python benchmarks/feast_materialize.py --warehouse warehouse --factors 1,100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs
from feast_serving import _free_port  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.feature_store import VIEW_EXPORTS
from nightrec.upscale import new_user_id
from nightrec.warehouse import Warehouse

USER_EXPORTS = ("user_features", "user_sequences")  # keyed by user: repeated per copy


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
                query = (
                    f"select * replace (case when k = 0 then user_id else user_id || 'x' || k end as user_id) "
                    f"from read_parquet('{src}'), range({factor}) as copies(k)"
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


def one_run(warehouse: Path, variant: str) -> dict:
    """Apply and materialize the whole history of ``warehouse`` into the ``variant`` online store (this process)."""
    from nightrec import feature_store
    from nightrec.adapters import load_adapter

    base = load_settings().with_overrides(warehouse_root=warehouse)
    settings = base.with_overrides(feast=replace(base.feast, variant=variant))
    adapter = load_adapter(settings.source)
    feature_store.apply(settings)
    t0 = time.time()
    chunks = feature_store.materialize(settings, adapter.history_start, adapter.history_end + timedelta(days=1))
    seconds = time.time() - t0
    return {
        "rows": sum(sum(c.rows.values()) for c in chunks),
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "chunk_days": settings.feast.materialize_chunk_days,
        "chunks": len(chunks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--factors", default="1,100", help="comma-separated up-scaling factors")
    parser.add_argument("--stores", default="local,redis", help="Feast variants: local (SQLite), redis")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    parser.add_argument("--one", nargs=2, metavar=("WAREHOUSE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(Path(args.one[0]), args.one[1])), flush=True)
        return

    names = {"local": "SQLite", "redis": "Redis"}
    redis_dir = Path(tempfile.mkdtemp())
    port = _free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--dir", str(redis_dir)],
        stdout=subprocess.DEVNULL,
    )
    env = {**os.environ, "NIGHTREC_REDIS": f"127.0.0.1:{port}"}
    table = []
    try:
        for factor in (int(f) for f in args.factors.split(",")):
            warehouse = (args.workdir / f"feast_x{factor}" / "warehouse").resolve()
            shutil.rmtree(warehouse, ignore_errors=True)
            t0 = time.time()
            marts = scaled_marts(args.warehouse.resolve(), factor, warehouse)
            print(f"x{factor}: marts {marts} written in {time.time() - t0:.1f}s", flush=True)
            for variant in args.stores.split(","):
                subprocess.run(["redis-cli", "-p", str(port), "flushall"], check=True, stdout=subprocess.DEVNULL)
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", str(warehouse), variant],
                    env=env,
                    cwd=PROJECT_ROOT,
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"x{factor} {variant} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                result = json.loads(lines[-1][len("RESULT ") :])
                print(f"x{factor} {names[variant]}: {result}", flush=True)
                table.append((factor, names[variant], result))
    finally:
        redis.terminate()
        shutil.rmtree(redis_dir, ignore_errors=True)

    print("\n| factor | online store | feature rows | chunks (days each) | seconds | rows/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for factor, store, r in table:
        print(
            f"| {factor} | {store} | {r['rows']:,} | {r['chunks']} ({r['chunk_days']}) | "
            f"{r['seconds']:.1f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mib']:,.0f} |"
        )
        data = f"the marts of {args.warehouse.name} x{factor}, {r['rows']:,} feature rows"
        record_figure("feast_materialize", f"materialize, {store}", round(r["rows"] / r["seconds"]), "rows/s", data)
        record_figure("feast_materialize", f"materialize peak RSS, {store}", round(r["peak_rss_mib"]), "MiB", data)


if __name__ == "__main__":
    main()
