"""Wall time of `dbt build` (all models and tests) per target on the real Tmall data and on up-scaled copies.

For each factor: land + ingest the (up-scaled) history into a scratch warehouse, then time a full `dbt build` on the
duckdb target (in-process) and on the spark target (its own process, as in the DAG: session method, local[*]).
Prints one table, then each target's slowest models (from dbt's run_results.json) and, for the in-process duckdb
target, the peak resident memory of this process after its build; nothing is asserted.

    python benchmarks/dbt_build.py --factors 1,10
    python benchmarks/dbt_build.py --factors 100 --targets duckdb   # 18.3 million events (decision 40)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _figures import record_figure
from _scratch import scratch_warehouse  # benchmarks/ is on sys.path when a script here runs

from nightrec.adapters import load_adapter
from nightrec.attributes import ingest_attributes
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.dbt_runner import run_dbt, target_path
from nightrec.landing import replay
from nightrec.warehouse import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1,10", help="comma-separated up-scaling factors")
    parser.add_argument("--targets", default="duckdb,spark", help="dbt targets to time")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench" / "dbt", help="scratch directory")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    adapter = load_adapter("tmall_brand")
    base = load_settings("local", env={})
    factors = [int(f) for f in args.factors.split(",")]
    # Ingest in a child process: a stopped Spark session keeps its JVM (and its 8g driver) until the Python process
    # ends, which at 100x left 7.8 GiB resident beside the DuckDB build timed below.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        built = pool.submit(prepare, factors, args.workdir).result()
    prepared = [(factor, n, base.with_overrides(warehouse_root=root)) for factor, n, root in built]
    rows = []
    for factor, n, settings in prepared:
        for target in args.targets.split(","):
            t = time.time()
            if target == "duckdb":
                run_dbt(settings, ["build", "--quiet"], target="duckdb")
            else:
                env = {**os.environ, **settings.environment()}
                cmd = [sys.executable, "-m", "nightrec_app.cli", "dbt", "--target", "spark", "build", "--quiet"]
                subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=True)
            rows.append((factor, n, target, time.time() - t))
            print(f"x{factor} {target}: {rows[-1][3]:.1f}s", flush=True)
            for model, secs in slowest_models(target_path(settings, target) / "run_results.json"):
                print(f"    {model:<32} {secs:>8.1f}s")
            if target == "duckdb":  # in this process: what DuckDB held at its peak so far
                print(f"    peak resident memory of this process: {peak_rss_gib():.2f} GiB", flush=True)

    print(f"\nmachine: {os.cpu_count()} cores; dbt build = every model with its data and unit tests (dbt/)")
    print(f"{'factor':>6} {'events':>12} {'target':>7} {'dbt build s':>12}")
    for factor, n, target, secs in rows:
        print(f"{factor:>6} {n:>12,} {target:>7} {secs:>12.1f}")
        record_figure(
            "dbt", f"dbt build, {target} target", round(secs, 1), "s", f"{adapter.name} x{factor}, {n:,} events"
        )
    shutil.rmtree(args.workdir, ignore_errors=True)


def prepare(factors: list[int], workdir: Path) -> list[tuple[int, int, Path]]:
    """Land, ingest and sequence each factor's copy of the history: (factor, raw rows, warehouse root)."""
    from spark_jobs import build_sequences, ingest_events
    from spark_jobs.common import build_spark

    adapter = load_adapter("tmall_brand")
    base = load_settings("local", env={})
    base = base.with_overrides(spark=replace(base.spark, driver_memory="8g"))
    end = adapter.history_end + timedelta(days=1)
    spark = build_spark(base, "benchmark-dbt-ingest")
    built = []
    for factor in factors:
        settings, bundled = scratch_warehouse(adapter, factor, workdir, base)
        warehouse = Warehouse(settings.warehouse_root, adapter.name)
        report = replay(adapter, warehouse, adapter.history_start, end, bundled)
        ingest_attributes(adapter, warehouse)
        ingest_events.run(spark, settings, adapter.history_start, end)
        build_sequences.run(spark, settings, adapter.history_start, end)  # the user_sequences mart reads them
        built.append((factor, report.rows, settings.warehouse_root))
    spark.stop()
    return built


def slowest_models(run_results: Path, n: int = 5) -> list[tuple[str, float]]:
    """The n models that took longest in dbt's last invocation, with their execution seconds."""
    results = json.loads(run_results.read_text())["results"]
    models = [(r["unique_id"].split(".")[-1], r["execution_time"]) for r in results if r["unique_id"][:6] == "model."]
    return sorted(models, key=lambda m: -m[1])[:n]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


if __name__ == "__main__":
    main()
