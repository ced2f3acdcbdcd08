"""Writing tasks killed as they publish (SIGKILL through the fault hook of nightrec/faults.py), each in its own
process on a copy of the session's warehouse, as Airflow runs them: readers keep the previous version (the path
still names the same file or directory), the new one waits hidden beside it, and a retry publishes it and removes
what the killed run left. The ingest Spark job is killed the same way under Airflow in the e2e tests."""

from __future__ import annotations

import os
import shutil
from datetime import date

import pytest

from nightrec.completeness import complete_through
from nightrec.config import Settings
from nightrec.warehouse import Warehouse
from tests.conftest import killed_then_retried

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

    killed_then_retried(os.environ | copy.environment(), task, DAY, path, wh.root)
    if task == "land_days":
        assert (path / "t_alibaba_data.csv").is_file()
    if task == "publish_marts":  # and only the publication that succeeded says the marts are complete
        assert complete_through(wh, "marts") == DAY
