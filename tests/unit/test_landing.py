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


def _history_with_one_more_buy(tmall, tmp_path: Path, day: str) -> tuple[Path, str]:
    """A corrected copy of the real history: the first click of `day` ("M-D") becomes a buy; returns it and the row."""
    lines = tmall.bundled_events.read_text().splitlines(keepends=True)
    idx = next(i for i, line in enumerate(lines) if line.rstrip().endswith(f",0,{day}"))
    lines[idx] = lines[idx].replace(f",0,{day}", f",1,{day}")
    corrected = tmp_path / "t_alibaba_data.csv"
    corrected.write_text("".join(lines))
    return corrected, lines[idx].rstrip()


def test_replay_is_idempotent_and_a_corrected_day_replaces_only_that_day(tmp_path: Path, tmall):
    wh = Warehouse(tmp_path / "wh", tmall.name)
    start, end = date(2014, 5, 1), date(2014, 5, 4)
    first = replay(tmall, wh, start, end)
    again = replay(tmall, wh, start, end)
    assert again.count("unchanged") == 3 and again.rows == first.rows

    # A corrected history: one row of 2014-05-02 becomes a buy.
    corrected, changed = _history_with_one_more_buy(tmall, tmp_path, "5-2")
    report = replay(tmall, wh, start, end, bundled=corrected)
    assert {d.ds: d.status for d in report.days} == {
        date(2014, 5, 1): "unchanged",
        date(2014, 5, 2): "replaced",
        date(2014, 5, 3): "unchanged",
    }
    assert changed in (wh.raw_day(date(2014, 5, 2)) / "t_alibaba_data.csv").read_text()
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


def test_the_replay_never_replaces_a_delivery_it_did_not_write(tmp_path: Path, tmall):
    """A corrected delivery landed under the history file's name survives the nightly replay, which says it kept it;
    a file nobody recorded is kept too; the replayer's own earlier file is still replaced by a corrected history."""
    wh = Warehouse(tmp_path / "wh", tmall.name)
    start, end = date(2014, 5, 1), date(2014, 5, 4)
    replay(tmall, wh, start, end)
    day2, day3 = date(2014, 5, 2), date(2014, 5, 3)
    original = (wh.raw_day(day2) / "t_alibaba_data.csv").read_text().splitlines(keepends=True)
    fixed = tmp_path / "drop" / "t_alibaba_data.csv"
    fixed.parent.mkdir()
    fixed.write_text("".join(original[:-1]))  # the shop's correction drops the day's last row
    assert land_file(tmall, wh, day2, fixed).status == "replaced"
    by_hand = (wh.raw_day(day3) / "t_alibaba_data.csv").read_text().splitlines(keepends=True)
    (wh.raw_day(day3) / "t_alibaba_data.csv").write_text("".join(by_hand[:2]))  # edited in place, no ledger entry

    report = replay(tmall, wh, start, end)
    days = {d.ds: d for d in report.days}
    assert {ds: d.status for ds, d in days.items()} == {date(2014, 5, 1): "unchanged", day2: "kept", day3: "kept"}
    assert days[day2].rows == len(original) - 2 and "delivered on" in days[day2].reason
    assert "not written by the replayer" in days[day3].reason and days[day3].rows == 1
    assert (wh.raw_day(day2) / "t_alibaba_data.csv").read_text() == fixed.read_text()
    assert "kept=2" in report.summary() and f"ds={day2} t_alibaba_data.csv: kept, the file there was delivered" in (
        report.summary()
    )
    assert days[day2].describe()["reason"] == days[day2].reason

    # the replayer's own file of day 1, under a corrected history, is still replaced
    corrected, _ = _history_with_one_more_buy(tmall, tmp_path, "5-1")
    again = replay(tmall, wh, start, end, bundled=corrected)
    assert [d.status for d in again.days] == ["replaced", "kept", "kept"]


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


def test_rows_of_the_history_file_outside_the_history_are_reported_not_dropped(tmp_path: Path, tmall):
    """Real rows moved to the day before the history's first day and the day after its last: no replay lands them;
    the report counts them by day, the first and last days' manifests carry them, and the message says what to
    change."""
    lines = tmall.bundled_events.read_text().splitlines(keepends=True)
    header = lines[0]
    first = [line for line in lines[1:] if line.rstrip().endswith(",4-15")]
    last = [line for line in lines[1:] if line.rstrip().endswith(",8-15")]
    before = [line.replace(",4-15", ",4-14") for line in first[:3]]
    after = [line.replace(",8-15", ",8-16") for line in last[:2]]
    history = tmp_path / "t_alibaba_data.csv"
    history.write_text(header + "".join(first[3:] + before + last[2:] + after))
    wh = Warehouse(tmp_path / "wh", tmall.name)
    report = replay(tmall, wh, tmall.history_start, tmall.history_start + timedelta(days=1), bundled=history)
    assert report.rows == len(first) - 3
    assert report.outside == {"2014-04-14": 3, "2014-08-16": 2}
    assert report.outside_for(tmall.history_start) == {"2014-04-14": 3}
    assert report.outside_for(tmall.history_end) == {"2014-08-16": 2}
    assert report.outside_for(date(2014, 6, 1)) == {}
    message = report.summary().splitlines()[-1]
    assert "5 row(s) of the history file lie outside the history [2014-04-15, 2014-08-15]" in message
    assert "3 on 2014-04-14, 2 on 2014-08-16" in message and "conf/sources/tmall_brand.yaml" in message
