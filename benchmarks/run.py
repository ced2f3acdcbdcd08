"""Every benchmark, or a named subset, in one command: one table of figures, also written as JSON.

Each benchmark is a script of this folder run in its own process (as you would run it by hand), with the arguments
below; each figure it reports comes back with the machine it ran on and the data it ran on (benchmarks/_figures.py).
A benchmark that fails is reported with the end of its output, the others still run, and the command exits 1.

    python benchmarks/run.py --list                                  # the benchmarks and what each measures
    python benchmarks/run.py ingest dbt topk_scoring training        # a subset
    python benchmarks/run.py --warehouse warehouse --json benchmarks/results.json   # all (hours on 2 cores)
    python benchmarks/run.py training topk_scoring --quick           # small sizes: a check that they run
    python benchmarks/run.py nightly_stages --with "nightly_stages=--factors 1,10 --profile smoke"

Benchmarks that read a built warehouse (`make demo` builds ./warehouse) take it from --warehouse.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _figures import BENCH_JSON, machine  # noqa: E402 - benchmarks/ is put on the path above


@dataclass(frozen=True)
class Benchmark:
    script: str
    what: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] | None = None  # small sizes for --quick (None: the same as args)
    warehouse: bool = False  # reads a built warehouse (--warehouse)
    extra: dict[str, str] = field(default_factory=dict)  # environment


BENCHMARKS: dict[str, Benchmark] = {
    "nightly_stages": Benchmark(
        "nightly_stages.py",
        "wall time of each task of a nightly run (the real DAG) at 1x, 10x and 100x the Tmall log",
        ("--factors", "1,10,100"),
        ("--factors", "1"),
    ),
    "ingest": Benchmark(
        "ingest_throughput.py",
        "events/s of landing, the ingest and the sequences Spark jobs at 1x, 10x, 100x",
        ("--factors", "1,10,100"),
        ("--factors", "1"),
    ),
    "dbt": Benchmark("dbt_build.py", "dbt build per target at 1x and 10x", ("--factors", "1,10"), ("--factors", "1")),
    "feast": Benchmark(
        "feast_serving.py",
        "Feast materialization rows/s and online lookup latency (SDK and HTTP), SQLite and Redis",
        warehouse=True,
    ),
    "feast_materialize": Benchmark(
        "feast_materialize.py",
        "Feast materialization rows/s and peak memory at 1x, 10x and 100x: SQLite, Redis, the Spark engine",
        ("--factors", "1,10,100"),
        ("--factors", "1"),
        warehouse=True,
    ),
    "feature_fetch": Benchmark(
        "feature_fetch.py", "training's point-in-time feature fetch, per key and per row", warehouse=True
    ),
    "feature_fetch_memory": Benchmark(
        "feature_fetch.py",
        "peak memory of training's feature fetch at 1x, 10x and 100x: DuckDB and Spark offline stores",
        ("--factors", "1,10,100"),
        ("--factors", "1"),
        warehouse=True,
    ),
    "audience_scaling": Benchmark(
        "audience_scaling.py",
        "seconds of each saved lookalike audience (seed measured, then expanded) at 1x, 10x and 100x the consumers",
        ("--factors", "1,10,100"),
        ("--factors", "1"),
        warehouse=True,
    ),
    "ranker_scaling": Benchmark(
        "ranker_scaling.py",
        "seconds of the ranker stage (train, judge) on the last night's candidates at 1x and 10x the users",
        ("--factors", "1,10"),
        ("--factors", "1"),
        warehouse=True,
    ),
    "spark_jvm_options": Benchmark(
        "spark_jvm_options.py",
        "CPU and wall seconds of the night's Spark jobs with the JVM's defaults and with C1 only + serial GC",
        ("--repeats", "2"),
        ("--repeats", "1", "--jobs", "build_sequences"),
        warehouse=True,
    ),
    "training": Benchmark(
        "gnolr_gpu.py",
        "training samples/s of the GNOLR model on CPU (and a CUDA GPU when one is visible)",
        ("--rows", "200000", "--epochs", "2"),
        ("--rows", "3000", "--epochs", "1"),
    ),
    "data_parallel": Benchmark(
        "data_parallel_training.py",
        "the night's models trained by 1 and 2 data-parallel processes (torchrun): figures and seconds, three seeds",
        ("--seeds", "0,1,2", "--processes", "1,2"),
        ("--seeds", "0", "--processes", "1,2"),
        warehouse=True,
    ),
    "topk_scoring": Benchmark(
        "topk_scoring.py",
        "top-k scores/s of the Spark job against the single-process NumPy limit",
        ("--sizes", "100000x10000,1000000x100000"),
        ("--sizes", "20000x2000"),
    ),
    "quality": Benchmark(
        "training_quality.py",
        "the published lists against every baseline, three seeds, paired-bootstrap intervals",
        ("--seeds", "0,1,2"),
        ("--seeds", "0"),
        warehouse=True,
    ),
    "lookalike": Benchmark(
        "lookalike_quality.py",
        "lookalike audiences: lift over random per consumer representation, of hidden members and later converters",
        ("--encoder", "both", "--encoder-seeds", "0,1,2", "--prospective", "30"),
        ("--encoder", "", "--repeats", "1"),
        warehouse=True,
    ),
    "segments": Benchmark(
        "segments_nightly.py",
        "consumer encoder and segments job night after night: seconds, silhouette, stability",
        ("--factors", "1", "--nights", "3"),
        ("--factors", "1", "--nights", "2", "--epochs", "1"),
    ),
}


def run_one(
    name: str, bench: Benchmark, quick: bool, warehouse: Path | None, given: list[str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Run one benchmark in its own process (with ``given`` arguments instead of its own); its figures and '' or why
    it failed."""
    args = given if given is not None else list(bench.quick if quick and bench.quick is not None else bench.args)
    if bench.warehouse:
        if warehouse is None:
            return [], "needs --warehouse (a built warehouse: `make demo` builds ./warehouse)"
        args += ["--warehouse", str(warehouse)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.jsonl"
        env = {**os.environ, **bench.extra, BENCH_JSON: str(out)}
        command = [sys.executable, str(HERE / bench.script), *args]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        t0 = time.time()
        proc = subprocess.run(
            command, env=env, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sys.stdout.write(proc.stdout)
        figures = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
        print(f"== {name}: exit {proc.returncode} after {time.time() - t0:.0f}s, {len(figures)} figures", flush=True)
        if proc.returncode != 0:
            return figures, f"exit {proc.returncode}: " + " / ".join(proc.stdout.strip().splitlines()[-3:])
        if not figures:
            return figures, "reported no figure"
        return figures, ""


def table(figures: list[dict[str, Any]]) -> str:
    """The figures as one Markdown table; the machine once above it when every figure ran on the same one."""
    machines = {f["machine"] for f in figures}
    lines = [f"machine: {next(iter(machines))}"] if len(machines) == 1 else []
    head = "| benchmark | figure | value | unit | data |" + ("" if len(machines) == 1 else " machine |")
    lines += [head, "|---" * (5 + (len(machines) != 1)) + "|"]
    for f in figures:
        value = f["value"]
        shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}" if isinstance(value, float) else str(value)
        if "low" in f and "high" in f:
            shown += f" [{f['low']:+.4f}, {f['high']:+.4f}]"
        row = f"| {f['benchmark']} | {f['figure']} | {shown} | {f['unit']} | {f['data']} |"
        lines.append(row + ("" if len(machines) == 1 else f" {f['machine']} |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--warehouse", type=Path, help="a built warehouse, for the benchmarks that read one")
    parser.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that each runs, not figures to quote")
    parser.add_argument(
        "--with",
        dest="given",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="run benchmark NAME with these arguments instead of its own (repeatable), e.g. 'dbt=--factors 1'",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, bench in BENCHMARKS.items():
            print(f"{name:<18} {bench.what}{' (needs --warehouse)' if bench.warehouse else ''}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    given: dict[str, list[str]] = {}
    for entry in args.given:
        name, _, text = entry.partition("=")
        if name not in BENCHMARKS:
            parser.error(f"--with {entry!r}: unknown benchmark {name!r}")
        given[name] = shlex.split(text)
    warehouse = args.warehouse.resolve() if args.warehouse else None
    figures: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for name in args.names or list(BENCHMARKS):
        found, why = run_one(name, BENCHMARKS[name], args.quick, warehouse, given.get(name))
        figures += found
        if why:
            failed[name] = why
    print("\n" + (table(figures) if figures else "no figures"))
    for name, why in failed.items():
        print(f"FAILED {name}: {why}")
    if args.json:
        doc = {"machine": machine(), "quick": args.quick, "figures": figures, "failed": failed}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
