"""CPU and wall time of the night's Spark jobs with the JVM's defaults and with other JVM options (spark.java_options).

Each job of the nightly DAG runs through spark-submit on a built warehouse (one whose night ``--day`` has run: the
jobs read what the night's earlier tasks wrote), over the night's range [day - lookback, day + 1), with the
profile's settings, first with the JVM's defaults, then with ``--java-options`` (default: C1 only and the serial
collector, what the test suite runs with), ``--repeats`` times each, alternating. CPU is user + system time of
spark-submit and everything it waited for (the JVM and its Python workers). Rerunning a job rewrites the same
outputs (idempotent). Prints one line per run and a table; nothing is asserted.

    python benchmarks/spark_jvm_options.py --warehouse /tmp/wh                # the newest night, the smoke profile
    python benchmarks/spark_jvm_options.py --warehouse /tmp/wh --day 2014-08-14 --jobs build_segments --repeats 3

Decision 52 in docs/decisions.md has the figures that made the test suite run its Spark jobs with these options.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.warehouse import complete_nights

JOBS = ("ingest_events", "build_sequences", "build_candidates", "score_topk", "build_segments")
SHORT_JOBS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, required=True, help="a built warehouse whose night --day has run")
    parser.add_argument(
        "--day", type=date.fromisoformat, help="the night whose jobs run again (default: the newest with candidates)"
    )
    parser.add_argument("--profile", default="smoke", help="the profile whose Spark settings are measured")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated jobs (default: {','.join(JOBS)})")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each job per variant (default 2)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--java-options", default=SHORT_JOBS, help=f"the JVM options weighed (default: {SHORT_JOBS})")
    args = parser.parse_args()
    args.warehouse = args.warehouse.resolve()
    if args.day is None:
        nights = complete_nights(args.warehouse / "candidates")
        if not nights:
            raise SystemExit(f"no night with candidates in {args.warehouse}: run a nightly night there first")
        args.day = nights[-1]

    spark = load_settings(args.profile).spark
    variants = {
        "JVM defaults": replace(spark, java_options="").all_conf(),
        args.java_options: replace(spark, java_options=args.java_options).all_conf(),
    }
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for job in args.jobs.split(","):
        for repeat in range(args.repeats):
            for name, conf in variants.items():
                cpu, wall = measure(job, conf, args, spark.driver_memory)
                figures.setdefault((job, name), []).append((cpu, wall))
                print(f"{job:<17} {name:<13.13} run {repeat + 1}: CPU {cpu:6.1f} s, wall {wall:6.1f} s", flush=True)

    data = f"{args.warehouse.name}, night {args.day}, {args.master}"
    print(f"\n| job | variant | CPU s (median) | wall s (median) |  ({data}, {args.repeats} runs each)")
    print("|---|---|---|---|")
    totals: dict[str, list[float]] = {}
    for (job, name), runs in figures.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        totals.setdefault(name, [0.0, 0.0])
        totals[name][0] += cpu
        totals[name][1] += wall
        print(f"| {job} | {name} | {cpu:.1f} | {wall:.1f} |")
        record_figure("spark_jvm_options", f"{job} CPU, {name}", round(cpu, 1), "s", data)
        record_figure("spark_jvm_options", f"{job} wall, {name}", round(wall, 1), "s", data)
    for name, (cpu, wall) in totals.items():
        print(f"| all | {name} | {cpu:.1f} | {wall:.1f} |")


def measure(job: str, conf: dict[str, str], args: argparse.Namespace, memory: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one spark-submit of ``job``, with its children's CPU from wait4."""
    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    settings = load_settings(args.profile)
    start = args.day - timedelta(days=settings.pipeline.lookback_days)
    command = [spark_submit, "--master", args.master, "--driver-memory", memory, "--name", f"bench-{job}"]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(PROJECT_ROOT / "spark_jobs" / f"{job}.py"), "--source", settings.source]
    command += ["--start", str(start), "--end", str(args.day + timedelta(days=1)), "--profile", args.profile]
    command += ["--warehouse", str(args.warehouse)]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    log = args.warehouse.parent / f".bench-{job}.log"
    t0 = time.time()
    with log.open("w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4 reaps the child and returns its resources with those of every descendant it waited for
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - t0
    code = child.returncode = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{job} failed (exit {code}), its output: {log}")
    return usage.ru_utime + usage.ru_stime, wall


if __name__ == "__main__":
    main()
