"""Wall time of each task of a nightly run at 1x, 10x and 100x the Tmall log: does a night cost more than linearly?

For each factor a scratch warehouse and Airflow home get the up-scaled history (nightrec.upscale) landed as the
shop's deliveries (`land_file`: the DAGs' own land task keeps a delivery, so they run on the bigger log), then the
real commands run: `nightrec bootstrap` (the history before the night, one pass per job) and `nightrec nightly --day
D` (the nightly DAG through `airflow dags test` and spark-submit, with the profile's settings). Each task's wall time
is read back from Airflow (`airflow tasks states-for-dag-run`); the table puts every factor's seconds side by side
with the seconds per million events, which stay flat where a task's cost grows linearly.

    python benchmarks/nightly_stages.py --factors 1,10 --profile smoke
    python benchmarks/nightly_stages.py --factors 100 --profile smoke --keep     # then, to time the night again:
    python benchmarks/nightly_stages.py --factors 100 --profile smoke --keep --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from _figures import machine, record_figure
from _scratch import scratch_warehouse  # benchmarks/ is on sys.path when a script here runs

from nightrec.adapters import days_between, load_adapter
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.landing import land_file, replay
from nightrec.run_manifest import own_run
from nightrec.warehouse import Warehouse


def land_as_deliveries(adapter, bundled: Path, warehouse: Warehouse, start: date, end: date) -> int:
    """Every day of [start, end) of the history file ``bundled`` landed as the shop's delivery; the rows landed."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Warehouse(Path(tmp), adapter.name)
        rows = replay(adapter, staging, start, end, bundled).rows
        for ds in days_between(start, end):
            for path in sorted(staging.raw_day(ds).iterdir()):
                land_file(adapter, warehouse, ds, path)
    return rows


def nightrec(args: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "nightrec_app.cli", *args]
    proc = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nightrec {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def task_seconds(env: dict[str, str], warehouse: Warehouse, night: date) -> dict[str, float]:
    """Each task's wall time in the nightly run of ``night``, as Airflow recorded it."""
    run_id = json.loads(warehouse.run_manifest(night).read_text())["stages"]["airflow"]["run_id"]
    command = [sys.executable, "-m", "nightrec_app.cli", "airflow", "tasks", "states-for-dag-run", "nightly", run_id]
    out = subprocess.run([*command, "-o", "json"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    states = next(json.loads(line) for line in out.stdout.splitlines() if line.startswith("[{"))
    seconds = {}
    for task in states:
        if task.get("start_date") and task.get("end_date"):
            began, ended = (datetime.fromisoformat(task[k]) for k in ("start_date", "end_date"))
            seconds[task["task_id"]] = (ended - began).total_seconds()
    return seconds


def bootstrapped(warehouse: Warehouse, night: date) -> bool:
    """Whether the bootstrap ended well: the run that owns its last day, the day before ``night`` (a night that
    looked back over that day since is a later attempt, not its own run)."""
    run = own_run(warehouse, night - timedelta(days=1)) or {}
    return run.get("dag_id") == "bootstrap" and run.get("state") == "success"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1,10,100", help="comma-separated up-scaling factors")
    parser.add_argument("--profile", default="local", help="configuration profile of the runs (smoke: 1 epoch)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch warehouses")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="a kept warehouse whose bootstrap finished: run only the night on it (it is idempotent)",
    )
    args = parser.parse_args()

    adapter = load_adapter("tmall_brand")
    base = load_settings(args.profile, env={})
    night = adapter.nightly_start
    results: dict[int, tuple[int, dict[str, float], float]] = {}
    for factor in [int(f) for f in args.factors.split(",")]:
        landed = args.workdir.resolve() / f"x{factor}" / "landed.json"  # the events landed, for --reuse
        if args.reuse:
            settings = base.with_overrides(warehouse_root=landed.parent / "warehouse")
            wh = Warehouse(settings.warehouse_root, adapter.name)
            if not landed.is_file() or not bootstrapped(wh, night):
                raise SystemExit(f"--reuse: no finished bootstrap under {landed.parent}; run once with --keep first")
            rows = json.loads(landed.read_text())["rows"]
        else:
            settings, bundled = scratch_warehouse(adapter, factor, args.workdir.resolve(), base)
            wh = Warehouse(settings.warehouse_root, adapter.name)
            rows = land_as_deliveries(adapter, bundled, wh, adapter.history_start, night + timedelta(days=1))
            landed.write_text(json.dumps({"rows": rows}))
        env = {
            **os.environ,
            "NIGHTREC_PROFILE": args.profile,
            "NIGHTREC_SOURCE": adapter.name,
            "NIGHTREC_WAREHOUSE_ROOT": str(settings.warehouse_root),
            "NIGHTREC_AIRFLOW_HOME": str(settings.warehouse_root.parent / "airflow"),
        }
        t0 = time.time()
        if not args.reuse:
            nightrec(["bootstrap"], env)
        t_boot = time.time() - t0
        t0 = time.time()
        nightrec(["nightly", "--day", str(night)], env)
        t_night = time.time() - t0
        tasks = task_seconds(env, wh, night)
        results[factor] = (rows, tasks, t_night)
        boot = "bootstrap reused" if args.reuse else f"bootstrap {t_boot:.0f}s"
        print(f"x{factor}: {rows:,} events; {boot}, night {night} {t_night:.0f}s", flush=True)
        if not args.keep:
            shutil.rmtree(settings.warehouse_root.parent, ignore_errors=True)

    factors = sorted(results)
    print(f"\nThe nightly run of {night} (profile {args.profile}) on {machine()}:")
    print("seconds per task, and seconds per million events (flat across factors where a task's cost is linear)")
    print("| task | " + " | ".join(f"x{f} s | x{f} s/M events" for f in factors) + " |")
    print("|---" * (1 + 2 * len(factors)) + "|")
    for task in [*results[factors[0]][1], "(the whole run, with Airflow's start)"]:
        cells = []
        for f in factors:
            rows, tasks, total = results[f]
            seconds = total if task.startswith("(") else tasks.get(task)
            cells += ["-", "-"] if seconds is None else [f"{seconds:.1f}", f"{seconds / rows * 1e6:.1f}"]
            if seconds is not None:
                data = f"{adapter.name} x{f}, {rows:,} events, night {night}, profile {args.profile}"
                record_figure("nightly_stages", task, round(seconds, 1), "s", data)
        print(f"| {task} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
