"""The run context: what one task or command works on, built once and passed down.

Every Airflow task and every CLI command needs the same four things: the settings, the source's adapter, the
source's warehouse and the run's days. The days arrive as a half-open range [start, end) from the DAG (with the
nightly lookback) or from flags, and only the part the source's history covers can hold data, so the range is
clamped here, in one place, instead of in each task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from nightrec.adapters import SourceAdapter, days_between, load_adapter
from nightrec.config import Settings
from nightrec.warehouse import Warehouse


@dataclass(frozen=True)
class RunContext:
    """One run's settings, adapter and warehouse, and its days.

    :param start: the first day of the run inside the history.
    :param end: the day after the run's last day inside the history (``days`` is [start, end)).
    :param requested_end: the end the caller asked for, before clamping (a run past the history is skipped).
    """

    settings: Settings
    adapter: SourceAdapter
    warehouse: Warehouse
    start: date
    end: date
    requested_end: date

    @classmethod
    def of(cls, settings: Settings, start: date | str | None = None, end: date | str | None = None) -> RunContext:
        """The context of the days [start, end) of the configured source (default: its whole history)."""
        adapter = load_adapter(settings.source)
        after_history = adapter.history_end + timedelta(days=1)
        first = _day(start) or adapter.history_start
        stop = _day(end) or after_history
        return cls(
            settings=settings,
            adapter=adapter,
            warehouse=Warehouse(settings.warehouse_root, adapter.name),
            start=max(first, adapter.history_start),
            end=min(stop, after_history),
            requested_end=stop,
        )

    @property
    def days(self) -> list[date]:
        """The run's days that the history covers, in order."""
        return days_between(self.start, self.end)

    @property
    def last_day(self) -> date | None:
        """The run's last day inside the history (what the night trains and publishes for), if any."""
        days = self.days
        return days[-1] if days else None

    @property
    def past_history(self) -> date | None:
        """The requested last day when it lies after the source's last delivered day, else None."""
        last = self.requested_end - timedelta(days=1)
        return last if last > self.adapter.history_end else None


def _day(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)
