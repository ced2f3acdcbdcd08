"""The run context clamps a run's days to the source's history in one place; the settings reach a child process
through one environment; every Spark job shares one `main`."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from nightrec.config import load_settings
from nightrec.context import RunContext
from nightrec.errors import HistoryTooShort, InputError
from tests.conftest import make_settings


def test_a_run_is_clamped_to_the_history_and_knows_a_day_past_it(tmp_path: Path, tmall):
    settings = make_settings(tmp_path)
    ctx = RunContext.of(settings, "2014-04-01", "2014-08-17")  # from before the first day to past the last
    assert (ctx.start, ctx.end) == (tmall.history_start, date(2014, 8, 16))
    assert ctx.days[0] == tmall.history_start and ctx.last_day == tmall.history_end == date(2014, 8, 15)
    assert ctx.past_history == date(2014, 8, 16)
    assert ctx.warehouse.root == tmp_path and ctx.warehouse.source == "tmall_brand"

    inside = RunContext.of(settings, date(2014, 8, 10), date(2014, 8, 14))
    assert inside.days == [date(2014, 8, d) for d in (10, 11, 12, 13)] and inside.past_history is None

    whole = RunContext.of(settings)
    assert len(whole.days) == (tmall.history_end - tmall.history_start).days + 1

    before = RunContext.of(settings, "2014-01-01", "2014-02-01")  # wholly before the history: no day, no crash
    assert before.days == [] and before.last_day is None


def test_the_settings_environment_loads_back_the_same_settings(tmp_path: Path):
    base = make_settings(tmp_path / "wh", source="hm")
    settings = base.with_overrides(
        airflow=replace(base.airflow, home=tmp_path / "airflow"),
        feast=replace(base.feast, variant="redis"),
        dbt_target="spark",
    )
    env = settings.environment()
    loaded = load_settings(env=env)
    assert (loaded.profile, loaded.warehouse_root, loaded.source) == ("local", tmp_path / "wh", "hm")
    assert (loaded.spark.master, loaded.airflow.home, loaded.feast.variant) == (
        "local[2]",
        tmp_path / "airflow",
        "redis",
    )
    assert env["NIGHTREC_DBT_TARGET"] == "spark"  # what dbt's profiles.yml picks its target by
    assert env["FEAST_USAGE"] == env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "False"


def test_the_airflow_environment_carries_the_settings_environment(tmp_path: Path):
    from nightrec_app.airflow_env import airflow_environment

    settings = make_settings(tmp_path)
    env = airflow_environment(settings, base={"PATH": "/usr/bin"})
    assert settings.environment().items() <= env.items()
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags") and env["PATH"].endswith(":/usr/bin")


def test_a_spark_job_with_nothing_to_do_ends_without_starting_spark_and_an_error_stops_it(tmp_path: Path):
    from spark_jobs.common import JobRun, run_job

    seen: list[JobRun] = []

    def too_early(job: JobRun) -> None:
        seen.append(job)
        raise HistoryTooShort("the history holds 3 days")

    argv = ["--start", "2014-08-14", "--end", "2014-08-16", "--warehouse", str(tmp_path), "--source", "hm"]
    assert run_job("probe", "a probe job", argv, too_early) == 0
    (job,) = seen
    assert job._spark is None  # never started
    assert (job.start, job.last_day, job.settings.source) == (date(2014, 8, 14), date(2014, 8, 15), "hm")
    assert job.settings.warehouse_root == tmp_path

    def broken(job: JobRun) -> None:
        raise InputError("bad input")

    with pytest.raises(InputError, match="bad input"):
        run_job("probe", "a probe job", argv, broken)
    with pytest.raises(SystemExit):  # an empty range is refused by the argument parser
        run_job("probe", "a probe job", ["--start", "2014-08-14", "--end", "2014-08-14"], broken)
