"""The Spark session a job runs in: the profile's settings reach the JVM itself, not only the SQL configuration."""

from __future__ import annotations

import shlex

import pytest

from nightrec.config import load_settings

pytestmark = pytest.mark.spark


def test_the_jvm_runs_with_the_profiles_java_options(spark):
    """`spark.driver.extraJavaOptions` only acts when the JVM starts: a session that got it too late would ignore it
    silently. The session's JVM was started with the smoke profile's options for short jobs (C1 only, serial GC)."""
    options = load_settings("smoke", env={}).spark.conf["spark.driver.extraJavaOptions"]
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    started_with = list(runtime.getInputArguments())
    assert set(shlex.split(options)) <= set(started_with), started_with
    assert "-XX:TieredStopAtLevel=1" in started_with
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
