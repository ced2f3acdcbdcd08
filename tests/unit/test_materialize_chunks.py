"""Materialization chunks: whole days, bounded by days and by feature rows (Feast's memory grows with a call's rows)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from nightrec.config import load_settings
from nightrec.feature_store import chunk_days


def _settings(days: int, rows: int):
    base = load_settings("local", env={})
    return base.with_overrides(feast=replace(base.feast, materialize_chunk_days=days, materialize_chunk_rows=rows))


START = date(2014, 8, 1)


def _day(n: int) -> date:
    return START + timedelta(days=n)


def test_chunks_cover_the_range_in_order_and_respect_both_bounds():
    rows = {_day(n): r for n, r in enumerate([100, 300, 50, 50, 700, 10, 10, 10])}
    chunks = chunk_days(rows, START, _day(8), _settings(days=3, rows=400))
    assert chunks == [
        (_day(0), _day(2)),  # 100 + 300 = 400; adding 50 would pass 400
        (_day(2), _day(4)),  # 50 + 50; the next day alone has 700
        (_day(4), _day(5)),  # one day bigger than the bound stays one chunk (a day is never split)
        (_day(5), _day(8)),  # three days: the day bound
    ]


def test_days_without_rows_still_count_against_the_day_bound():
    assert chunk_days({}, START, _day(5), _settings(days=2, rows=10)) == [
        (_day(0), _day(2)),
        (_day(2), _day(4)),
        (_day(4), _day(5)),
    ]
    assert chunk_days({}, START, _day(1), _settings(days=14, rows=10)) == [(_day(0), _day(1))]
