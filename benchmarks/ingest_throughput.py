"""Events/s of landing, ingest and sequences on the real Tmall log and on up-scaled copies of it.

Each factor gets its own warehouse; the whole history runs in one pass per job (as the bootstrap does) inside one
Spark session, whose start-up is reported separately. Prints one table; nothing is asserted.

    python benchmarks/ingest_throughput.py --factors 1,10,100
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _figures import record_figure
from _scratch import scratch_warehouse  # benchmarks/ is on sys.path when a script here runs

from nightrec.adapters import load_adapter
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.landing import replay
from nightrec.warehouse import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1,10,100", help="comma-separated up-scaling factors")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    parser.add_argument("--master", default="local[*]", help="Spark master")
    parser.add_argument("--driver-memory", default="12g")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from spark_jobs import build_sequences, ingest_events
    from spark_jobs.common import build_spark

    adapter = load_adapter("tmall_brand")
    base = load_settings("local", env={})
    base = base.with_overrides(spark=replace(base.spark, master=args.master, driver_memory=args.driver_memory))
    t0 = time.time()
    spark = build_spark(base, "benchmark-ingest")
    startup = time.time() - t0
    end = adapter.history_end + timedelta(days=1)
    rows = []
    for factor in [int(f) for f in args.factors.split(",")]:
        settings, bundled = scratch_warehouse(adapter, factor, args.workdir, base)
        t = time.time()
        report = replay(adapter, Warehouse(settings.warehouse_root, adapter.name), adapter.history_start, end, bundled)
        t_land = time.time() - t
        t = time.time()
        ingest_events.run(spark, settings, adapter.history_start, end)
        t_ingest = time.time() - t
        t = time.time()
        build_sequences.run(spark, settings, adapter.history_start, end)
        t_seq = time.time() - t
        n = report.rows
        rows.append((factor, n, t_land, t_ingest, t_seq))
        print(f"x{factor}: {n:,} events land {t_land:.1f}s ingest {t_ingest:.1f}s sequences {t_seq:.1f}s", flush=True)
        shutil.rmtree(settings.warehouse_root.parent, ignore_errors=True)
    spark.stop()

    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Spark {args.master}, "
        f"driver {args.driver_memory}; Spark start-up {startup:.1f}s (not included below)"
    )
    print(
        f"{'factor':>6} {'events':>12} {'land s':>7} {'ingest s':>9} {'seq s':>7} {'ingest ev/s':>12} "
        f"{'seq ev/s':>10} {'ingest+seq ev/s':>16}"
    )
    for factor, n, tl, ti, ts in rows:
        print(
            f"{factor:>6} {n:>12,} {tl:>7.1f} {ti:>9.1f} {ts:>7.1f} {n / ti:>12,.0f} {n / ts:>10,.0f} "
            f"{n / (ti + ts):>16,.0f}"
        )
        data = f"{adapter.name} x{factor}, {n:,} events"
        record_figure("ingest", "land (replay)", round(tl, 1), "s", data)
        record_figure("ingest", "ingest events/s", round(n / ti), "events/s", data, seconds=round(ti, 1))
        record_figure("ingest", "sequences events/s", round(n / ts), "events/s", data, seconds=round(ts, 1))


if __name__ == "__main__":
    main()
