"""The figures a benchmark reports, collected by `python benchmarks/run.py` into one table (and JSON).

A benchmark script prints its own table as before and also calls :func:`report` for each figure; when the runner
started it, the figure is appended as one JSON line to the file ``$NIGHTREC_BENCH_JSON`` names, with the machine it
ran on and the size of the data it ran on, so every number says where it comes from. Run alone, a script only prints.
"""

from __future__ import annotations

import json
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

BENCH_JSON = "NIGHTREC_BENCH_JSON"


@cache
def machine() -> str:
    """This machine in words: cores, CPU model, memory, GPU (from /proc and nvidia-smi; no import of torch)."""
    import shutil
    import subprocess

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = ""
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip().splitlines()
        gpu = ", ".join(out) if out else gpu
    return f"{os.cpu_count()} cores ({cpu}){memory}, {gpu}"


def record_figure(benchmark: str, figure: str, value: float, unit: str, data: str, **details: Any) -> None:
    """One figure of ``benchmark``: ``value`` in ``unit``, measured on ``data`` (its source and size, in words)."""
    path = os.environ.get(BENCH_JSON)
    if not path:
        return
    row = {"benchmark": benchmark, "figure": figure, "value": value, "unit": unit, "data": data, "machine": machine()}
    with open(path, "a") as fh:
        fh.write(json.dumps(row | details, default=str) + "\n")
