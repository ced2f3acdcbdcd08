"""Feast materialization rows/s and peak memory (SQLite, Redis, the production variant on Spark), on the real marts and
on up-scaled copies.

The copy for factor k is what the pipeline produces from `nightrec.upscale` with factor k, row for row: every user's
feature and sequence rows repeated k times under the up-scaler's user ids (copy 0 keeps the original id), the item
rows once (the up-scaler copies users, not items, so the item table keeps its rows; only its counts would grow, and
values do not change what a write costs). Building it from the marts skips re-running Spark and dbt on the bigger log.

Each (factor, store) pair runs in a fresh process that applies the repository and materializes the whole history in
the profile's chunks (the bootstrap's job). Two peaks are printed: the Python process's own (VmHWM) and the largest
sum over its whole process tree, sampled every 0.2 s (so a lower bound), which counts the Spark JVM and Python
workers of the production variant (Redis online store, SQL registry on a throwaway PostgreSQL, Spark offline store
and Feast's Spark materialization engine on ``local[2]``).

    python benchmarks/feast_materialize.py --warehouse warehouse --factors 1,10,100 --stores local,redis,production
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psutil
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs
from _scratch import scaled_marts

from nightrec.config import PROJECT_ROOT, load_settings

sys.path.insert(0, str(PROJECT_ROOT))  # the throwaway servers the tests start (tests/servers.py)
from tests.servers import postgres_server, redis_server

NAMES = {"local": "SQLite", "redis": "Redis", "production": "Redis + Spark engine"}


def own_peak_mib() -> float:
    """This process's peak resident memory since it started. Not ru_maxrss: Linux carries the parent's resident size
    at fork over an exec into it, so a child of a big benchmark process would report its parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


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
        "peak_rss_mib": own_peak_mib(),
        "chunk_days": settings.feast.materialize_chunk_days,
        "chunks": len(chunks),
    }


def tree_peak_mib(proc: subprocess.Popen, every: float = 0.2) -> float:
    """The largest sum of resident memory over ``proc`` and its descendants, sampled until it exits."""
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker that ended between the listing and the reading
                total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(every)
    return peak / 2**20


def measure(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command`` (a benchmark's one-measurement mode, which prints ``RESULT <json>``) in a fresh process and
    add its process tree's peak memory to the result."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        tree = tree_peak_mib(proc)
        out.seek(0)
        text = out.read()
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{' '.join(command)} failed:\n{text[-5000:]}")
    return json.loads(lines[-1][len("RESULT ") :]) | {"tree_peak_mib": tree}


@contextlib.contextmanager
def feast_servers(variants: list[str], spark_master: str) -> Iterator[dict[str, str]]:
    """A throwaway Redis (and, for the production variant, PostgreSQL for the registry) on 127.0.0.1; yields the
    environment the measured processes need."""
    with contextlib.ExitStack() as servers:
        redis = servers.enter_context(redis_server(Path(servers.enter_context(tempfile.TemporaryDirectory()))))
        env = {**os.environ, "NIGHTREC_REDIS": redis, "NIGHTREC_SPARK_MASTER": spark_master}
        if "production" in variants:
            env["NIGHTREC_FEAST_REGISTRY"] = servers.enter_context(postgres_server())
        yield env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--factors", default="1,100", help="comma-separated up-scaling factors")
    parser.add_argument("--stores", default="local,redis,production", help=f"Feast variants, of: {', '.join(NAMES)}")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    parser.add_argument("--spark-master", default="local[2]", help="the production variant's Spark master")
    parser.add_argument("--one", nargs=2, metavar=("WAREHOUSE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(Path(args.one[0]), args.one[1])), flush=True)
        return
    variants = args.stores.split(",")
    unknown = set(variants) - set(NAMES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}; choose from {', '.join(NAMES)}")

    table = []
    with feast_servers(variants, args.spark_master) as env:
        redis = env["NIGHTREC_REDIS"]
        for factor in (int(f) for f in args.factors.split(",")):
            warehouse = (args.workdir / f"feast_x{factor}" / "warehouse").resolve()
            shutil.rmtree(warehouse, ignore_errors=True)
            t0 = time.time()
            marts = scaled_marts(args.warehouse.resolve(), factor, warehouse)
            print(f"x{factor}: marts {marts} written in {time.time() - t0:.1f}s", flush=True)
            for variant in variants:
                subprocess.run(
                    ["redis-cli", "-p", redis.split(":")[1], "flushall"], check=True, stdout=subprocess.DEVNULL
                )
                result = measure([sys.executable, __file__, "--one", str(warehouse), variant], env)
                print(f"x{factor} {NAMES[variant]}: {result}", flush=True)
                table.append((factor, NAMES[variant], result))

    print(
        "\n| factor | online store | feature rows | chunks (days each) | seconds | rows/s | peak RSS MiB, Python | "
        "peak RSS MiB, process tree |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for factor, store, r in table:
        print(
            f"| {factor} | {store} | {r['rows']:,} | {r['chunks']} ({r['chunk_days']}) | "
            f"{r['seconds']:.1f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mib']:,.0f} | {r['tree_peak_mib']:,.0f} |"
        )
        data = f"the marts of {args.warehouse.name} x{factor}, {r['rows']:,} feature rows"
        record_figure("feast_materialize", f"materialize, {store}", round(r["rows"] / r["seconds"]), "rows/s", data)
        record_figure("feast_materialize", f"materialize peak RSS, {store}", round(r["peak_rss_mib"]), "MiB", data)
        record_figure(
            "feast_materialize",
            f"materialize peak RSS of the process tree, {store}",
            round(r["tree_peak_mib"]),
            "MiB",
            data,
        )


if __name__ == "__main__":
    main()
