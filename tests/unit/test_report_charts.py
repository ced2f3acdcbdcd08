"""The run report's charts (nightrec/report_charts.py) on real Tmall rows: what each draws from, the example users,
and a night drawn twice giving the same page."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec import report_charts
from nightrec.report_charts import charts_html, gini
from nightrec.run_manifest import read_run_manifest, update_run_manifest
from nightrec.warehouse import Warehouse

NIGHTS = [date(2014, 8, 14), date(2014, 8, 15)]
LEVELS = {"click": 1, "collect": 2, "cart": 3, "buy": 4}


def test_gini_of_known_exposures():
    assert gini([5, 5, 5]) == pytest.approx(0.0)
    assert gini([1, 3]) == pytest.approx(0.25)  # mean |difference| 1 over twice the mean 2
    assert gini([0, 0, 7]) == pytest.approx(0.0)  # items never shown are not in the curve
    assert gini([]) == 0.0


@pytest.fixture
def night_warehouse(tmp_path: Path, tmall):
    """Bronze days from the real log, a served list for the last night and two nights' manifests."""
    wh = Warehouse(tmp_path, tmall.name)
    lines = tmall.bundled_events.read_text().splitlines()[1:]
    by_day: dict[date, list[list[str]]] = {}
    for line in lines:
        user, item, kind, day = line.split(",")
        month, dom = day.split("-")
        by_day.setdefault(date(2014, int(month), int(dom)), []).append([user, item, kind])
    for day in [NIGHTS[0] - timedelta(days=k) for k in range(1, 40)] + NIGHTS:
        rows = by_day[day]
        part = wh.bronze_events() / f"ds={day}"
        part.mkdir(parents=True)
        table = pa.table(
            {
                "user_id": [r[0] for r in rows],
                "item_id": [r[1] for r in rows],
                "level": pa.array([int(r[2]) + 1 for r in rows], pa.int32()),
                "event_ts": pa.array([f"{day}T00:00:00Z"] * len(rows), pa.string()).cast(pa.timestamp("us", "UTC")),
            }
        )
        pq.write_table(table, part / "part-00000.parquet")
    # the last night's list: each of 30 users of that day gets their own items, then the day's popular ones
    tonight = by_day[NIGHTS[-1]]
    popular = [i for i, _ in Counter(r[1] for r in tonight).most_common(20)]
    users = sorted({r[0] for r in tonight})[:30]
    listed = []
    for user in users:
        own = list(dict.fromkeys(r[1] for r in tonight if r[0] == user))
        items = list(dict.fromkeys(own + popular))[:20]
        listed += [
            (user, rank, item, ["history" if item in own else "popular_7d"]) for rank, item in enumerate(items, 1)
        ]
    version = wh.serving_topk() / f"ds={NIGHTS[-1]}" / "model=ranker-test"
    version.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_id": [r[0] for r in listed],
                "rank": pa.array([r[1] for r in listed], pa.int32()),
                "item_id": [r[2] for r in listed],
                "sources": [r[3] for r in listed],
            }
        ),
        version / "part-00000.parquet",
    )
    for k, night in enumerate(NIGHTS):
        rows = len(by_day[night])
        ingest = {"raw_rows": rows + k + 1, "bronze_rows": rows, "quarantined_rows": k + 1, "redelivered_rows": 0}
        update_run_manifest(wh, night, "ingest_events", {**ingest, "quarantine_reasons": {"blank_line": k + 1}})
        metrics = {
            name: {"30d": {"recall@20": 0.05 * (i + 1) + 0.01 * k}} for i, name in enumerate(["ranker", "popularity"])
        }
        update_run_manifest(wh, night, "ranker", {"metrics": metrics, "lists": {"lists": "ranker"}})
        update_run_manifest(
            wh, night, "training", {"models": {"two_tower": {"metric": "ndcg@20", "value": 0.03 + k / 100}}}
        )
        update_run_manifest(
            wh, night, "segments", {"sizes": {"0": 20, "1": 10}, "labels": {"0": "heavy", "1": "light"}, "ari": 0.9}
        )
    update_run_manifest(wh, NIGHTS[-1], "topk", {"current": f"ds={NIGHTS[-1]}/model=ranker-test"})
    return wh, by_day, listed


def test_a_nights_page_draws_every_chart_and_shows_users_history_beside_their_list(night_warehouse):
    wh, by_day, listed = night_warehouse
    docs = {night: read_run_manifest(wh, night) for night in NIGHTS}
    page = charts_html(wh, LEVELS, NIGHTS[-1], docs)

    assert page.count("<svg") == 6 and "not drawn" not in page and "nothing to draw" not in page
    assert "<?xml" not in page  # inline SVG, no file or server beside the page
    assert "ranker (published)" in page and "blank_line" in page and "two_tower (ndcg@20)" in page
    assert "<li>0 (20): heavy</li>" in page
    counts = Counter(item for _, _, item, _ in listed)
    assert f"Gini {gini(list(counts.values())):.2f}" in page and f"of the {len(counts):,} items shown" in page
    # the example users: three users of the list, their latest day's behaviour first, items they touched marked
    served_users = {u for u, *_ in listed}
    shown = [row.split("</td>")[0] for row in page.split("<tr><td>")[1:]]
    examples = [u for u in shown if u in served_users]
    assert len(examples) == report_charts.EXAMPLE_USERS
    user = examples[0]
    row = page.split(f"<tr><td>{user}</td>")[1].split("</tr>")[0]
    own = [r for r in by_day[NIGHTS[-1]] if r[0] == user]
    assert row.split("<td>")[1].startswith(f"{NIGHTS[-1]} · ")  # newest first
    first_listed = next(item for u, rank, item, _ in listed if u == user and rank == 1)
    assert f"1. item {first_listed} ✓" in row and first_listed in {r[1] for r in own}

    # drawn again: the same bytes (no date, fixed ids); the first night has its own charts, and no list was served
    assert charts_html(wh, LEVELS, NIGHTS[-1], docs) == page
    first = charts_html(wh, LEVELS, NIGHTS[0], docs)
    assert first.count("<svg") == 5 and "Example users" not in first and "nothing to draw yet" in first


def test_a_chart_that_cannot_be_drawn_says_why_and_the_page_is_still_written(night_warehouse, monkeypatch):
    wh, _, _ = night_warehouse

    def broken(*_args):
        raise ValueError("no such column")

    monkeypatch.setattr(report_charts, "_lorenz", broken)
    html = charts_html(wh, LEVELS, NIGHTS[-1], {d: None for d in NIGHTS})
    assert "not drawn: ValueError: no such column" in html
