import pandas as pd
import pytest

from nightrec.timeformats import TimeSpec, parse_times

# (spec, raw values, the UTC time each is, None where invalid): the parsers of both engines are held to these
CASES = [
    (
        TimeSpec("month-day", year=2014),
        ["4-15", "8-5", "13-45", "2-30", "", "4/15"],
        ["2014-04-15", "2014-08-05", None, None, None, None],
    ),
    (TimeSpec("iso-date"), ["2020-09-22", "2020-9-22", "2020-02-30"], ["2020-09-22", None, None]),
    (TimeSpec("epoch-seconds"), ["964982703", "1.5", "abc"], ["2000-07-30 18:45:03", None, None]),
    (TimeSpec("epoch-millis"), ["1433221332117"], ["2015-06-02 05:02:12.117"]),
    (  # a value without a zone is in the adapter's; one with a zone is in its own (#24: "+02:00" was rejected)
        TimeSpec("iso-datetime", timezone="Asia/Shanghai"),
        ["2019-10-01 08:00:00", "2019-10-01T08:00:00 UTC", "2019-10-01T08:00:00+02:00", "2019-10-01 08:00:00Z"],
        ["2019-10-01 00:00:00", "2019-10-01 08:00:00", "2019-10-01 06:00:00", "2019-10-01 08:00:00"],
    ),
    (
        TimeSpec("iso-datetime"),
        ["2019-10-01 00:00:04 UTC", "2019-10-01", "2019-10-01 00:30:00-0500", "2019-10-01 00:00:00+2:00"],
        ["2019-10-01 00:00:04", None, "2019-10-01 05:30:00", None],
    ),
    (  # a local time that does not exist (the spring-forward hour) is invalid, not guessed
        TimeSpec("iso-datetime", timezone="Europe/Berlin"),
        ["2019-03-31 02:30:00", "2019-03-31 03:30:00", "2019-03-31 02:30:00+01:00"],
        [None, "2019-03-31 01:30:00", "2019-03-31 01:30:00"],
    ),
]


@pytest.mark.parametrize(("spec", "values", "expected"), CASES)
def test_parse_times_returns_utc_or_nat(spec, values, expected):
    got = parse_times(pd.Series(values, dtype="string"), spec)
    want = pd.Series([pd.Timestamp(e, tz="UTC") if e else pd.NaT for e in expected], dtype="datetime64[ns, UTC]")
    pd.testing.assert_series_equal(got.reset_index(drop=True), want, check_names=False)


def test_day_grain_formats():
    assert TimeSpec("month-day", year=2014).day_grain
    assert TimeSpec("iso-date").day_grain
    assert not TimeSpec("epoch-seconds").day_grain
