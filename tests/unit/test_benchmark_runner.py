"""`python benchmarks/run.py`: one command for every benchmark, one table and JSON with machine and data per figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nightrec.config import PROJECT_ROOT

RUN = PROJECT_ROOT / "benchmarks" / "run.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )


def test_a_benchmark_run_through_the_command_reports_its_figures_with_machine_and_data(tmp_path: Path):
    out = tmp_path / "figures.json"
    proc = _run("training", "--with", "training=--rows 3000 --epochs 1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    (figure,) = doc["figures"]  # one device here: the CPU
    assert figure["benchmark"] == "training" and figure["figure"] == "GNOLR training on cpu"
    assert figure["unit"] == "samples/s" and figure["value"] > 0
    assert figure["data"] == "synthetic Tmall-shaped batches, 3,000 rows x 1 epochs"
    assert "cores" in figure["machine"] and figure["machine"] == doc["machine"] and doc["failed"] == {}
    assert f"| training | GNOLR training on cpu | {figure['value']:,} | samples/s | {figure['data']} |" in proc.stdout
    assert proc.stdout.count(f"machine: {doc['machine']}") == 1


def test_the_list_names_a_script_for_each_benchmark_and_unknown_or_unready_ones_are_reported():
    from benchmarks.run import BENCHMARKS  # (it puts benchmarks/ on sys.path for its _figures import)

    listed = _run("--list").stdout.splitlines()
    assert [line.split()[0] for line in listed] == list(BENCHMARKS)
    assert all((RUN.parent / b.script).is_file() for b in BENCHMARKS.values())
    unknown = _run("no_such_benchmark")
    assert unknown.returncode == 2 and "unknown benchmark(s) ['no_such_benchmark']" in unknown.stderr
    unready = _run("quality")  # it reads a built warehouse: said, not run
    assert unready.returncode == 1 and "FAILED quality: needs --warehouse" in unready.stdout
