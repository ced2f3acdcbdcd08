"""Writing tasks killed as they publish (SIGKILL through the fault hook of nightrec/faults.py), each in its own
process on a copy of the session's warehouse, as Airflow runs them: readers keep the previous version (the path
still names the same file or directory), the new one waits hidden beside it, and a retry publishes it and removes
what the killed run left. The ingest Spark job is killed the same way under Airflow in the e2e tests."""

from __future__ import annotations

import os
import shutil
import signal
from datetime import date

import pytest

from nightrec.completeness import complete_through
from nightrec.config import Settings
from nightrec.warehouse import Warehouse
from tests.conftest import leftovers, task_in_process

pytestmark = pytest.mark.spark  # the session warehouse is built by the Spark jobs

DAY = date(2014, 8, 15)


@pytest.fixture(scope="module")
def copy(tmall_marts: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("killed") / "warehouse"
    shutil.copytree(tmall_marts.warehouse_root, root, symlinks=True)
    return tmall_marts.with_overrides(warehouse_root=root)


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

    env = os.environ | copy.environment()
    killed = task_in_process(env, task, DAY, f"*/{path.relative_to(wh.root)}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"before it publishes {path}" in killed.stderr
    assert path.stat().st_ino == previous  # readers see the previous version
    assert leftovers(path), "the killed run's new version should wait hidden beside the target"

    retry = task_in_process(env, task, DAY)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert path.stat().st_ino != previous  # the new version is in place
    assert not leftovers(path)  # and the retry removed what the killed run left
    if task == "land_days":
        assert (path / "t_alibaba_data.csv").is_file()
    if task == "publish_marts":  # and only the publication that succeeded says the marts are complete
        assert complete_through(wh, "marts") == DAY
