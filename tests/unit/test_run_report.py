"""The run report's edge cases: counts that do not reconcile, skipped training and top-k, quality warnings."""

from __future__ import annotations

from datetime import date

from nightrec.errors import InputError, QualityCheckFailed
from nightrec.run_manifest import begin_attempt, end_attempt, read_run_manifest, stale_sections, update_run_manifest
from nightrec.run_report import attempt_mark, render, render_html, render_index
from nightrec.warehouse import Warehouse
from nightrec_app import tasks


def _manifest(**stages) -> dict:
    return {"source": "tmall_brand", "ds": "2014-08-15", "stages": stages}


def test_counts_that_do_not_add_up_are_flagged_not_called_reconciled():
    ingest = {
        "raw_rows": 10,
        "bronze_rows": 7,
        "quarantined_rows": 2,
        "redelivered_rows": 0,
        "quarantine_reasons": {"missing_user_id": 2},
    }
    text = render(_manifest(ingest_events=ingest))
    assert "10 raw rows = 7 bronze + 2 quarantined + 0 re-delivered: NOT RECONCILED (9 accounted for)" in text
    assert "quarantined by reason: missing_user_id 2" in text
    ingest["bronze_rows"] = 8
    assert ": reconciled" in render(_manifest(ingest_events=ingest))


def test_skipped_stages_say_why_and_absent_ones_say_not_run():
    text = render(
        _manifest(
            training={"skipped": "history too short for the evaluation window"},
            topk={"skipped": "no top-k scored (no champion yet)", "written": []},
        )
    )
    assert "training   skipped: history too short for the evaluation window" in text
    assert "top-k      nothing published: no top-k scored (no champion yet)" in text
    assert "ingest     not run on this day" in text and "raw: not run on this day" in text


def test_quality_warnings_and_failures_are_listed_with_their_expectation():
    finding = {"table": "raw.events", "expectation": "expect_x(column='user_id')", "summary": "3 of 100 rows"}
    quality = {
        "success": True,
        "tables": {"raw.events": {"expectations": 10, "passed": 9, "rows": 100}},
        "critical": [],
        "warnings": [finding],
        "data_docs": "/w/docs/gx/index.html",
    }
    text = render(_manifest(quality_raw=quality, quality_marts={**quality, "success": False, "critical": [finding]}))
    assert "raw: 1 warning(s), 9/10 expectations on 1 table" in text
    assert "marts: FAILED" in text and "[critical] raw.events: expect_x(column='user_id'): 3 of 100 rows" in text
    assert "Data Docs: /w/docs/gx/index.html" in text


def test_html_pages_escape_what_the_manifest_quotes():
    """Findings quote raw rows; a page must show them as text, not run them as markup."""
    finding = {"table": "raw.events", "expectation": "expect_x", "summary": "<script>alert(1)</script> & more"}
    quality = {"success": False, "tables": {}, "critical": [finding], "warnings": []}
    page = render_html(_manifest(quality_raw=quality))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    index = render_index([_manifest(quality_raw=quality, training={"models": {}})])
    assert '<a href="ds=2014-08-15.html">2014-08-15</a>' in index
    assert "<td>FAIL/-/-</td>" in index and "<td>none</td>" in index


def test_the_lists_section_sets_every_list_beside_the_others_and_says_what_was_published():
    def row(recall: float, ndcg: float, users: int) -> dict:
        return {"recall@20": recall, "ndcg@20": ndcg, "users": users}

    ranker = {
        "version": "2014-08-15",
        "seconds": 12.5,
        "training": {
            "held_out": {"anchors": ["2014-07-05"] * 8, "purchases": 856},
            "served": {"anchors": ["2014-08-09"] * 13, "purchases": 1494},
        },
        "metrics": {
            "two_tower": {"30d": row(0.07, 0.0325, 524), "7d": row(0.085, 0.0363, 866)},
            "own_history": {"30d": row(0.1525, 0.1043, 524), "7d": row(0.2221, 0.137, 866)},
            "ranker": {"30d": row(0.1593, 0.1042, 524), "7d": row(0.2256, 0.1462, 866)},
            "popularity": {"30d": row(0.0687, 0.0372, 524)},
        },
        "gate": {"publish": True, "reason": "no champion yet"},
        "lists": {"lists": "own_history", "reason": "the ranker does not beat own_history on the held-out window"},
    }
    text = render(_manifest(ranker=ranker))
    assert "ranker 2014-08-15 in 12.5 s: evaluated booster on 8 anchors (856 purchases), published booster on 13" in (
        text
    )
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:] if "/" in line and "(" in line}
    assert rows["own_history*"] == ["0.1525/0.1043", "(524)", "0.2221/0.1370", "(866)"]  # * marks the published
    assert rows["popularity"] == ["0.0687/0.0372", "(524)", "-"]  # a horizon not judged
    order = [line.split()[0] for line in text.splitlines() if line.split() and line.split()[0] in rows]
    assert order == ["ranker", "popularity", "own_history*", "two_tower"]  # the ranker, the baselines, the models
    assert "publishes own_history (*): the ranker does not beat own_history on the held-out window" in text
    skipped = render(_manifest(ranker={"skipped": "no candidates for 2014-08-15"}))
    assert "lists      skipped: no candidates for 2014-08-15" in skipped


def test_segments_and_audiences_say_what_ran_and_what_failed():
    encoder = {
        "version": "2014-08-15",
        "consumers": 884,
        "best_epoch": 2,
        "validation_recall@10x": 0.7561,
        "alignment": {"aligned": True, "previous_night": "2014-08-14", "mean_cosine_to_previous": 0.9875},
        "seconds": 6.8,
        "device": "cpu",
    }
    segments = {
        "k": 2,
        "consumers": 10,
        "clustering": "continued",
        "silhouette": 0.2,
        "silhouettes": {"k=2": 0.19, "continued": 0.2},
        "fresh_starts": {"k": 2, "chosen": 1, "costs": [3.5, 3.25, 3.75], "first_silhouette": 0.18},
        "ari": 0.81,
        "previous_night": "2014-08-14",
        "common_consumers": 9,
        "sizes": {"0": 4, "3": 6},
        "labels": {"0": "Jeans · heavy", "3": "Socks"},
        "published": {"marts": {"segment_membership": 19}, "online_users": 10},
    }
    audiences = {
        "file": "conf/audiences/tmall_brand.yaml",
        "rows": 12,
        "audiences": {
            "brand_buyers": {
                "seed": 4,
                "expanded": 8,
                "size": 2,
                "evaluation": {"10": {"recall": 1.0, "random": 0.9}, "1": {"recall": 0.5, "random": 0.1}},
                "at_share": {"0.05": {"recall": 0.2, "best": 1.0}, "0.1": {"recall": 0.4, "best": 0.75}},
            },
            "broken": {"error": "The seed is empty: give at least one user id"},
        },
    }
    text = render(_manifest(consumer_encoder=encoder, segments=segments, audiences=audiences))
    assert (
        "encoder 2014-08-15: 884 consumers, epoch 2 kept (validation lookalike recall@10x 0.756), continued from "
        in text
    )
    assert (
        "2 segments of 10 consumers: continued (silhouette 0.200; tried k=2 0.190, continued 0.200; k=2 the best of 3 "
        "starts)" in text
    )
    assert "stability: ARI 0.810 with 2014-08-14 on 9 consumers" in text
    assert "segment   3:       6 (60.0%)  Socks" in text
    assert "online store (user_segments): 10 users" in text
    assert "brand_buyers: seed 4, 8 alike (2x); hidden seed members found: 1x 0.500 (random 0.100), 10x 1.000" in text
    assert "10x 1.000 (random 0.900); in 10% of consumers 0.400 (random 0.100, best 0.750)" in text
    assert "broken: FAILED: The seed is empty" in text
    first = render(_manifest(segments={**segments, "ari": None}, audiences={"skipped": "no segments for 2014-08-15"}))
    assert "stability: first night with segments, nothing to compare" in first
    older = {key: value for key, value in segments.items() if key != "fresh_starts"}  # a night before the starts
    assert "tried k=2 0.190, continued 0.200)" in render(_manifest(segments=older))
    assert "encoder" not in first and "audiences  skipped: no segments for 2014-08-15" in first
    assert "segments   not run on this day" in render(_manifest())


def test_a_failed_attempt_is_shown_with_its_task_and_error_and_older_sections_are_marked(tmp_path):
    """A night writes land and a failed raw check, then fails: the day's report and the index say so, name the task
    and the error, and mark the ingest section as left by the run before."""
    wh = Warehouse(tmp_path, "tmall_brand")
    days = [date(2014, 8, 14), date(2014, 8, 15)]
    ingest = {"raw_rows": 3, "bronze_rows": 3, "quarantined_rows": 0, "redelivered_rows": 0, "quarantine_reasons": {}}
    begin_attempt(wh, days, "nightly", "run_1")
    for ds in days:
        update_run_manifest(wh, ds, "ingest_events", ingest)
    assert end_attempt(wh, "run_1", "success", days=days) == days
    assert render(read_run_manifest(wh, days[1])).splitlines()[1].startswith("  attempt    succeeded: nightly run_1")

    begin_attempt(wh, days, "nightly", "run_2")
    files = [{"file": "t_alibaba_data.csv", "rows": 3, "status": "kept", "reason": "the file there was delivered"}]
    for ds in days:
        update_run_manifest(wh, ds, "land", {"by": "replay", "files": files})
    error = QualityCheckFailed("Data quality check 'raw' failed: 1 critical expectation(s)\nraw.events: expect_x")
    tasks.record_failure(wh, "nightly", "run_2", "validate_raw", error, "2014-08-15")
    doc = read_run_manifest(wh, days[1])
    assert doc["attempt"]["state"] == "failed" and doc["attempt"]["failed_task"] == "validate_raw"
    assert stale_sections(doc) == {"ingest_events": "run_1"}
    text = render(doc)
    assert "attempt    FAILED in task validate_raw: nightly run_2" in text
    assert "QualityCheckFailed: Data quality check 'raw' failed: 1 critical expectation(s)" in text
    assert "land       replay: t_alibaba_data.csv kept (3 rows)" in text
    assert "(recorded by an earlier run, run_1; the latest attempt did not rewrite it)" in text.split("sequences")[0]
    assert "FAILED:validate_raw" in render_index([doc]) and attempt_mark(None) == "-"

    # a run that fails before its first task records an attempt still leaves the failure on its own day
    tasks.record_failure(wh, "nightly", "run_3", "land", InputError("Bundled history not found"), "2014-08-16")
    third = read_run_manifest(wh, date(2014, 8, 16))
    assert third["attempt"]["failed_task"] == "land" and "Bundled history not found" in render(third)
    assert read_run_manifest(wh, days[1])["attempt"]["run_id"] == "run_2"  # other days keep their attempt

    # run_2's failed task is cleared and the run goes on to the end: a success without error fields, which still says
    # what it recovered from
    assert end_attempt(wh, "run_2", "success") == days
    recovered = read_run_manifest(wh, days[1])["attempt"]
    assert recovered["state"] == "success" and "error" not in recovered and "failed_task" not in recovered
    assert recovered["recovered_from"]["failed_task"] == "validate_raw"
    lines = render(read_run_manifest(wh, days[1])).splitlines()
    assert lines[1].startswith("  attempt    succeeded: nightly run_2")
    assert "(after it was FAILED in validate_raw: QualityCheckFailed: Data quality check 'raw' failed" in lines[2]
    assert attempt_mark(recovered) == "ok"


def test_the_land_section_says_what_the_replay_kept_and_what_lies_outside_the_history():
    land = {
        "by": "replay",
        "files": [{"file": "t_alibaba_data.csv", "rows": 1694, "status": "unchanged"}],
        "outside_history": {"2014-04-14": 3},
    }
    text = render(_manifest(land=land))
    assert "land       replay: t_alibaba_data.csv unchanged (1,694 rows)" in text
    assert "3 row(s) of the history file lie outside the history and are not landed (3 on 2014-04-14" in text


def test_the_report_says_what_retention_removed_or_that_it_is_off():
    text = render(
        _manifest(retention={"days": 30, "cutoff": "2014-07-17", "removed": {"candidates": 3, "runs": 2}, "paths": {}})
    )
    assert "30 days (kept from 2014-07-17): removed candidates 3, runs 2" in text
    assert "off (retention.days = 0): every version kept" in render(_manifest(retention={"days": 0, "removed": {}}))
    assert "retention  not run on this day" in render(_manifest())
