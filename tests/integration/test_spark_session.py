"""The Spark session a job runs in: the settings' JVM options reach the JVM itself, not only Spark's configuration."""

from __future__ import annotations

import shlex

import pytest

from nightrec.config import SHORT_JOBS_JAVA_OPTIONS

pytestmark = pytest.mark.spark


def test_the_jvm_runs_with_the_settings_java_options(spark):
    """`spark.java_options` only acts when the JVM starts: a session that passed it too late would ignore it
    silently. The tests' session (conftest's settings, through spark_jobs.common.build_spark) was started with them."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    started_with = list(runtime.getInputArguments())
    assert set(shlex.split(SHORT_JOBS_JAVA_OPTIONS)) <= set(started_with), started_with
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
