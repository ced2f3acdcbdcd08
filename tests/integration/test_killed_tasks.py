"""Writing tasks killed as they publish (SIGKILL through the fault hook of nightrec/faults.py), each in its own
process on a copy of the session's warehouse, as Airflow runs them: readers keep the previous version (the path
still names the same file or directory), the new one waits hidden beside it, and a retry publishes it and removes
what the killed run left. The ingest Spark job is killed the same way under Airflow in the e2e tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from nightrec.config import PROJECT_ROOT, Settings
from nightrec.faults import KILL_AT_COMMIT
from nightrec.warehouse import Warehouse

pytestmark = pytest.mark.spark  # the session warehouse is built by the Spark jobs

DAY = date(2014, 8, 15)


@pytest.fixture(scope="module")
def copy(tmall_marts: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("killed") / "warehouse"
    shutil.copytree(tmall_marts.warehouse_root, root, symlinks=True)
    return tmall_marts.with_overrides(warehouse_root=root)


def _task(settings: Settings, task: str, kill_at: str | None) -> subprocess.CompletedProcess:
    """One task of the nightly run of DAY, in a process of its own (as an Airflow worker runs it)."""
    code = (
        "import sys; from nightrec_app import tasks\n"
        f"ctx = tasks.context('{DAY}', '{DAY + timedelta(days=1)}')\n"
        "extra = ('nightly', 'manual__kill_test') if sys.argv[1] == 'land_days' else ()\n"
        "getattr(tasks, sys.argv[1])(ctx, *extra)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_COMMIT} | settings.environment()
    if kill_at is not None:
        env[KILL_AT_COMMIT] = kill_at
    return subprocess.run(
        [sys.executable, "-c", code, task], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _leftovers(path: Path) -> list[str]:
    return [p.name for p in path.parent.iterdir() if p.name.startswith((f".tmp-{path.name}-", f".trash-{path.name}-"))]


@pytest.mark.parametrize(
    ("task", "target"),
    [
        ("land_days", lambda wh: wh.raw_day(DAY)),  # the replay lands the day's file
        ("ingest_attribute_snapshots", Warehouse.bronze_item_attributes),
        ("publish_marts", lambda wh: wh.mart_export("fct_interactions")),  # one of the exports
    ],
    ids=["land", "ingest_attributes", "publish_marts"],
)
def test_a_task_killed_as_it_publishes_leaves_the_previous_version_and_a_retry_publishes(copy, task, target):
    wh = Warehouse.of(copy)
    path = target(wh)
    if task == "land_days":  # the day's file not landed yet: the previous version is the day without it
        (path / "t_alibaba_data.csv").unlink()
    previous = path.stat().st_ino

    killed = _task(copy, task, f"*/{path.relative_to(wh.root)}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"before it publishes {path}" in killed.stderr
    assert path.stat().st_ino == previous  # readers see the previous version
    assert _leftovers(path), "the killed run's new version should wait hidden beside the target"

    retry = _task(copy, task, None)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert path.stat().st_ino != previous  # the new version is in place
    assert not _leftovers(path)  # and the retry removed what the killed run left
    if task == "land_days":
        assert (path / "t_alibaba_data.csv").is_file()
