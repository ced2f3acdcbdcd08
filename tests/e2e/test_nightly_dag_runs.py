"""The real DAGs through `airflow dags test` and spark-submit: bootstrap, two consecutive nights (the second killed
mid-write and resumed), the night's Python tasks killed as they publish, a corrupted delivery, and night two rerun
by a real scheduler on PostgreSQL and a Spark cluster (started as soon as the nights are built, it runs beside the
other tests). (A terminated run: test_terminated_run.py, apart so the suite's second process runs it while the first
builds these nights.)"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nightrec.completeness import OUTPUTS, complete_through
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.faults import KILL_AT_COMMIT, KILL_ONCE, kill_record, what_readers_see
from nightrec.marts_publish import split_queries
from nightrec.run_manifest import manifest_days, reconciles
from nightrec.storage import SUCCESS_FILE
from nightrec.warehouse import Warehouse
from tests.conftest import corrupt_real_rows, killed_then_retried, raw_tmall, read_table
from tests.e2e.runs import alerts, env_for

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

NIGHTS = [date(2014, 8, 14), date(2014, 8, 15)]


def nightrec(
    args: list[str], warehouse: Path, airflow_home: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "nightrec_app.cli", *args],
        cwd=PROJECT_ROOT,
        env=env_for(warehouse, airflow_home) | (env or {}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 or not check, f"nightrec {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


# Night two's first run is killed (SIGKILL: no cleanup, no `finally`) as its ingest is about to publish the middle
# day of its three (lookback): the first is then republished, the middle one is still night one's, the last (new this
# night) not visible at all.
KILLED_AT = f"*/bronze/events/ds={NIGHTS[-1] - timedelta(days=1)}"
RERUN_DAYS = [NIGHTS[-1] - timedelta(days=2), NIGHTS[-1] - timedelta(days=1), NIGHTS[-1]]


@pytest.fixture(scope="module")
def interruption() -> dict[str, object]:
    """What `airflow_run` saw after night one, after night two's killed run, and when resuming."""
    return {}


@pytest.fixture(scope="module")
def airflow_run(tmp_path_factory, interruption):
    """The bootstrap and night one; night two killed in its ingest; then both nights resumed as one backfill.

    `backfill --resume` over both nights skips night one and runs night two whole. Every test of this module reads
    that resumed warehouse: `test_a_night_killed_mid_write_...` compares the days night two re-ingested with night
    one's tables of them, `test_dag_path_equals_the_in_process_jobs` the whole of it with one in-process pass."""
    base = tmp_path_factory.mktemp("e2e")
    warehouse, home = base / "warehouse", base / "airflow"
    wh = Warehouse(warehouse, "tmall_brand")
    boot = nightrec(["bootstrap"], warehouse, home)
    first = nightrec(["backfill", "--start", str(NIGHTS[0]), "--end", str(NIGHTS[0])], warehouse, home)
    interruption["before"] = _tables(wh, RERUN_DAYS[:2])
    started = time.time()
    again = ["backfill", "--start", str(NIGHTS[-1]), "--end", str(NIGHTS[-1])]
    killed = nightrec(again, warehouse, home, check=False, env={KILL_AT_COMMIT: KILLED_AT})
    interruption.update(_after_the_kill(wh, started))
    interruption["killed"], interruption["status"] = killed, nightrec(["status"], warehouse, home).stdout
    interruption["raw"] = _raw_mtimes(wh)
    span = ["backfill", "--start", str(NIGHTS[0]), "--end", str(NIGHTS[-1]), "--resume"]
    interruption["resumed"] = nightrec(span, warehouse, home).stdout
    return warehouse, home, boot.stdout + first.stdout + killed.stdout + interruption["resumed"]


def _raw_mtimes(wh: Warehouse) -> list[int]:
    return sorted(p.stat().st_mtime_ns for d in RERUN_DAYS for p in wh.raw_day(d).iterdir())


def _after_the_kill(wh: Warehouse, started: float) -> dict[str, object]:
    bronze = wh.bronze_events()
    return {
        "started": started,
        "success_mtimes": [(bronze / f"ds={ds}" / SUCCESS_FILE).stat().st_mtime for ds in RERUN_DAYS[:2]],
        "last_day_visible": (bronze / f"ds={RERUN_DAYS[-1]}").exists(),
        "temporaries": sorted(p.relative_to(wh.root).as_posix() for p in wh.root.rglob(".tmp-*")),
        "manifest": json.loads(wh.run_manifest(NIGHTS[-1]).read_text()),
    }


def _tables(wh: Warehouse, days: list[date]) -> dict[str, object]:
    return {
        name: read_table(root, days)
        for name, root in [
            ("bronze", wh.bronze_events()),
            ("quarantine", wh.bronze_quarantine()),
            ("silver", wh.silver_sequences()),
        ]
    }


def test_bootstrap_and_two_nights_build_every_day(airflow_run, tmall):
    warehouse, _, output = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    assert "[DAG TEST] end task task_id=record_run" in output
    # progress lines by logger: a Spark job's through spark-submit, a task's own, training's (nightrec_app.airflow_env)
    assert re.search(r"\] spark_jobs\.ingest_events: parsed [\d,]+ rows", output), output[-3000:]
    assert "marts exported {" in output and "training: data through 2014-08-15" in output
    days = tmall.history_days()
    for ds in days:
        manifest = json.loads(wh.run_manifest(ds).read_text())
        ingest = manifest["stages"]["ingest_events"]
        assert ingest["raw_rows"] == ingest["bronze_rows"] + ingest["quarantined_rows"] + ingest["redelivered_rows"]
        expected_dag = "nightly" if ds >= NIGHTS[0] - timedelta(days=2) else "bootstrap"
        assert manifest["stages"]["airflow"]["dag_id"] == expected_dag, ds
    assert (
        sum(json.loads(wh.run_manifest(d).read_text())["stages"]["ingest_events"]["bronze_rows"] for d in days)
        == 182_880
    )
    # each published output says how far it is complete, for consumers that poll
    assert {output: complete_through(wh, output) for output in OUTPUTS} == dict.fromkeys(OUTPUTS, NIGHTS[-1])


def test_a_night_killed_mid_write_keeps_the_previous_partitions_and_resumed_gives_the_same_tables(
    airflow_run, interruption, tmall
):
    """SIGKILL of the ingest task under Airflow as it publishes: readers still see the previous version of the day it
    was replacing and nothing of the day it had not reached; the failure is on record; `backfill --resume` skips night
    one, runs night two again, and the days both nights ingested hold night one's rows again (rerunning a day gives
    the same tables) with no temporary left."""
    warehouse, _, _ = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    killed, started = interruption["killed"], interruption["started"]
    assert killed.returncode != 0
    assert "ingest_events" in killed.stdout + killed.stderr
    published, replacing = interruption["success_mtimes"]
    assert published > started  # the task had published the first day...
    assert replacing < started  # ...not the second: night one's version is what readers see
    assert not interruption["last_day_visible"]  # and the third, new tonight, is not visible at all
    assert any(name.startswith(f"bronze/events/.tmp-ds={RERUN_DAYS[1]}-") for name in interruption["temporaries"]), (
        interruption["temporaries"]
    )  # its complete new version, hidden
    attempt, own = interruption["manifest"]["attempt"], interruption["manifest"]["own_run"]
    assert (attempt["state"], attempt["failed_task"], own["state"]) == ("failed", "ingest_events", "failed")
    assert re.search(rf"{NIGHTS[-1]} .*FAILED:ingest_events", interruption["status"]), interruption["status"]
    failed = [e for e in alerts(warehouse) if e["event"] == "task_failed"]  # and the notifiers heard of it
    assert [(e["task_id"], e["day"]) for e in failed] == [("ingest_events", str(NIGHTS[-1]))], failed

    assert f"day {NIGHTS[0]} skipped, its night succeeded in " in interruption["resumed"]
    assert f"day {NIGHTS[-1]} done in " in interruption["resumed"]
    manifest = json.loads(wh.run_manifest(NIGHTS[-1]).read_text())
    assert (manifest["attempt"]["state"], manifest["own_run"]["state"]) == ("success", "success")
    after = _tables(wh, RERUN_DAYS[:2])
    for name, table in interruption["before"].items():
        assert table.astype(str).equals(after[name].astype(str)), name
    assert _raw_mtimes(wh) == interruption["raw"]  # the resumed land step rewrote no delivery
    assert not list(warehouse.rglob(".tmp-*")) and not list(warehouse.rglob(".trash-*"))


def test_dag_path_equals_the_in_process_jobs(airflow_run, tmall_warehouse, tmall):
    """spark-submit under Airflow (bootstrap + nights with lookback) gives the same tables as one in-process pass."""
    warehouse, _, _ = airflow_run
    days = [NIGHTS[0] - timedelta(days=3), *NIGHTS]
    via_airflow = _tables(Warehouse(warehouse, tmall.name), days)
    in_process = _tables(Warehouse(tmall_warehouse.warehouse_root, tmall.name), days)
    for name in via_airflow:
        assert via_airflow[name].astype(str).equals(in_process[name].astype(str)), name


def test_airflow_recorded_both_nights_as_successful_runs(airflow_run):
    warehouse, home, _ = airflow_run
    out = nightrec(["airflow", "dags", "list-runs", "nightly", "-o", "json"], warehouse, home).stdout
    runs = next(json.loads(line) for line in out.splitlines() if line.startswith("[{"))
    assert sorted((r["logical_date"][:10], r["state"]) for r in runs) == [
        ("2014-08-15", "success"),
        ("2014-08-16", "success"),
    ]
    # the publishing tasks' Assets: Airflow recorded an event per published output and run, which is what a user's
    # DAG scheduled on them (schedule=[Asset.ref(name="nightrec_tmall_brand_topk")]) is triggered by. (Cosmos adds
    # an asset per dbt model of its own; those are not ours to count.)
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        events = db.execute(
            "select a.name, e.source_dag_id, e.source_task_id, count(*) from asset_event e "
            "join asset a on a.id = e.asset_id where substr(a.name, 1, 9) = 'nightrec_' group by 1, 2, 3"
        ).fetchall()
    # an event per successful publication: night one and night two's resumed run (its killed first run stopped
    # before publishing anything)
    nightly = {(name, task): n for name, dag, task, n in events if dag == "nightly"}
    assert nightly == {
        ("nightrec_tmall_brand_marts", "publish_marts"): 2,
        ("nightrec_tmall_brand_features", "feast_materialize"): 2,
        ("nightrec_tmall_brand_topk", "publish_topk"): 2,
        ("nightrec_tmall_brand_segments", "segments.publish_segments"): 2,
    }
    assert {(name, task) for name, dag, task, _ in events if dag == "bootstrap"} == {
        ("nightrec_tmall_brand_marts", "publish_marts"),
        ("nightrec_tmall_brand_features", "feast_materialize"),
    }


def test_the_dag_builds_publishes_and_documents_the_marts(airflow_run, tmall):
    """dbt ran inside the DAG (Cosmos), the marts were exported, the analysts' database and dbt docs published."""
    import duckdb

    warehouse, _, output = airflow_run
    assert "[DAG TEST] end task task_id=dbt.fct_interactions_model_build" in output
    assert "[DAG TEST] end task task_id=publish_marts" in output
    assert (warehouse / "docs" / "dbt" / "index.html").stat().st_size > 10_000
    exported = read_parquet_dir(warehouse / "marts" / "parquet" / "fct_interactions")
    assert exported["n_events"].sum() == 182_880
    queries = split_queries((PROJECT_ROOT / "docs" / "analyst_queries.sql").read_text())
    assert len(queries) == 10
    with duckdb.connect(str(warehouse / "analytics" / "nightrec.duckdb"), read_only=True) as con:
        results = [con.sql(q).df() for q in queries]
        bronze_buys = con.execute("select count(*) from bronze.events where level = 4").fetchone()[0]
        funnel_buys = con.execute("select sum(n_level_4) from marts.fct_interactions").fetchone()[0]
    assert all(len(r) > 0 for r in results)
    assert funnel_buys == bronze_buys == 6_984
    raw = raw_tmall()
    counts = raw.groupby("user_id").size().reset_index(name="n").sort_values(["n", "user_id"], ascending=[False, True])
    history = raw[raw["user_id"] == counts["user_id"].iloc[0]]  # query 2: the most active user's first 50 events
    assert len(results[1]) == min(50, len(history)) and set(results[1]["item_id"]) <= set(history["brand_id"])
    assert results[0]["top_level_events_30d"].iloc[0] > 0  # query 1 ranks buyers first
    assert results[3]["quarantined"].sum() == 0


def test_an_audience_is_built_from_a_predicate_over_the_analysts_database(airflow_run, tmp_path):
    """`nightrec audience build`: the top brand's buyers as a SQL seed, measured on the seed, then expanded to twice
    its size over the last day's consumers; a statement that is not a SELECT is refused by name."""
    import duckdb
    import pandas as pd

    warehouse, home, _ = airflow_run
    buys = "select user_id, item_id from marts.fct_interactions where max_level_reached = 4"
    with duckdb.connect(str(warehouse / "analytics" / "nightrec.duckdb"), read_only=True) as con:
        brand = con.execute(
            f"select item_id from ({buys}) group by 1 order by count(distinct user_id) desc, 1 limit 1"
        ).fetchone()[0]
        buyers = {r[0] for r in con.execute(f"select user_id from ({buys}) where item_id = ?", [brand]).fetchall()}
        consumers = {
            r[0]
            for r in con.execute(
                "select user_id from marts.user_features where ds = (select max(ds) from marts.user_features)"
            ).fetchall()
        }
    seed_sql = f"select user_id from marts.fct_interactions where item_id = '{brand}' and max_level_reached = 4"
    out = tmp_path / "audience.parquet"
    proc = nightrec(["audience", "build", "--seed-sql", seed_sql, "--size", "2", "--output", str(out)], warehouse, home)
    assert "audience 10x the seed: " in proc.stdout  # the expansion was measured on hidden seed members first
    assert "audience of 10% of the consumers: " in proc.stdout
    rows = pd.read_parquet(out)
    seed, expanded = rows[rows["is_seed"]], rows[~rows["is_seed"]]
    assert set(seed["user_id"]) == buyers & consumers and len(seed) >= 2 and seed["rank"].isna().all()
    assert len(expanded) == min(2 * len(seed), len(consumers) - len(seed))
    assert set(expanded["user_id"]) <= consumers - buyers
    assert expanded["rank"].tolist() == list(range(1, len(expanded) + 1))
    assert expanded["score"].is_monotonic_decreasing
    refused = nightrec(["audience", "build", "--seed-sql", "delete from marts.dim_users"], warehouse, home, check=False)
    assert refused.returncode == 2 and "this is a DELETE statement" in refused.stderr


def _served_lists(warehouse: Path) -> tuple[str, list[str]]:
    """What services read: the top-k pointer and one user's list from the Feast online store."""
    import duckdb

    from nightrec import feature_store
    from tests.conftest import make_settings

    settings = make_settings(warehouse)
    serving = Warehouse.of(settings).serving_topk()
    user = duckdb.sql(f"select min(user_id) from read_parquet('{serving / 'current' / '*.parquet'}')").fetchall()[0][0]
    online = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
    return (serving / "current.json").read_text(), online["user_topk__topk_item_ids"][0]


def test_a_corrupted_delivery_stops_the_nightly_run_before_ingest(airflow_run, tmall, tmp_path):
    """GX at the raw boundary: nulls, an unknown event type and times outside the day stop the DAG with a message
    naming the table, the expectations and the offending rows; bronze and the marts stay as they were."""
    warehouse, home = tmp_path / "warehouse", tmp_path / "airflow"
    shutil.copytree(airflow_run[0], warehouse, symlinks=True)
    shutil.copytree(airflow_run[1], home, symlinks=True)
    wh, day = Warehouse(warehouse, tmall.name), NIGHTS[-1]
    before = _tables(wh, [day])
    marts_before = (warehouse / "marts" / "parquet" / "fct_interactions" / "part-00000.parquet").read_bytes()
    served_before = _served_lists(warehouse)
    delivery = tmp_path / "late_delivery.csv"
    corrupt_real_rows(wh.raw_day(day) / "t_alibaba_data.csv", delivery, 400)
    nightrec(["land", "--file", str(delivery), "--ds", str(day)], warehouse, home)

    proc = nightrec(["nightly", "--day", str(day)], warehouse, home, check=False)
    assert proc.returncode != 0
    assert "[DAG TEST] end task task_id=validate_raw" in proc.stdout
    assert "starting task_id=ingest_events" not in proc.stdout  # the run stopped before ingest
    error = proc.stderr
    assert "Data quality check 'raw' failed: 3 critical expectation(s)" in error
    assert "raw.events: expect_column_values_to_not_be_null(column='user_id')" in error
    assert "event type known to the adapter" in error and "event time inside the delivery day" in error
    assert "_file='late_delivery.csv', _line=2, user_id=None" in error
    assert "type='7'" in error
    assert f"Data Docs: {warehouse / 'docs' / 'gx' / 'index.html'}" in error
    assert (warehouse / "docs" / "gx" / "index.html").is_file()

    after = _tables(wh, [day])
    for name in before:
        assert before[name].astype(str).equals(after[name].astype(str)), name
    assert (warehouse / "marts" / "parquet" / "fct_interactions" / "part-00000.parquet").read_bytes() == marts_before
    assert _served_lists(warehouse) == served_before  # the failed gate left the previous night's lists in service
    manifest = json.loads(wh.run_manifest(day).read_text())["stages"]
    assert manifest["quality_raw"]["success"] is False
    assert manifest["quality_marts"]["success"] is True  # from the earlier, clean run
    report = nightrec(["report", "--day", str(day)], warehouse, home).stdout
    assert "raw: FAILED" in report and "marts: ok" in report
    # Airflow's failure callback recorded the failed attempt: the report and status show it, and mark what an
    # earlier run left (#24)
    assert "attempt    FAILED in task validate_raw: nightly " in report
    assert "QualityCheckFailed: Data quality check 'raw' failed: 3 critical expectation(s)" in report
    assert "(quality_bronze, quality_marts: recorded by an earlier run" in report
    status = nightrec(["status", "--start", str(day), "--end", str(day)], warehouse, home).stdout
    assert "FAILED:validate_raw" in status and f"{day}: the latest run " in status
    alert = alerts(warehouse)[-1]
    assert (alert["event"], alert["task_id"], alert["day"]) == ("task_failed", "validate_raw", str(day))
    assert alert["error"].startswith("QualityCheckFailed: Data quality check 'raw' failed: 3 critical")
    assert "[critical] raw.events: expect_column_values_to_not_be_null(column='user_id')" in report
    out = nightrec(["airflow", "dags", "list-runs", "nightly", "-o", "json"], warehouse, home).stdout
    runs = next(json.loads(line) for line in out.splitlines() if line.startswith("[{"))
    assert {r["logical_date"][:10]: r["state"] for r in runs}[str(day + timedelta(days=1))] == "failed"


def test_the_run_report_reads_each_stage_back_from_the_manifest(airflow_run, tmall):
    """`nightrec report` shows what the night recorded (reconciliation, quality, features, every model's gate, the
    published lists) and names the stages a bootstrap day did not run."""
    warehouse, home, _ = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    stages = json.loads(wh.run_manifest(NIGHTS[-1]).read_text())["stages"]
    report = nightrec(["report"], warehouse, home).stdout  # the latest day with a manifest: the last night
    assert report.startswith(f"Run of {tmall.name} for {NIGHTS[-1]} (Airflow nightly, {stages['airflow']['run_id']})")
    assert f"attempt    succeeded: nightly {stages['airflow']['run_id']}, ended " in report
    # landed by the night (unchanged where the rerun test ran it again)
    assert re.search(r"land       replay: t_alibaba_data\.csv (landed|unchanged) \([\d,]+ rows\)", report), report
    ingest = stages["ingest_events"]
    assert f"{ingest['raw_rows']:,} raw rows = {ingest['bronze_rows']:,} bronze" in report and "reconciled" in report
    assert "raw: ok" in report and "bronze: ok" in report and "marts: ok" in report
    assert f"user_features {stages['feast_materialize']['rows']['user_features']:,}" in report
    for name, model in stages["training"]["models"].items():
        state = "published" if model["published"] else "champion kept"
        assert f"{name:<10} {model['metric']} {model['value']:.4f}  {state}: {model['reason']}" in report
    ranked = stages["ranker"]
    rows = {line.split()[0]: line.split()[1:3] for line in report.splitlines() if line.count("/") == 2}
    for name, row in ranked["metrics"].items():  # every list beside the others, both horizons; * marks the published
        label = name + ("*" if name == ranked["lists"]["lists"] else "")
        thirty = row["30d"]
        assert rows[label] == [f"{thirty['recall@20']:.4f}/{thirty['ndcg@20']:.4f}", f"({thirty['users']:,})"]
    assert f"publishes {ranked['lists']['lists']} (*): {ranked['lists']['reason']}" in report
    counts = stages["topk"]["counts"]
    assert f"{counts['model_version']}: {counts['rows']:,} rows for {counts['users']:,} users" in report

    boot_day = NIGHTS[0] - timedelta(days=10)
    boot = nightrec(["report", "--day", str(boot_day)], warehouse, home).stdout
    assert "(Airflow bootstrap," in boot
    assert "training   not run on this day" in boot and "top-k      not run on this day" in boot
    assert "lists      not run on this day" in boot
    missing = nightrec(["report", "--day", "2000-01-01"], warehouse, home).stdout
    assert "No run manifest for 2000-01-01" in missing

    # the DAGs' record_run task wrote the same as HTML: a page per day and an index of every day, newest first
    pages = warehouse / "docs" / "runs"
    days = sorted(p.parent.name.removeprefix("ds=") for p in wh.runs().glob("ds=*/manifest.json"))
    assert sorted(p.stem.removeprefix("ds=") for p in pages.glob("ds=*.html")) == days
    index = (pages / "index.html").read_text()
    links = [line.split('href="ds=')[1][:10] for line in index.splitlines() if 'href="ds=' in line]
    assert links == days[::-1]
    last_night = (pages / f"ds={NIGHTS[-1]}.html").read_text()
    for name, model in stages["training"]["models"].items():
        assert f"{name:<10} {model['metric']}" in last_night
    assert f"publishes {ranked['lists']['lists']}" in last_night
    assert f"{counts['rows']:,} rows for {counts['users']:,} users" in last_night
    # the night's charts (static SVG) and example users (nightrec/report_charts.py); a bootstrap day has none
    assert last_night.count("<svg") >= 5 and "not drawn" not in last_night, last_night[-3000:]
    for caption in ("Recall@20 of every list", "Level funnel", "Item exposure", "Segment sizes", "Example users"):
        assert caption in last_night
    assert "<svg" not in (pages / f"ds={boot_day}.html").read_text()


def test_the_dag_materializes_features_for_online_lookups(airflow_run, tmall):
    """feast apply + materialize ran inside both DAGs: a user's online features are their latest day's marts row."""
    from nightrec import feature_store
    from tests.conftest import make_settings

    warehouse, _, output = airflow_run
    assert "[DAG TEST] end task task_id=feast_materialize" in output
    features = read_parquet_dir(warehouse / "marts" / "parquet" / "user_features")
    last = features[features["ds"] == NIGHTS[-1]].head(5)
    online = feature_store.online_features(
        make_settings(warehouse),
        [{"user_id": u, "item_id": i} for u, i in zip(last.user_id, last.top_item_90d, strict=True)],
    )
    assert online["user_features__n_events_90d"] == last["n_events_90d"].tolist()
    assert online["item_features__n_events_30d"][0] is not None  # the serving service's item popularity
    manifest = json.loads(Warehouse(warehouse, tmall.name).run_manifest(NIGHTS[-1]).read_text())["stages"]
    assert manifest["feast_materialize"]["feature_time_window"] == [
        "2014-08-14T00:00:00+00:00",
        "2014-08-16T00:00:00+00:00",
    ]


def read_parquet_dir(path):
    import pandas as pd

    return pd.concat([pd.read_parquet(f) for f in sorted(path.glob("*.parquet"))])


def test_each_night_trains_gates_and_publishes_models(airflow_run, tmall):
    """The DAG's train, build_candidates and train_ranker tasks ran the smoke profile's models, the night's
    candidates and the ranker for the night's last day, with the gates and the night's decision."""
    warehouse, _, output = airflow_run
    for task in ("train", "build_candidates", "train_ranker"):
        assert f"[DAG TEST] end task task_id={task}" in output
    for model in ("two_tower", "gnolr", "ranker"):
        version = warehouse / "models" / model / str(NIGHTS[-1])
        assert (version / "manifest.json").exists() and (version / "metrics.json").exists()
        champion = json.loads((warehouse / "models" / model / "champion.json").read_text())
        assert champion["version"] in {str(NIGHTS[0]), str(NIGHTS[-1])}
    wh = Warehouse(warehouse, tmall.name)
    assert (wh.candidates(NIGHTS[-1]) / "_SUCCESS").is_file()
    manifest = json.loads(wh.run_manifest(NIGHTS[-1]).read_text())["stages"]
    training = manifest["training"]
    assert training["version"] == str(NIGHTS[-1]) and training["split"]["evaluation"] == ["2014-07-17", "2014-08-16"]
    assert set(training["models"]) == {"two_tower", "gnolr"}
    # a night after the first trained models: each gate compared against a champion, re-scored on this window
    reasons = {"not worse than the champion beyond the tolerance", "worse than the champion"}
    assert {m["reason"] for m in training["models"].values()} <= reasons
    ranked = manifest["ranker"]
    # the rerun test ran this night again: its ranker replaced the champion it had published itself
    rerun = f"a rerun of the champion's night {NIGHTS[-1]}"
    assert ranked["gate"]["reason"] in {*reasons, rerun} and ranked["lists"]["lists"] in {
        "ranker",
        "own_history",
        "covisitation",
        "popularity",
    }
    lists = {"ranker", "popularity", "own_history", "covisitation", "two_tower", "gnolr", "segment_popular"}
    assert set(ranked["metrics"]) == lists
    assert set(ranked["phase_seconds"]) == {"held_out_set", "held_out_fit", "judging", "served"}  # where its time went


def test_each_night_scores_and_publishes_top_k_lists(airflow_run, tmall):
    """score_topk (spark-submit) and publish_topk ran after training each night: the current pointer names the last
    night's version (the first night's kept for rollback), every known user has a list online and for analysts."""
    import duckdb

    from nightrec import feature_store, topk_publish
    from tests.conftest import make_settings

    warehouse, _, output = airflow_run
    assert "[DAG TEST] end task task_id=publish_topk" in output
    settings = make_settings(warehouse)
    pointer = topk_publish.current(settings)
    decision = json.loads(Warehouse(warehouse, tmall.name).run_manifest(NIGHTS[-1]).read_text())["stages"]["ranker"]
    lists = decision["lists"]
    version = lists.get("ranker_version") if lists["lists"] == "ranker" else str(NIGHTS[-1])
    assert pointer["path"] == f"ds={NIGHTS[-1]}/model={lists['lists']}-{version}"  # the night's decision
    assert [h["ds"] for h in pointer["history"]] == [str(NIGHTS[0])]
    k = 20  # conf/profiles/smoke.yaml
    files = Warehouse.of(settings).serving_topk() / "current" / "*.parquet"
    users = duckdb.sql(
        f"select count(*) from read_parquet('{warehouse}/marts/parquet/dim_users/*.parquet') "
        f"where first_event_ds <= date '{NIGHTS[-1]}'"
    ).fetchall()[0][0]
    rows, listed = duckdb.sql(f"select count(*), count(distinct user_id) from read_parquet('{files}')").fetchall()[0]
    assert (rows, listed) == (k * users, users)
    manifest = json.loads(Warehouse(warehouse, tmall.name).run_manifest(NIGHTS[-1]).read_text())["stages"]["topk"]
    assert manifest["counts"]["rows"] == rows and manifest["online_users"] == users
    user = duckdb.sql(f"select user_id from read_parquet('{files}') order by user_id limit 1").fetchall()[0][0]
    online = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
    assert len(online["user_topk__topk_item_ids"][0]) == k
    with duckdb.connect(str(Warehouse.of(settings).analyst_db()), read_only=True) as con:
        assert con.execute("select count(*) from marts.topk_current").fetchall()[0][0] == rows


def test_each_night_segments_every_consumer_and_keeps_the_segment_ids(airflow_run, tmall):
    """The segments group ran both nights: the encoder's table holds every consumer with a sequence, each is in
    exactly one segment at its distance to the centroid, the profiles add up and their lifts are what the sequences
    say, the second night continued from the first (ids kept, ARI as the two memberships give it), and the marts,
    the analysts' views, `nightrec segments show` and the report read it back."""
    import duckdb

    from nightrec.segments import adjusted_rand_index, contingency

    warehouse, home, output = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    assert "[DAG TEST] end task task_id=segments.build_segments" in output
    memberships = {}
    for night in NIGHTS:
        stages = json.loads(wh.run_manifest(night).read_text())["stages"]
        encoder, summary = stages["consumer_encoder"], stages["segments"]
        with_sequence = duckdb.sql(
            f"select count(distinct user_id) from read_parquet('{wh.silver_sequences()}/ds=*/*.parquet', "
            f"hive_partitioning = true) where ds <= '{night}'"
        ).fetchall()[0][0]
        embeddings = pd.read_parquet(wh.consumer_embeddings(night))
        assert len(embeddings) == embeddings["user_id"].nunique() == encoder["consumers"] == with_sequence
        vectors = np.stack(embeddings["embedding"].to_numpy())
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

        membership = read_table(wh.segments("membership"), [night])
        assert sorted(membership["user_id"]) == sorted(embeddings["user_id"])  # everyone, once
        centroids = read_table(wh.segments("centroids"), [night]).set_index("segment_id")["centroid"]
        position = pd.Series(np.arange(len(embeddings)), index=embeddings["user_id"])
        own = np.stack(centroids[membership["segment_id"]].to_numpy())
        distance = np.linalg.norm(vectors[position[membership["user_id"]].to_numpy()] - own, axis=1)
        assert np.allclose(membership["distance"], distance, atol=1e-5)
        nearest = np.argmin(
            np.linalg.norm(vectors[:, None, :] - np.stack(centroids.to_numpy())[None, :, :], axis=2), axis=1
        )
        assigned = membership.set_index("user_id")["segment_id"][embeddings["user_id"]].to_numpy()
        assert (centroids.index.to_numpy()[nearest] == assigned).mean() > 0.999  # each at its nearest centre

        profiles = read_table(wh.segments("profiles"), [night]).set_index("segment_id")
        sizes = membership["segment_id"].value_counts()
        assert profiles["consumers"].to_dict() == sizes.to_dict()
        assert {int(k): v for k, v in summary["sizes"].items()} == sizes.to_dict()
        assert profiles["share"].sum() == pytest.approx(1.0)
        assert summary["k"] == len(profiles)
        assert summary["silhouette"] == summary["silhouettes"][summary["clustering"]]
        fresh = {name: value for name, value in summary["silhouettes"].items() if name.startswith("k=")}
        assert sorted(fresh) == ["k=3", "k=4"]  # conf/profiles/smoke.yaml: k_min 3, k_max 4
        # k is chosen on each k's first start; the chosen k's clustering is then the best of its starts by the sum of
        # squares (conf/profiles/smoke.yaml keeps segments.kmeans_starts at its default)
        starts = summary["fresh_starts"]
        assert len(starts["costs"]) == 4 and starts["costs"][starts["chosen"]] == min(starts["costs"])
        first_starts = {**fresh, f"k={starts['k']}": starts["first_silhouette"]}
        assert max(first_starts, key=first_starts.get) == f"k={starts['k']}"
        if summary["clustering"] != "continued":
            assert summary["clustering"] == f"k={starts['k']}"
        # the first segment's most lifted item, recounted from each consumer's latest sequence by night D
        segment_id = int(profiles.index[0])
        top = profiles.loc[segment_id, "top_items"][0]
        latest = duckdb.sql(
            f"select user_id, seq_item_ids from read_parquet('{wh.silver_sequences()}/ds=*/*.parquet', "
            f"hive_partitioning = true) where ds <= '{night}' qualify row_number() over (partition by user_id "
            "order by ds desc) = 1"
        ).df()
        item = top["item_id"]
        touched = set(latest[latest["seq_item_ids"].map(lambda items, item=item: item in set(items))]["user_id"])
        members = set(membership[membership["segment_id"] == segment_id]["user_id"])
        assert top["consumers"] == len(touched & members)
        expected_lift = (len(touched & members) / len(members)) / (len(touched) / len(membership))
        assert top["lift"] == pytest.approx(expected_lift)
        memberships[night] = membership

    first, second = (json.loads(wh.run_manifest(n).read_text())["stages"] for n in NIGHTS)
    assert first["segments"]["ari"] is None or first["segments"]["previous_night"] < str(NIGHTS[0])
    assert second["consumer_encoder"]["warm_start"] and second["consumer_encoder"]["alignment"]["aligned"]
    last = second["segments"]
    assert last["previous_night"] == str(NIGHTS[0])
    both = memberships[NIGHTS[0]].merge(memberships[NIGHTS[1]], on="user_id", suffixes=("_before", "_now"))
    assert last["common_consumers"] == len(both)
    ari = adjusted_rand_index(contingency(both["segment_id_before"], both["segment_id_now"]))
    assert last["ari"] == pytest.approx(ari, abs=1e-6)
    if last["clustering"] == "continued":
        assert set(memberships[NIGHTS[1]]["segment_id"]) <= set(memberships[NIGHTS[0]]["segment_id"])

    # the marts hold both nights, as the analysts' database shows them
    with duckdb.connect(str(wh.analyst_db()), read_only=True) as con:
        per_night = dict(con.execute("select ds, count(*) from marts.segment_membership group by 1").fetchall())
        labels = con.execute(
            f"select segment_id, label from marts.segment_profiles where ds = '{NIGHTS[-1]}' order by 1"
        ).fetchall()
    assert {d: per_night[d] for d in NIGHTS} == {n: len(m) for n, m in memberships.items()}
    assert sorted((int(k), v) for k, v in last["labels"].items()) == labels

    shown = nightrec(["segments", "show"], warehouse, home).stdout
    assert f"segments of night {NIGHTS[-1]}: {len(memberships[NIGHTS[-1]]):,} consumers in {len(labels)}" in shown
    assert all(label in shown for _, label in labels)
    one = nightrec(["segments", "show", "--segment", str(labels[0][0])], warehouse, home).stdout
    assert f"segment {labels[0][0]}: {labels[0][1]}" in one and "lift" in one
    missing = nightrec(["segments", "show", "--segment", "999"], warehouse, home, check=False)
    assert missing.returncode == 2 and "No segment 999" in missing.stderr
    # services read a consumer's segment from Feast (the view user_segments, service `segments`)
    assert last["published"]["online_users"] == len(memberships[NIGHTS[-1]])
    someone = memberships[NIGHTS[-1]].iloc[0]
    looked_up = nightrec(["feast", "lookup", "--service", "segments", "--user", someone["user_id"]], warehouse, home)
    segment_line = next(line for line in looked_up.stdout.splitlines() if line.startswith("user_segments__segment_id"))
    assert segment_line.split()[-1] == str(someone["segment_id"])
    report = nightrec(["report"], warehouse, home).stdout
    assert f"stability: ARI {last['ari']:.3f} with {NIGHTS[0]}" in report
    assert f"segment_membership {per_night[NIGHTS[-1]] + per_night[NIGHTS[0]]:,} rows" in report


def test_the_saved_audiences_are_rebuilt_every_night(airflow_run, tmall):
    """conf/audiences/tmall_brand.yaml's audiences, rebuilt by the segments group: each audience's seed is what its
    predicate selects among the night's consumers, the rest are ranked 1..n up to size x the seed, the expansion was
    measured on hidden seed members, and the lookalike_audiences mart holds each night."""
    import duckdb

    from nightrec.audiences import saved_audiences

    warehouse, home, _ = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    saved = {a.name: a for a in saved_audiences(tmall.name)}
    assert saved
    for night in NIGHTS:
        built = json.loads(wh.run_manifest(night).read_text())["stages"]["audiences"]
        rows = read_table(wh.segments("audiences"), [night])
        assert len(rows) == built["rows"]
        with duckdb.connect(str(wh.analyst_db()), read_only=True) as con:
            consumers = {
                r[0] for r in con.execute("select user_id from marts.user_features where ds = ?", [night]).fetchall()
            }
            in_mart = con.execute("select count(*) from marts.lookalike_audiences where ds = ?", [night]).fetchone()[0]
            seeds = {
                name: {
                    r[0]
                    for r in con.execute(
                        audience.seed_sql.replace("(select max(ds) from marts.user_features)", f"date '{night}'")
                    ).fetchall()
                }
                for name, audience in saved.items()
            }
        assert in_mart == len(rows)
        assert set(built["audiences"]) == set(saved)
        for name, audience in saved.items():
            result = built["audiences"][name]
            assert "error" not in result, result
            mine = rows[rows["audience"] == name]
            seed, alike = mine[mine["is_seed"]], mine[~mine["is_seed"]]
            # the predicates read the analysts' views as they are now: as they were on the last night, later than
            # on the first (a brand's buyers can only grow)
            if night == NIGHTS[-1]:
                assert set(seed["user_id"]) == seeds[name] & consumers
            else:
                assert set(seed["user_id"]) <= seeds[name] & consumers
            assert result["seed"] == len(seed) and result["expanded"] == len(alike)
            assert len(alike) == min(audience.size * len(seed), len(consumers) - len(seed))
            assert set(alike["user_id"]) <= consumers - set(seed["user_id"])
            assert sorted(alike["rank"]) == list(range(1, len(alike) + 1))
            assert set(result["evaluation"]) == {"1", "5", "10"}
            # and in audiences of shares of the consumers, never above what a perfect ranking finds
            assert set(result["at_share"]) == {"0.05", "0.1", "0.2"}
            assert all(0 <= e["recall"] <= e["best"] <= 1 for e in result["at_share"].values())
            assert result["representation"] == f"user_features + consumer_encoder/{night}"
    report = nightrec(["report"], warehouse, home).stdout
    for name in saved:
        assert f"{name}: seed " in report


def test_the_second_nights_candidates_carry_the_first_nights_segment_items(airflow_run, tmall):
    """Night two's lists (for 08-16) read night one's segments (the newest a night may read: its own are made beside
    its lists): each user in them is proposed the items most members of their segment engaged with over the 30 days
    through 08-15. Night one's lists, and every older anchor, had no segmentation to read and carry none."""
    import duckdb

    warehouse, _, _ = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    serve = NIGHTS[-1] + timedelta(days=1)
    candidates = pd.read_parquet(wh.candidates(NIGHTS[-1]) / f"anchor={serve}")
    proposed = candidates[candidates["sources"].map(lambda s: "segment_popular" in list(s))]
    first_night = pd.read_parquet(wh.candidates(NIGHTS[0]), columns=["sources"])
    assert not first_night["sources"].map(lambda s: "segment_popular" in list(s)).any()
    older = pd.read_parquet(wh.candidates(NIGHTS[-1]), columns=["sources", "anchor"])
    assert (
        not older.loc[older["anchor"].astype(str) != str(serve), "sources"]
        .map(list)
        .map(lambda s: "segment_popular" in s)
        .any()
    )

    members = pd.read_parquet(wh.segments("membership") / f"ds={NIGHTS[0]}")[["user_id", "segment_id"]]
    recent = duckdb.sql(
        f"select distinct user_id, item_id from read_parquet('{wh.mart_export('user_item_features')}/*.parquet') "
        f"where ds < date '{serve}' and ds >= date '{serve - timedelta(days=30)}'"
    ).df()
    counts = recent.merge(members, on="user_id").groupby(["segment_id", "item_id"]).size().rename("n").reset_index()
    depth = load_settings("smoke", env={}).ranker.candidates_per_source
    assert set(proposed["user_id"]) == set(members["user_id"]) & set(candidates["user_id"])
    segment = members.set_index("user_id")["segment_id"]
    for user in sorted(proposed["user_id"].unique())[:: max(1, proposed["user_id"].nunique() // 25)]:
        ranked = counts[counts["segment_id"] == segment[user]].sort_values(["n", "item_id"], ascending=[False, True])
        rows = proposed[proposed["user_id"] == user].sort_values("rank__segment_popular")
        assert rows["item_id"].tolist() == ranked["item_id"].tolist()[:depth], user
        assert rows["score__segment_popular"].tolist() == ranked["n"].astype(float).tolist()[:depth]


# The Python tasks of a night that publish after ingest, each with the first path it makes visible (ingest is killed
# in `airflow_run`, the other Spark jobs and training in the scheduler's night, _killed_by_the_scheduler_test; land,
# the attribute snapshots and the marts' publication on the session warehouse, tests/integration/test_killed_tasks.py).
KILLED_TASKS = {
    "train_consumer_encoder": lambda wh: wh.model_dir("consumer_encoder", str(NIGHTS[-1])),  # weights + embeddings
    "train_ranker": lambda wh: wh.champion_pointer("ranker"),  # after its model version, the champion record
    "publish_topk": lambda wh: wh.serving_user_topk() / f"ds={NIGHTS[-1]}",  # the online lists' source
    "build_audiences": lambda wh: wh.segments("audiences") / f"ds={NIGHTS[-1]}",
    "publish_segments": lambda wh: wh.mart_export("segment_profiles"),  # one of the segment marts' exports
    "record_run": lambda wh: wh.run_manifest(NIGHTS[-1]),  # the day's manifest, stamped with the run
}


def test_the_nights_python_tasks_killed_as_they_publish_keep_the_previous_version_and_a_retry_publishes(
    airflow_run, tmall, tmp_path
):
    """Each task, in its own process on a copy of the resumed warehouse, SIGKILLed as it makes its output visible:
    the path still names the previous version, the new one waits hidden beside it; the task run again
    exits 0, puts a new version there and removes what the killed run left. The consumer encoder's retry starts from
    the same weights (night one's) as the night did, so its embeddings are the night's, bit for bit."""
    warehouse, home, _ = airflow_run
    copy = tmp_path / "warehouse"
    shutil.copytree(warehouse, copy, symlinks=True)
    wh, env = Warehouse(copy, tmall.name), env_for(copy, home)
    night_embeddings = pq.read_table(wh.consumer_embeddings(NIGHTS[-1]))
    for task, target in KILLED_TASKS.items():
        killed_then_retried(env, task, NIGHTS[-1], target(wh), copy)
    assert complete_through(wh, "topk") == complete_through(wh, "segments") == NIGHTS[-1]
    assert pq.read_table(wh.consumer_embeddings(NIGHTS[-1])).equals(night_embeddings)


def test_retention_on_the_nights_outputs_keeps_what_is_served_and_what_the_next_night_reads(
    airflow_run, tmall, tmp_path
):
    """The DAG's apply_retention ran each night (off by default: nothing removed, said in the manifest). Then, on a
    copy of the night's outputs, `nightrec retention --days 7 --apply` as of two weeks later: every older version
    goes but the served lists and their rollback targets, each model's champion and the newest version of each
    output, so the lists, the champions and the next night's inputs are all still there."""
    warehouse, home, _ = airflow_run
    wh = Warehouse(warehouse, tmall.name)
    for night in NIGHTS:
        recorded = json.loads(wh.run_manifest(night).read_text())["stages"]["retention"]
        assert recorded["days"] == 0 and recorded["removed"] == {}
    copy = tmp_path / "warehouse"
    for part in ("candidates", "serving", "models", "segments", "_runs", "docs"):
        shutil.copytree(warehouse / part, copy / part, symlinks=True)
    later = NIGHTS[-1] + timedelta(days=14)
    out = nightrec(["retention", "--days", "7", "--day", str(later), "--apply"], copy, home).stdout
    assert f"keeps everything from {later - timedelta(days=6)} on; removed" in out
    kept = Warehouse(copy, tmall.name)
    pointer = json.loads((kept.serving_topk() / "current.json").read_text())
    for entry in [pointer, *pointer["history"]]:
        assert (kept.serving_topk() / entry["path"] / SUCCESS_FILE).is_file()
        assert (kept.serving_user_topk() / f"ds={entry.get('served_ds', entry['ds'])}").is_dir()
    assert (kept.serving_topk() / "current").resolve().is_dir()
    for kind in (p for p in kept.models().iterdir() if (p / "champion.json").is_file()):
        version = json.loads((kind / "champion.json").read_text())["version"]
        assert (kind / version).is_dir(), kind.name

    def visible(root: Path) -> list[str]:
        return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))

    assert visible(kept.models() / "consumer_encoder") == [str(NIGHTS[-1])]  # the next night continues from it
    assert visible(copy / "candidates") == [f"ds={NIGHTS[-1]}"]
    assert visible(kept.segments("centroids")) == [f"ds={n}" for n in NIGHTS]  # the next lists read night - 2
    assert visible(kept.runs()) == [f"ds={NIGHTS[-1]}"]  # the bootstrap's days and night one's went
    assert not list(copy.rglob(".retired-*"))


def _rows_of(warehouse: Path, user: str) -> dict[str, int]:
    """Every row of ``user`` anywhere: each Parquet file with a user_id (raw aside), each DuckDB table with one, and
    each raw delivery's records whose user column is theirs."""
    import csv

    import duckdb

    found: dict[str, int] = {}
    for path in warehouse.rglob("*.parquet"):
        if "raw" in path.relative_to(warehouse).parts[:1] or any(p.startswith(".") for p in path.parts):
            continue
        table = pq.read_table(path)
        if "user_id" in table.column_names:
            n = sum(str(u).strip() == user for u in table.column("user_id").to_pylist())
            if n:
                found[str(path.relative_to(warehouse))] = n
    # the dbt target's tables (its views read bronze by the absolute path of the warehouse dbt ran in: the Parquet
    # files above) and the analysts' views over this warehouse's files
    for db, kinds in (
        (warehouse / "marts" / "duckdb" / "nightrec.duckdb", "('BASE TABLE')"),
        (warehouse / "analytics" / "nightrec.duckdb", "('BASE TABLE', 'VIEW')"),
    ):
        with duckdb.connect(str(db), read_only=True) as con:
            tables = con.sql(
                "select c.table_schema, c.table_name from information_schema.columns c join information_schema.tables"
                " t using (table_schema, table_name) where c.column_name = 'user_id' and t.table_type in " + kinds
            )
            for schema, name in tables.fetchall():
                (n,) = con.execute(
                    f'select count(*) from "{schema}"."{name}" where user_id::varchar = ?', [user]
                ).fetchone()
                if n:
                    found[f"{db.parent.name}:{schema}.{name}"] = n
    for path in warehouse.glob("raw/*/ds=*/*.csv"):
        with path.open(newline="") as fh:
            n = sum(1 for row in csv.reader(fh) if row and row[0].strip() == user)  # Tmall: user_id first
        if n:
            found[str(path.relative_to(warehouse))] = n
    return found


def _forgotten_rows(wh: Warehouse) -> dict[date, int]:
    """Each ingested day's rows forgotten on request, checking that every day still reconciles."""
    forgotten = {}
    for ds in manifest_days(wh):
        ingest = json.loads(wh.run_manifest(ds).read_text())["stages"].get("ingest_events")
        if ingest:
            assert reconciles(ingest), (ds, ingest)
            forgotten[ds] = ingest.get("forgotten_rows", 0)
    return forgotten


def test_a_forgotten_user_is_gone_from_every_zone_the_marts_and_the_online_store_and_stays_gone(
    airflow_run, tmall, tmp_path
):
    """The forget_users DAG, triggered with a real user who is in the served lists, a segment, an audience and the
    online store: afterwards no file, table or lookup returns them; every day's counts still reconcile (the rows
    are counted as forgotten); the replayed history lands without them; a second request removes nothing; and
    nobody else lost a row."""
    import duckdb

    from nightrec import feature_store
    from nightrec.marts_publish import build_analyst_db
    from tests.conftest import make_settings

    warehouse, home = tmp_path / "warehouse", tmp_path / "airflow"
    shutil.copytree(airflow_run[0], warehouse, symlinks=True)
    shutil.copytree(airflow_run[1], home, symlinks=True)
    settings = make_settings(warehouse)
    build_analyst_db(settings)  # its views name the files of the warehouse they were made for: this copy's
    wh = Warehouse.of(settings)
    seg = f"read_parquet('{wh.segments('audiences')}/*/*.parquet')"
    served = f"read_parquet('{wh.serving_topk() / 'current'}/*.parquet')"
    member = f"read_parquet('{wh.segments('membership')}/*/*.parquet')"
    user = duckdb.sql(
        f"select min(user_id) from {served} where user_id in (select user_id from {seg}) "
        f"and user_id in (select user_id from {member})"
    ).fetchall()[0][0]
    other = duckdb.sql(f"select max(user_id) from {served}").fetchall()[0][0]
    before = _rows_of(warehouse, user)
    assert {"bronze", "silver", "serving", "segments", "marts", "raw"} <= {k.split("/")[0] for k in before}, before
    bronze_before = read_table(wh.bronze_events())
    forgotten_before = _forgotten_rows(wh)
    lookup = [{"user_id": user, "item_id": ""}, {"user_id": other, "item_id": ""}]
    online_before = feature_store.online_features(settings, lookup, "topk")["user_topk__topk_item_ids"]
    assert online_before[0] is not None

    proc = nightrec(
        ["airflow", "dags", "test", "forget_users", "-c", json.dumps({"user_ids": [user]})], warehouse, home
    )
    assert "[DAG TEST] end task task_id=forget_users" in proc.stdout + proc.stderr
    assert "state=success" in proc.stdout + proc.stderr

    assert _rows_of(warehouse, user) == {}
    bronze_after = read_table(wh.bronze_events())
    assert len(bronze_before) - len(bronze_after) == (bronze_before["user_id"] == user).sum() > 0
    assert bronze_after.equals(bronze_before[bronze_before["user_id"] != user].reset_index(drop=True))
    for service, feature in (
        ("serving", "user_features__n_events_90d"),
        ("topk", "user_topk__topk_item_ids"),
        ("segments", "user_segments__segment_id"),
    ):
        values = feature_store.online_features(settings, lookup, service)[feature]
        assert values[0] is None, (service, values)
    assert feature_store.online_features(settings, lookup, "topk")["user_topk__topk_item_ids"][1] == online_before[1]

    forgotten = _forgotten_rows(wh)
    assert sum(forgotten.values()) - sum(forgotten_before.values()) == sum(
        n for k, n in before.items() if k.startswith("raw/")
    )
    status = nightrec(["status", "--all"], warehouse, home).stdout
    assert "forgotten on request" in status and " NO " not in status

    raw_before = {p: p.read_bytes() for p in wh.raw().glob("ds=*/*.csv")}
    landed = nightrec(["land"], warehouse, home).stdout  # the whole bundled history replayed: they stay out
    assert f"{sum(forgotten.values()):,} rows of users forgotten on request left out" in landed
    assert {p: p.read_bytes() for p in wh.raw().glob("ds=*/*.csv")} == raw_before

    again = nightrec(["forget", "--user", user], warehouse, home).stdout
    assert "  nothing" in again and f"not found in any file or table: {user}" in again
    assert user not in (warehouse / "_privacy" / "forgotten.json").read_text()  # kept by key, never in clear
    pages = list((warehouse / "docs" / "runs").glob("*.html"))  # drawn again: a night shows a few users' histories
    assert pages and not [p.name for p in pages if f"<td>{user}</td>" in p.read_text()]


# A password in the metadata database's URL (the test server trusts local connections and ignores it): no log and no
# file the run writes may contain it.
SECRET = "n1ghtrec-test-secret-7f3a"


def _api(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/{path}", timeout=30) as answer:
        return json.load(answer)


@dataclass
class SchedulerRerun:
    """The nights a real scheduler catches up, started in the background (scheduler_rerun): where, and how to ask."""

    warehouse: Path
    home: Path
    logs: Path
    port: int
    apps_before: set[str]
    kills: Path  # NIGHTREC_KILL_ONCE's records
    before: dict[str, list[int] | None]  # each killed glob's target version before the night
    env: dict[str, str]

    def runs(self, count: int, seconds: float) -> list[dict]:
        """The DAG's runs by logical date, read through the REST API once there are ``count`` and all are over."""
        deadline = time.time() + seconds
        while True:
            runs = _api(self.port, "dags/nightly/dagRuns?order_by=logical_date")["dag_runs"]
            if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            assert time.time() < deadline, f"the scheduler's runs did not finish: {runs}"
            time.sleep(5)

    def tasks(self, run: dict) -> list[dict]:
        return _api(self.port, f"dags/nightly/dagRuns/{run['dag_run_id']}/taskInstances?limit=200")["task_instances"]

    def backfill(self, night: date) -> None:
        """`airflow backfill create` of one night that already ran (it reruns it: reprocess completed)."""
        create = ["airflow", "backfill", "create", "--dag-id", "nightly", "--reprocess-behavior", "completed"]
        nightrec([*create, "--from-date", str(night), "--to-date", str(night)], self.warehouse, self.home, env=self.env)


def _killed_by_the_scheduler_test(warehouse: Path) -> dict[str, str]:
    """The tasks the scheduler's night loses to SIGKILL once, as each makes its output of night two visible (the
    Spark jobs and the training task; the night's other writers are killed by the tests above): task id -> glob."""
    night = NIGHTS[-1]
    return {
        "build_sequences": f"{warehouse}/silver/sequences/ds={night}",
        "train": f"{warehouse}/models/two_tower/{night}",  # the first model version it writes
        "build_candidates": f"{warehouse}/candidates/ds={night}",
        "score_topk": f"{warehouse}/serving/topk/ds={night}/model=*",  # the lists' version, before the pointer moves
        "segments.build_segments": f"{warehouse}/segments/membership/ds={night}",  # the first of its three tables
    }


def _the_one(glob: str) -> Path:
    (path,) = Path(glob).parent.glob(Path(glob).name)
    return path


@pytest.fixture(scope="module")
def scheduler_rerun(airflow_run, tmp_path_factory, spark_standalone) -> Iterator[SchedulerRerun]:
    """Airflow as a deployment runs it, on a copy of the e2e warehouse: metadata on PostgreSQL, the LocalExecutor, the
    scheduler, dag processor and API server as separate processes (`nightrec setup-airflow` first), the Spark jobs
    submitted to a standalone cluster, catch-up on from night two (`airflow.first_night`): unpaused, the DAG runs
    night two and the night after the history, which its land task skips (the history ends on night two). Each task of
    _killed_by_the_scheduler_test is SIGKILLed once as it publishes (nightrec/faults.py, NIGHTREC_KILL_ONCE), and the
    night has one retry a second later for each task, as a deployment's `airflow.task_retries` gives it.

    It returns once the DAG is unpaused, and the nights run while the module's other tests do
    (_scheduler_rerun_starts_early): on two cores the scheduler's own waits between tasks leave room for them. The
    services stop at the module's end."""
    from tests.servers import free_port, postgres_server, wait_for_port

    base = tmp_path_factory.mktemp("scheduler")
    warehouse, home, kills = base / "warehouse", base / "airflow", base / "kills"
    shutil.copytree(airflow_run[0], warehouse, symlinks=True)
    killed = _killed_by_the_scheduler_test(warehouse)
    # each glob names one published path (a wildcard only in its last part)
    before = {glob: what_readers_see(_the_one(glob))["version"] for glob in killed.values()}
    port = free_port()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_server())
        env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url.replace("postgres@", f"postgres:{SECRET}@"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # the API on loopback, for this test only
            "NIGHTREC_SPARK_MASTER": spark_standalone.master,
            # catch-up from night two, not from the source's nightly_start (night one, built already)
            "NIGHTREC_SET": f"airflow.catchup=true; airflow.first_night={NIGHTS[-1]}; airflow.task_retries=1; "
            "airflow.retry_delay_seconds=1; " + env_for(warehouse, home)["NIGHTREC_SET"],
            KILL_AT_COMMIT: ";".join(killed.values()),
            KILL_ONCE: str(kills),
        }
        assert "pool nightrec_dbt has 1 slot" in nightrec(["setup-airflow"], warehouse, home, env=env).stdout
        services: list[subprocess.Popen] = []

        @stack.callback
        def stop() -> None:
            for service in services:
                service.terminate()
            for service in services:
                service.wait(timeout=120)

        for name, args in [
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port)]),
            ("dag-processor", ["dag-processor"]),
            ("scheduler", ["scheduler"]),
        ]:
            services.append(
                subprocess.Popen(
                    [sys.executable, "-m", "nightrec_app.cli", "airflow", *args],
                    cwd=PROJECT_ROOT,
                    env=env_for(warehouse, home) | env,
                    stdout=(base / f"{name}.log").open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for_port(port, seconds=120)
        deadline = time.time() + 180
        while "nightly" not in {d["dag_id"] for d in _api(port, "dags")["dags"]}:
            assert time.time() < deadline, "the dag processor did not register the nightly DAG"
            time.sleep(2)
        apps_before = {app["id"] for app in spark_standalone.applications()}
        nightrec(["airflow", "dags", "unpause", "nightly"], warehouse, home, env=env)  # the catch-up starts
        yield SchedulerRerun(warehouse, home, base, port, apps_before, kills, before, env)


SCHEDULER_TEST = "test_a_real_scheduler_on_postgres_catches_up_two_nights_and_backfill_create_reruns_one"


@pytest.fixture(scope="module", autouse=True)
def _scheduler_rerun_starts_early(request) -> None:
    """Start the scheduler's night before the module's first test when its test (the module's last) is selected, so
    the two overlap instead of adding up (about eight minutes on the two-core CI machine)."""
    if any(item.name == SCHEDULER_TEST for item in request.session.items):
        request.getfixturevalue("scheduler_rerun")


def test_a_real_scheduler_on_postgres_catches_up_two_nights_and_backfill_create_reruns_one(
    airflow_run, tmall, scheduler_rerun, spark_standalone
):
    """The scheduler's catch-up (scheduler_rerun), read back through the REST API: night two and the night after it
    ran as scheduled runs, one after the other; in night two every task succeeded, the dbt models ran one at a time
    (their pool), the Spark jobs ran on the cluster, and the tables equal those of the `dags test` runs; in the night
    after the history, the land task skipped the night. `airflow backfill create` then reran that night (it needs no
    second full night on two cores). The database password appears in no log.

    The Spark jobs and training, each SIGKILLed as it published: at that moment readers still saw the previous
    version of its output and the new one waited hidden beside it; Airflow's retry (the task's second try) published
    a new version and removed what the killed try left, and the night's tables are still the `dags test` night's."""
    rerun = scheduler_rerun
    night, after = NIGHTS[-1], NIGHTS[-1] + timedelta(days=1)
    run, empty = rerun.runs(count=2, seconds=1800)
    # a run's logical date is its data interval's start; catch-up ran the nights in order, one at a time
    assert [r["logical_date"][:10] for r in (run, empty)] == [str(night), str(after)], (run, empty)
    assert [r["run_type"] for r in (run, empty)] == ["scheduled", "scheduled"]
    assert run["end_date"] <= empty["start_date"]  # max_active_runs 1: night D+1 continues from night D
    tasks = rerun.tasks(run)
    states = {t["task_id"]: t["state"] for t in tasks}
    assert run["state"] == "success" and set(states.values()) == {"success"}, (run, states)
    skipped = {t["task_id"]: t["state"] for t in rerun.tasks(empty)}
    assert empty["state"] == "success" and skipped["land"] == "skipped", (empty, skipped)

    rerun.backfill(after)
    _, again = rerun.runs(count=2, seconds=600)
    assert again["dag_run_id"] == empty["dag_run_id"] and again["run_type"] == "backfill", again  # the same run
    assert again["state"] == "success" and again["start_date"] > empty["end_date"], (again, empty)
    assert {t["task_id"]: t["state"] for t in rerun.tasks(again)} == skipped

    killed = _killed_by_the_scheduler_test(rerun.warehouse)
    tries = {t["task_id"]: t["try_number"] for t in tasks}
    assert {task: tries[task] for task in killed} == dict.fromkeys(killed, 2), tries
    assert {t for t, n in tries.items() if n > 1} == set(killed), tries  # no other task needed its retry
    for task, glob in killed.items():
        record = json.loads(kill_record(rerun.kills, glob).read_text())
        target = Path(record["target"])
        assert rerun.before[glob] is not None and record["version"] == rerun.before[glob], (task, record)  # still
        # the previous version for readers as the task died...
        assert [h for h in record["hidden"] if h.startswith(f".tmp-{target.name}-")], (task, record)  # ...the new
        # one complete and hidden beside it; after the retry, a new version and nothing hidden
        now = what_readers_see(target)
        assert now["version"] not in (None, record["version"]) and not now["hidden"], (task, now)
    assert not list(rerun.warehouse.rglob(".tmp-*")) and not list(rerun.warehouse.rglob(".trash-*"))
    dbt = sorted((t["start_date"], t["end_date"]) for t in tasks if t["task_id"].startswith("dbt."))
    assert len(dbt) > 5 and all(t["pool"] == "nightrec_dbt" for t in tasks if t["task_id"].startswith("dbt."))
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(dbt))  # one at a time
    ran = {app["name"] for app in spark_standalone.applications() if app["id"] not in rerun.apps_before}
    assert {"ingest_events:tmall_brand", "build_sequences:tmall_brand"} <= ran, ran

    days = [night - timedelta(days=3), *NIGHTS]
    rerun_tables, reference = (
        _tables(Warehouse(rerun.warehouse, tmall.name), days),
        _tables(Warehouse(airflow_run[0], tmall.name), days),
    )
    for name in rerun_tables:
        assert rerun_tables[name].astype(str).equals(reference[name].astype(str)), name
    written = [
        p
        for root in (rerun.home, rerun.warehouse, rerun.logs)
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".log", ".json", ".jsonl", ".cfg", ".html", ".txt")
    ]
    assert written and not [p for p in written if SECRET in p.read_text(errors="replace")]
