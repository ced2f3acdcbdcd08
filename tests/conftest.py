"""Shared fixtures: a Spark session per test process; one warehouse of the real Tmall log per test run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightrec.adapters import SourceAdapter, load_adapter
from nightrec.config import SHORT_JOBS_JAVA_OPTIONS, Settings, load_settings
from nightrec.faults import published_version
from nightrec.hidden_siblings import hidden_siblings
from nightrec.warehouse import Warehouse
from tests import servers
from tests.servers import free_port, postgres_server, serving, wait_for_port

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def make_settings(warehouse_root: Path, source: str = "tmall_brand", **pipeline: int) -> Settings:
    base = load_settings("local", env={})
    # every Spark job of the tests lasts seconds: the JVM options for short jobs (decision 52)
    spark = replace(
        base.spark, master="local[2]", shuffle_partitions=4, driver_memory="2g", java_options=SHORT_JOBS_JAVA_OPTIONS
    )
    return base.with_overrides(
        warehouse_root=warehouse_root,
        source=source,
        spark=spark,
        pipeline=replace(base.pipeline, **pipeline) if pipeline else base.pipeline,
    )


@pytest.fixture(scope="session")
def tmall() -> SourceAdapter:
    return load_adapter("tmall_brand")


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.common import build_spark

    session = build_spark(make_settings(Path("/nonexistent")), "nightrec-tests")
    yield session
    session.stop()


def _run_temp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of this whole test run: under pytest-xdist the parent of every worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _build_tmall_history(request: pytest.FixtureRequest, tmall: SourceAdapter, root: Path) -> None:
    from nightrec.attributes import ingest_attributes
    from nightrec.landing import replay
    from spark_jobs import build_sequences, ingest_events

    spark = request.getfixturevalue("spark")  # only the process that builds starts a Spark session for it
    settings = make_settings(root)
    end = tmall.history_end + timedelta(days=1)
    warehouse = Warehouse(root, tmall.name)
    replay(tmall, warehouse, tmall.history_start, end)
    ingest_attributes(tmall, warehouse)
    ingest_events.run(spark, settings, tmall.history_start, end)
    build_sequences.run(spark, settings, tmall.history_start, end)


@pytest.fixture(scope="session")
def tmall_warehouse(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, tmall: SourceAdapter
) -> Iterator[Settings]:
    """The whole Tmall history landed, ingested and turned into sequences, in one pass per job.

    Built once per test run: the first test process that asks builds it under a lock in the run's shared temporary
    directory, and every process (pytest-xdist's workers) gets its own copy to write into. Building it cost each
    process a minute or more of two busy cores (decision 51)."""
    from nightrec.storage import fresh_staging, locked, swap_into_place

    shared = _run_temp_root(tmp_path_factory) / "tmall-history"
    built = shared / "warehouse"
    with locked(shared):
        if not built.is_dir():  # published whole, as the jobs publish: a failed build leaves only a temporary
            staging = fresh_staging(built)
            _build_tmall_history(request, tmall, staging)
            swap_into_place(staging, built)
    own = tmp_path_factory.mktemp("tmall") / "warehouse"
    shutil.copytree(built, own, symlinks=True)
    yield make_settings(own)


@pytest.fixture(scope="session")
def tmall_marts(tmall_warehouse: Settings) -> Settings:
    """The session warehouse with its dbt marts built, exported to Parquet and the Feast repository applied: what
    the DAG has done by the time training starts."""
    from nightrec import feature_store
    from nightrec.dbt_runner import run_dbt
    from nightrec.marts_publish import export_marts

    run_dbt(tmall_warehouse, ["build", "--exclude-resource-type", "unit_test"], target="duckdb")
    export_marts(tmall_warehouse)
    feature_store.apply(tmall_warehouse)
    return tmall_warehouse


TRAINED_DAY = date(2014, 8, 15)
SMOKE_TRAINING = {
    "epochs": 1,
    "negatives": 2,
    "dim": 8,
    "hidden": 32,
    "batch_size": 2048,
    "models": ("two_tower", "gnolr", "esmm"),
    "refit": False,  # the held-out models are served, so the top-k tests meet users without an embedding
}


# The smoke profile's ranker: five anchors a fortnight apart (two before the held-out window), few candidates, rounds.
SMOKE_RANKER = {
    "anchor_every_days": 14,
    "max_anchors": 5,
    "refresh_every_days": 14,
    "candidates_per_source": 20,
    "rounds": 60,
}


@pytest.fixture(scope="session")
def smoke_training(tmall_marts: Settings) -> Settings:
    """The marts warehouse with smoke-sized training (one epoch, small towers, a small ranker)."""
    return tmall_marts.with_overrides(
        training=replace(tmall_marts.training, **SMOKE_TRAINING),
        ranker=replace(tmall_marts.ranker, **SMOKE_RANKER),
    )


@pytest.fixture(scope="session")
def trained_tmall(smoke_training: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One training run through TRAINED_DAY (the report), and a copy of the models it published, taken before any
    test changes the champions (tests that need a trained warehouse of their own start from that copy)."""

    from training import run

    report = run.run(smoke_training, TRAINED_DAY)
    snapshot = tmp_path_factory.mktemp("trained") / "models"
    shutil.copytree(smoke_training.warehouse_root / "models", snapshot)
    return report, snapshot


def read_table(root: Path, days: list[date] | None = None) -> pd.DataFrame:
    """Read partitions of a Parquet table with pandas (ds restored from the directory names)."""
    frames = []
    for part in sorted(root.glob("ds=*")):
        ds = date.fromisoformat(part.name[3:])
        if days is not None and ds not in days:
            continue
        files = sorted(part.glob("*.parquet"))
        if files:
            df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            df["ds"] = ds
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def raw_tmall() -> pd.DataFrame:
    """The bundled Tmall file as strings, read independently of the project's code."""
    return pd.read_csv(load_adapter("tmall_brand").bundled_events, dtype=str, keep_default_na=False)


# py4j logs "Closing down clientserver connection" from __del__ after pytest closed its streams; keep it quiet.
logging.getLogger("py4j").setLevel(logging.WARNING)


def corrupt_real_rows(day_file: Path, out: Path, n_rows: int) -> list[int]:
    """A delivery made of the first ``n_rows`` real rows of a Tmall day file, 3 in 4 broken in turn: blank user id,
    event type 7, a time 5 days later; every 4th kept intact. Returns the broken rows' line numbers (1 = header)."""
    real = day_file.read_text().splitlines()
    header, rows = real[0], real[1 : n_rows + 1]
    lines, broken = [], []
    for i, row in enumerate(rows):
        user, brand, kind, day = row.split(",")
        month, dom = day.split("-")
        if i % 4 == 0:
            user = ""
        elif i % 4 == 1:
            kind = "7"
        elif i % 4 == 2:
            day = f"{month}-{int(dom) + 5}"
        lines.append(",".join([user, brand, kind, day]))
        if i % 4 != 3:
            broken.append(i + 2)
    out.write_text(header + "\n" + "\n".join(lines) + "\n")
    return broken


def task_in_process(
    env: dict[str, str], task: str, day: date, kill_at: str | None = None
) -> subprocess.CompletedProcess:
    """One task of the nightly run of ``day`` (``nightrec_app.tasks.<task>``) in a process of its own, as an Airflow
    worker runs it, with the settings ``env`` carries; killed by the fault hook (nightrec/faults.py) as it publishes a
    path matching ``kill_at``. Tasks that take the Airflow run's ids get ``nightly`` and ``manual__kill_test``."""
    import sys

    from nightrec.config import PROJECT_ROOT
    from nightrec.faults import KILL_AT_COMMIT

    code = (
        "import inspect, sys; from nightrec_app import tasks\n"
        f"ctx = tasks.context('{day}', '{day + timedelta(days=1)}')\n"
        "run = getattr(tasks, sys.argv[1])\n"
        "ids = ('nightly', 'manual__kill_test')[: len(inspect.signature(run).parameters) - 1]\n"
        "run(ctx, *ids)\n"
    )
    env = {k: v for k, v in env.items() if k != KILL_AT_COMMIT} | ({KILL_AT_COMMIT: kill_at} if kill_at else {})
    return subprocess.run(
        [sys.executable, "-c", code, task], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def leftovers(path: Path) -> list[str]:
    """What writers of ``path`` left beside it: their hidden ``.tmp-<name>-*`` and ``.trash-<name>-*``."""
    return hidden_siblings(path)


def version_of(path: Path) -> tuple[int, int]:
    """The version published at ``path`` (inode, modification time); it must exist."""
    version = published_version(path)
    if version is None:
        raise FileNotFoundError(path)
    return version


def killed_then_retried(env: dict[str, str], task: str, day: date, path: Path, root: Path) -> None:
    """Run ``task`` of night ``day`` in its own process, SIGKILLed by the fault hook as it publishes ``path`` (under
    the warehouse ``root``): readers still see the previous version and the new one waits hidden beside it. Then run
    it again: it exits 0, puts a new version in place and removes what the killed run left."""
    previous = version_of(path)
    killed = task_in_process(env, task, day, f"*/{path.relative_to(root)}")
    assert killed.returncode == -signal.SIGKILL, (task, killed.stderr[-3000:])
    assert "before it publishes" in killed.stderr, task
    assert version_of(path) == previous, f"{task}: readers should still see the previous version of {path}"
    assert leftovers(path), f"{task}: the killed run's new version should wait hidden beside {path}"
    retry = task_in_process(env, task, day)
    assert retry.returncode == 0, (task, retry.stderr[-3000:])
    assert version_of(path) != previous, f"{task}: the retry should put a new version at {path}"
    assert not leftovers(path), f"{task}: the retry should remove what the killed run left"


@pytest.fixture
def redis_server(tmp_path):
    with servers.redis_server(tmp_path) as address:
        yield address


@dataclass(frozen=True)
class SparkStandalone:
    """A Spark standalone cluster on 127.0.0.1: its master's URL and the port of the master's web UI (whose JSON lists
    the applications that ran on it)."""

    master: str
    ui_port: int

    def state(self) -> dict:
        """The master's own account of the cluster (its web UI's JSON)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=10) as answer:
            return json.load(answer)

    def applications(self) -> list[dict]:
        """Every application the master has seen, running or finished (name, state, cores, ...)."""
        state = self.state()
        return state["activeapps"] + state["completedapps"]


@pytest.fixture(scope="session")
def spark_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkStandalone]:
    """A Spark standalone master and one worker (2 cores, 3 GiB), started from the pyspark installation as a cluster's
    machines start them (``spark-class ...Master`` / ``...Worker``; docker/entrypoint.sh does the same), stopped at
    the end of the session."""
    import pyspark

    home = Path(pyspark.__file__).parent
    work = tmp_path_factory.mktemp("spark-standalone")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    spark_class = str(home / "bin" / "spark-class")
    master_args = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)]
    worker_args = ["--host", "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(worker_ui)]
    worker_args += ["--work-dir", str(work / "work")]
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", *master_args],
        env=env,
        stdout=(work / "master.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    with serving(master, port, stop_seconds=60):
        worker = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", *worker_args],
            env=env,
            stdout=(work / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        with serving(worker, worker_ui, stop_seconds=60):
            cluster = SparkStandalone(f"spark://127.0.0.1:{port}", ui_port)
            wait_for_port(ui_port)
            deadline = time.time() + 60
            while cluster.state()["aliveworkers"] < 1:
                assert time.time() < deadline, f"no worker registered: {(work / 'worker.log').read_text()[-3000:]}"
                time.sleep(0.5)
            yield cluster


@pytest.fixture
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url
