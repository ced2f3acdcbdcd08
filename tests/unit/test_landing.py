"""The replayer and single-file landing, on the real Tmall log."""

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from nightrec.errors import InputError
from nightrec.landing import count_data_rows, land_file, replay
from nightrec.warehouse import Warehouse


def test_replay_splits_the_whole_history_into_daily_deliveries(tmp_path: Path, tmall):
    wh = Warehouse(tmp_path, tmall.name)
    end = tmall.history_end + timedelta(days=1)
    report = replay(tmall, wh, tmall.history_start, end)

    original = tmall.bundled_events.read_text().splitlines()
    header, body = original[0], original[1:]
    assert len(report.days) == (end - tmall.history_start).days == 123
    assert report.rows == len(body) == 182_880
    assert report.count("landed") == 123

    delivered: Counter[str] = Counter()
    for day in report.days:
        lines = (wh.raw_day(day.ds) / day.file).read_text().splitlines()
        assert lines[0] == header
        assert len(lines) - 1 == day.rows
        month, dom = day.ds.month, day.ds.day
        assert all(line.rsplit(",", 1)[1] == f"{month}-{dom}" for line in lines[1:])
        delivered.update(lines[1:])
    # Every raw row is delivered exactly once, byte for byte (identical rows included).
    assert delivered == Counter(body)


def test_replay_is_idempotent_and_a_corrected_day_replaces_only_that_day(tmp_path: Path, tmall):
    wh = Warehouse(tmp_path / "wh", tmall.name)
    start, end = date(2014, 5, 1), date(2014, 5, 4)
    first = replay(tmall, wh, start, end)
    again = replay(tmall, wh, start, end)
    assert again.count("unchanged") == 3 and again.rows == first.rows

    # A corrected history: one row of 2014-05-02 becomes a buy.
    lines = tmall.bundled_events.read_text().splitlines(keepends=True)
    idx = next(i for i, line in enumerate(lines) if line.rstrip().endswith(",0,5-2"))
    lines[idx] = lines[idx].replace(",0,5-2", ",1,5-2")
    corrected = tmp_path / "t_alibaba_data.csv"
    corrected.write_text("".join(lines))
    report = replay(tmall, wh, start, end, bundled=corrected)
    assert {d.ds: d.status for d in report.days} == {
        date(2014, 5, 1): "unchanged",
        date(2014, 5, 2): "replaced",
        date(2014, 5, 3): "unchanged",
    }
    assert lines[idx].rstrip() in (wh.raw_day(date(2014, 5, 2)) / "t_alibaba_data.csv").read_text()
    assert not list(wh.raw().glob(".tmp-*")) and not list(wh.raw().glob(".trash-*"))


def test_land_file_reports_new_repeated_and_corrected_deliveries(tmp_path: Path, tmall):
    wh = Warehouse(tmp_path / "wh", tmall.name)
    ds = date(2014, 6, 1)
    delivery = tmp_path / "drop" / "events.csv"
    delivery.parent.mkdir()
    delivery.write_text("user_id,brand_id,type,visit_datetime\n1,2,0,6-1\n1,2,1,6-1\n")
    assert land_file(tmall, wh, ds, delivery).status == "landed"
    assert land_file(tmall, wh, ds, delivery).status == "unchanged"
    copy = delivery.with_name("events_again.csv")
    copy.write_bytes(delivery.read_bytes())
    repeated = land_file(tmall, wh, ds, copy)
    assert (repeated.status, repeated.rows) == ("redelivered", 2)
    delivery.write_text("user_id,brand_id,type,visit_datetime\n1,2,0,6-1\n")
    assert land_file(tmall, wh, ds, delivery).status == "replaced"
    assert sorted(p.name for p in wh.raw_day(ds).iterdir()) == ["events.csv", "events_again.csv"]
    with pytest.raises(InputError, match="does not exist or is not a file"):
        land_file(tmall, wh, ds, tmp_path / "drop")
    wrong = tmp_path / "drop" / "events.json"
    wrong.write_text("{}")
    with pytest.raises(InputError, match=r"does not match source 'tmall_brand' file pattern '\*\.csv'"):
        land_file(tmall, wh, ds, wrong)


def test_replay_refuses_rows_it_cannot_place_on_a_day(tmp_path: Path, tmall):
    bad = tmp_path / "t_alibaba_data.csv"
    bad.write_text("user_id,brand_id,type,visit_datetime\n1,2,0,4-15\n1,2,0,4-31\n")
    with pytest.raises(InputError, match=r"1 row\(s\) with an unparseable 'visit_datetime' \(line 3: '4-31'\)"):
        replay(tmall, Warehouse(tmp_path / "wh", tmall.name), tmall.history_start, date(2014, 4, 16), bundled=bad)


@pytest.mark.parametrize(
    ("content", "rows"),
    [(b"", 0), (b"h\n", 0), (b"h", 0), (b"h\na\nb\n", 2), (b"h\na\nb", 2), (b"h\r\na\r\n", 1), (b"h\n\na\n", 2)],
)
def test_count_data_rows(content: bytes, rows: int):
    assert count_data_rows(content) == rows
