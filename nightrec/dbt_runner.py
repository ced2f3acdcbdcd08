"""Run the dbt project (dbt/) on either target with the variables the settings and the source adapter give."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

from nightrec.adapters import load_adapter
from nightrec.config import PROJECT_ROOT, Settings
from nightrec.errors import NightrecError

log = logging.getLogger(__name__)

DBT_DIR = PROJECT_ROOT / "dbt"
TARGETS = ("duckdb", "spark", "spark_thrift")


def dbt_vars(settings: Settings, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    """The project variables: where the zones are, the source's levels and the days to rebuild."""
    adapter = load_adapter(settings.source)
    out: dict[str, Any] = {"warehouse_root": str(settings.warehouse_root), "max_level": adapter.max_level}
    if start is not None:
        out["start_ds"] = start.isoformat()
    if end is not None:
        out["end_ds"] = end.isoformat()
    return out


def target_path(settings: Settings, target: str) -> Path:
    """Where dbt writes its artifacts for the settings' warehouse (not dbt/target/, which every warehouse shares)."""
    from nightrec.warehouse import Warehouse

    return Warehouse.of(settings).dbt_artifacts(target)


def run_dbt(
    settings: Settings,
    command: list[str],
    target: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Any:
    """Invoke dbt in-process (``dbtRunner``); raise NightrecError naming the failed nodes.

    :param command: e.g. ``["build"]`` or ``["docs", "generate"]``. Without ``--select``, models tagged ``serving``
        (they read the published top-k, which exists only after training) and ``segments`` (they read the segments
        job's output) are left out of build/run/test: the top-k publication and publish_segments build them
        (``--select tag:serving`` / ``tag:segments``).
    :param start: with ``end``, the day range [start, end) incremental models rebuild.
    """
    from dbt.cli.main import dbtRunner

    target = target or settings.dbt_target
    if target not in TARGETS:
        raise NightrecError(f"Unknown dbt target {target!r}; choose one of {TARGETS}")
    from nightrec.warehouse import Warehouse

    Warehouse.of(settings).ensure_layout()
    os.environ.update(settings.with_overrides(dbt_target=target).environment())  # profiles.yml reads them
    if command[0] in {"build", "run", "test"} and not {"--select", "-s"} & set(command):
        command = [*command, "--exclude", "tag:serving", "tag:segments"]
    args = [
        *command,
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target",
        target,
        "--target-path",
        str(target_path(settings, target)),
        "--log-path",
        str(target_path(settings, "logs")),
        "--vars",
        json.dumps(dbt_vars(settings, start, end)),
    ]
    t0 = time.time()
    result = dbtRunner().invoke(args)
    if not result.success:
        failed = []
        for r in getattr(result.result, "results", None) or []:
            if str(getattr(r, "status", "")) in {"error", "fail"}:
                failed.append(f"{r.node.unique_id}: {r.message}")
        detail = "; ".join(failed[:10]) or str(result.exception)
        raise NightrecError(f"dbt {' '.join(command)} on target {target} failed: {detail}")
    log.info(f"dbt {' '.join(command)} on {target}: ok in {time.time() - t0:.1f}s")
    return result


MANIFEST = DBT_DIR / "target" / "parse" / "manifest.json"


def _project_files() -> list[Path]:
    files = [DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml"]
    for sub in ("models", "macros", "tests"):
        files += [p for p in (DBT_DIR / sub).rglob("*") if p.is_file()]
    return files


def ensure_manifest() -> Path:
    """Build dbt/target/parse/manifest.json with `dbt parse` when missing or older than the project's files.

    Cosmos renders the dbt task group from it (LoadMode.DBT_MANIFEST), so parsing a DAG file stays cheap.
    """
    import subprocess
    import sys

    if MANIFEST.is_file() and MANIFEST.stat().st_mtime >= max(p.stat().st_mtime for p in _project_files()):
        return MANIFEST
    dbt = Path(sys.executable).parent / "dbt"
    cmd = [
        str(dbt),
        "parse",
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(MANIFEST.parent),
        "--quiet",
    ]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not MANIFEST.is_file():
        raise NightrecError(f"`dbt parse` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return MANIFEST
