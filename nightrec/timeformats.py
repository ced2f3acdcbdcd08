"""Time formats a source adapter can declare, and their pure-Python (pandas) parser.

The same formats are parsed on Spark by ``spark_jobs/common.py``; both sides share the regular expressions
below, so a value is either valid on both engines or on neither (a test checks them against the real files).
Every parsed time is UTC. A day-grain value becomes D 00:00 UTC (docs/architecture.md, "Landing and history").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported lazily: DAG files import this module at parse time
    import pandas as pd

# Anchored patterns a raw value must match before it is parsed at all.
FORMAT_REGEX: dict[str, str] = {
    # "M-D" with the year implied by the adapter (Tmall's 2014 log: "4-15").
    "month-day": r"^[0-9]{1,2}-[0-9]{1,2}$",
    "iso-date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    # "YYYY-MM-DD HH:MM:SS" (or with a T), optionally followed by its zone: " UTC" as REES46 exports write it, "Z",
    # or an offset ("+02:00", "-0500"); a value without one is in the adapter's time.timezone.
    "iso-datetime": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}( UTC|Z|[+-][0-9]{2}:?[0-9]{2})?$",
    "epoch-seconds": r"^-?[0-9]{1,12}$",
    "epoch-millis": r"^-?[0-9]{1,15}$",
}
DAY_GRAIN_FORMATS = {"month-day", "iso-date"}
# the zone written at the end of an iso-datetime value, if any
ZONE_SUFFIX = r"( UTC|Z|[+-][0-9]{2}:?[0-9]{2})$"


@dataclass(frozen=True)
class TimeSpec:
    """How one source writes its event time.

    :param format: one of FORMAT_REGEX's keys.
    :param year: the implied year for ``month-day``.
    :param timezone: the zone of ``iso-datetime`` values written without one (a value with " UTC", "Z" or an offset
        is read in its own zone); day-grain and epoch values are UTC. Every time is stored in UTC, and its day
        partition is its UTC day.
    """

    format: str
    year: int | None = None
    timezone: str = "UTC"

    @property
    def day_grain(self) -> bool:
        """True when the source records only the day (several actions share one timestamp)."""
        return self.format in DAY_GRAIN_FORMATS


def parse_times(values: pd.Series, spec: TimeSpec) -> pd.Series:
    """Parse raw strings to UTC timestamps; anything invalid becomes NaT (never an exception)."""
    import pandas as pd

    text = values.astype("string").fillna("")
    valid = text.str.match(FORMAT_REGEX[spec.format]).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if not valid.any():
        return out
    good = text[valid]
    if spec.format == "month-day":
        parsed = pd.to_datetime(f"{spec.year}-" + good, format="%Y-%m-%d", errors="coerce", utc=True)
    elif spec.format == "iso-date":
        parsed = pd.to_datetime(good, format="%Y-%m-%d", errors="coerce", utc=True)
    elif spec.format == "iso-datetime":
        clock = good.str.slice(0, 19).str.replace("T", " ", regex=False)
        zone = good.str.slice(19)
        parsed = pd.Series(pd.NaT, index=good.index, dtype="datetime64[ns, UTC]")
        naive = zone == ""
        local = pd.to_datetime(clock[naive], format="%Y-%m-%d %H:%M:%S", errors="coerce")
        parsed[naive] = local.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        offset = (
            zone[~naive]
            .replace({" UTC": "+00:00", "Z": "+00:00"})
            .str.replace(r"^([+-][0-9]{2})([0-9]{2})$", r"\1:\2", regex=True)
        )
        parsed[~naive] = pd.to_datetime(clock[~naive] + offset, format="%Y-%m-%d %H:%M:%S%z", errors="coerce", utc=True)
    elif spec.format == "epoch-seconds":
        parsed = pd.to_datetime(good.astype("int64"), unit="s", utc=True)
    else:  # epoch-millis
        parsed = pd.to_datetime(good.astype("int64"), unit="ms", utc=True)
    out.loc[valid] = parsed
    return out
