"""CPU and wall time of the night's Spark jobs with the JVM's defaults and with other JVM options (spark.java_options).

Each job of the nightly DAG runs on a built warehouse (one whose night ``--day`` has run: the jobs read what the
night's earlier tasks wrote), over the night's range [day - lookback, day + 1), through the DAG's own
SparkSubmitOperator (``nightrec_app.orchestration.spark_job``) with the profile's settings, first with the JVM's
defaults, then with ``--java-options`` (default: ``nightrec.config.SHORT_JOBS_JAVA_OPTIONS``, what the test suite
runs with), ``--repeats`` times each, alternating. CPU is user + system time of spark-submit and everything it waited
for (the JVM and its Python workers). Rerunning a job rewrites the same outputs (idempotent). Prints one line per
run and a table (after spark-submit's own log, which the operator passes on); nothing is asserted.

    python benchmarks/spark_jvm_options.py --warehouse /tmp/wh                # the newest night, the smoke profile
    python benchmarks/spark_jvm_options.py --warehouse /tmp/wh --day 2014-08-14 --jobs build_segments --repeats 3

Decision 52 in docs/decisions.md has the figures that made the test suite run its Spark jobs with these options.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import SHORT_JOBS_JAVA_OPTIONS, Settings, load_settings
from nightrec.warehouse import complete_nights

JOBS = ("ingest_events", "build_sequences", "build_candidates", "score_topk", "build_segments")


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
    parser.add_argument(
        "--java-options",
        default=SHORT_JOBS_JAVA_OPTIONS,
        help=f"the JVM options weighed (default: {SHORT_JOBS_JAVA_OPTIONS})",
    )
    args = parser.parse_args()
    args.warehouse = args.warehouse.resolve()
    if args.day is None:
        nights = complete_nights(args.warehouse / "candidates")
        if not nights:
            raise SystemExit(f"no night with candidates in {args.warehouse}: run a nightly night there first")
        args.day = nights[-1]

    base = load_settings(args.profile)
    spark = replace(base.spark, master=args.master)
    # the connection and settings an Airflow worker gives the task (before Airflow is imported: it reads them then);
    # a scratch Airflow home, so no metadata database of the project is touched
    airflow = replace(base.airflow, home=Path(tempfile.mkdtemp(prefix="nightrec-bench-airflow-")))
    settings = base.with_overrides(warehouse_root=args.warehouse, spark=spark, airflow=airflow)
    from nightrec_app.airflow_env import airflow_environment

    os.environ.update(airflow_environment(settings))
    variants = {
        "JVM defaults": settings.with_overrides(spark=replace(spark, java_options="")),
        args.java_options: settings.with_overrides(spark=replace(spark, java_options=args.java_options)),
    }
    start = args.day - timedelta(days=settings.pipeline.lookback_days)
    end = args.day + timedelta(days=1)
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for job in args.jobs.split(","):
        for repeat in range(args.repeats):
            for name, variant in variants.items():
                cpu, wall = measure(job, variant, start, end)
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


def measure(job: str, settings: Settings, start: date, end: date) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``job`` through the DAG's SparkSubmitOperator: the CPU of every
    finished child process (spark-submit waits for its JVM, the JVM for its Python workers)."""
    from nightrec_app.orchestration import spark_job

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    spark_job(settings, job, str(start), str(end)).execute({})
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


if __name__ == "__main__":
    main()
