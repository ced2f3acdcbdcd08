"""The run report's edge cases: counts that do not reconcile, skipped training and top-k, quality warnings."""

from __future__ import annotations

from nightrec.run_report import render, render_html, render_index


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
