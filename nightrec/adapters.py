"""Source adapters: how one delivered file format maps onto the canonical event contract.

An adapter is a YAML file in ``conf/sources/`` (see ``tmall_brand.yaml`` for the annotated reference). A user's
own export (RetailRocket, REES46, Taobao style) needs only a new YAML file, no code.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from nightrec.config import PROJECT_ROOT, SOURCES_DIR
from nightrec.errors import ConfigError
from nightrec.timeformats import FORMAT_REGEX, TimeSpec

REQUIRED_COLUMNS = ("user_id", "item_id", "event_time")


@dataclass(frozen=True)
class AttributeFile:
    """A file of item or user attributes delivered beside the events (snapshot, not daily).

    :param path: the bundled file.
    :param key: its column holding the item or user id (joined to the events' item_id / user_id).
    :param columns: canonical attribute name (see nightrec.contract) -> source column.
    :param first_of: canonical name -> separator, for multi-valued source columns of which the first value is kept.
    """

    path: Path
    key: str
    columns: dict[str, str] = field(default_factory=dict)
    first_of: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceAdapter:
    """One source, as declared in ``conf/sources/<name>.yaml``.

    :param name: source name; also the ``source`` column of every event.
    :param description: one line for humans.
    :param bundled_events: the bundled history file the replayer turns into daily deliveries; None for a *live feed*
        (no ``bundled`` key), whose days are the files the user lands (`nightrec land --file F --ds D`).
    :param history_start: first day of the history (of a feed: its first delivered day).
    :param history_end: last day of the history, inclusive (the nightly DAG's last day). A live feed may leave it
        out (``open_ended``): then it is the last complete UTC day, yesterday, and the nightly DAG has no end date.
    :param nightly_start: first day the nightly DAG processes (days before it are bootstrapped); defaults to
        history_start.
    :param file_format: ``csv`` or ``parquet``.
    :param file_pattern: glob of the files of one delivery.
    :param delimiter: CSV delimiter.
    :param header: whether a CSV delivery's first line names its columns (``events.header``, default true).
    :param fields: the columns of a CSV without a header, in file order (``events.fields``); ``columns`` maps onto
        these names.
    :param columns: canonical name -> source column (user_id, item_id, event_time; event_type, event_id optional).
    :param event_type_constant: the event type when the source has one behaviour and no type column.
    :param event_type_names: source code -> behaviour word (e.g. Tmall's "1" -> "buy"); unmapped codes are kept.
    :param levels: behaviour word -> ordinal level (1 = weakest); a word not listed is quarantined.
    :param time: how the event time is written.
    :param item_attributes: optional attribute file for items.
    :param user_attributes: optional attribute file for users.
    :param has_availability: whether the source declares item availability (none of the bundled ones does).
    :param credit: attribution that travels with every copy of the data.
    """

    name: str
    description: str
    bundled_events: Path | None
    history_start: date
    history_end: date
    nightly_start: date
    file_format: str
    file_pattern: str
    delimiter: str
    columns: dict[str, str]
    event_type_constant: str | None
    event_type_names: dict[str, str]
    levels: dict[str, int]
    time: TimeSpec
    item_attributes: AttributeFile | None = None
    user_attributes: AttributeFile | None = None
    has_availability: bool = False
    credit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    header: bool = True
    fields: tuple[str, ...] = ()
    open_ended: bool = False

    @property
    def first_data_line(self) -> int:
        """The line number (from 1) of a CSV delivery's first row: 2 below a header, else 1."""
        return 2 if self.header else 1

    def header_of(self, first_record: list[str]) -> tuple[str, ...]:
        """The column names of a CSV delivery whose first record is ``first_record``."""
        return tuple(first_record) if self.header else self.fields

    @property
    def is_feed(self) -> bool:
        """A live feed: no bundled history; the nightly `land` task checks the deliveries instead of replaying."""
        return self.bundled_events is None

    @property
    def max_level(self) -> int:
        return max(self.levels.values())

    @property
    def source_columns(self) -> list[str]:
        """The source columns a delivered file must have (checked against its header)."""
        return list(dict.fromkeys(self.columns.values()))

    def first_night(self, setting: str = "") -> date:
        """The nightly DAG's first night (its start date): ``airflow.first_night`` where set, else ``nightly_start``.

        :param setting: a date the settings check has already parsed (nightrec/config.py).
        :raises ConfigError: it lies before ``nightly_start`` (those days are the bootstrap's) or after the history's
            last day."""
        if not setting:
            return self.nightly_start
        night = date.fromisoformat(setting)
        if night < self.nightly_start or (not self.open_ended and night > self.history_end):
            raise ConfigError(
                f"airflow.first_night {night} must lie between {self.name}'s nightly_start ({self.nightly_start}) "
                f"and the history's last day ({self.history_end})"
            )
        return night

    def history_days(self) -> list[date]:
        return days_between(self.history_start, self.history_end + timedelta(days=1))

    def matches(self, filename: str) -> bool:
        return fnmatch.fnmatch(filename, self.file_pattern)

    def level_of(self, raw_type: str | None) -> tuple[str | None, int | None]:
        """Map a raw event-type value to (behaviour word, level); level is None when unknown."""
        if self.event_type_constant is not None:
            word: str | None = self.event_type_constant
        elif raw_type is None:
            return None, None
        else:
            word = self.event_type_names.get(raw_type, raw_type)
        return word, self.levels.get(word) if word is not None else None


def days_between(start: date, end: date) -> list[date]:
    """The days of the half-open range [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


_ALLOWED = {
    "name",
    "description",
    "bundled",
    "history",
    "nightly_start",
    "events",
    "attributes",
    "has_availability",
    "credit",
}
_EVENT_KEYS = {
    "format",
    "file_pattern",
    "delimiter",
    "columns",
    "event_type_constant",
    "event_type_names",
    "levels",
    "time",
    "header",
    "fields",
}


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] in (None, ""):
        raise ConfigError(f"Missing '{key}' in {where}")
    return d[key]


def last_complete_day() -> date:
    """Yesterday in UTC: the last day whose delivery can be complete, where an open-ended feed's history ends."""
    return datetime.now(UTC).date() - timedelta(days=1)


def load_adapter(name: str, sources_dir: Path | None = None) -> SourceAdapter:
    """Read and validate ``conf/sources/<name>.yaml`` (or ``<sources_dir>/<name>.yaml``).

    :raises ConfigError: the file is missing or any field is invalid; the message names the field and file.
    """
    sources_dir = sources_dir or SOURCES_DIR
    path = sources_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in sources_dir.glob("*.yaml"))
        raise ConfigError(f"Could not find source adapter '{name}' at {path}; known: {known}")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    unknown = set(raw) - _ALLOWED
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in {where}; allowed: {sorted(_ALLOWED)}")
    if raw.get("name") != name:
        raise ConfigError(f"'name' in {where} must be '{name}' (the file name), got {raw.get('name')!r}")
    ev = _req(raw, "events", where)
    unknown = set(ev) - _EVENT_KEYS
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} under 'events' in {where}")

    columns = {str(k): str(v) for k, v in _req(ev, "columns", where).items()}
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ConfigError(f"events.columns in {where} must map '{col}' to a source column")
    unknown_cols = set(columns) - {*REQUIRED_COLUMNS, "event_type", "event_id"}
    if unknown_cols:
        raise ConfigError(f"events.columns in {where} has unknown canonical name(s) {sorted(unknown_cols)}")
    constant = ev.get("event_type_constant")
    if (constant is None) == ("event_type" not in columns):
        raise ConfigError(f"{where}: give exactly one of events.columns.event_type or events.event_type_constant")

    levels = {str(k): int(v) for k, v in _req(ev, "levels", where).items()}
    if sorted(set(levels.values())) != list(range(1, max(levels.values()) + 1)):
        raise ConfigError(f"events.levels in {where} must use every level 1..max exactly (got {levels})")
    names = {str(k): str(v) for k, v in (ev.get("event_type_names") or {}).items()}
    missing = sorted({w for w in names.values() if w not in levels} | ({constant} - set(levels) if constant else set()))
    if missing:
        raise ConfigError(f"Behaviour(s) {missing} in {where} have no entry in events.levels")

    t = _req(ev, "time", where)
    fmt = _req(t, "format", f"events.time of {where}")
    if fmt not in FORMAT_REGEX:
        raise ConfigError(f"events.time.format {fmt!r} in {where} is not one of {sorted(FORMAT_REGEX)}")
    if fmt == "month-day" and not t.get("year"):
        raise ConfigError(f"events.time.year is required for format month-day in {where}")
    spec = TimeSpec(format=fmt, year=t.get("year"), timezone=str(t.get("timezone") or "UTC"))

    hist = _req(raw, "history", where)
    open_ended = hist.get("end") is None
    if open_ended and raw.get("bundled") is not None:
        raise ConfigError(
            f"history.end is required in {where}: a bundled history is replayed up to it. Only a live feed (no "
            "'bundled') may leave it out, and then runs up to the last complete UTC day."
        )
    try:
        h_start = date.fromisoformat(str(_req(hist, "start", where)))
        h_end = last_complete_day() if open_ended else date.fromisoformat(str(hist["end"]))
        nightly = date.fromisoformat(str(raw.get("nightly_start") or h_start))
    except ValueError as exc:
        raise ConfigError(f"Dates in {where} must be YYYY-MM-DD: {exc}") from exc
    if not h_start <= nightly <= h_end:
        raise ConfigError(f"nightly_start {nightly} in {where} must lie inside history [{h_start}, {h_end}]")

    fmt_files = str(ev.get("format") or "csv")
    if fmt_files not in {"csv", "parquet"}:
        raise ConfigError(f"events.format in {where} must be csv or parquet, got {fmt_files!r}")
    has_header = ev.get("header", True)
    if not isinstance(has_header, bool):
        raise ConfigError(f"events.header in {where} must be true or false, got {has_header!r}")
    fields = tuple(str(f) for f in (ev.get("fields") or ()))
    if not has_header:
        if fmt_files != "csv" or not fields:
            raise ConfigError(
                f"{where}: events.header: false needs a CSV source and events.fields, its columns in file order"
            )
        unnamed = sorted(set(columns.values()) - set(fields))
        if unnamed:
            raise ConfigError(f"events.columns in {where} maps {unnamed}, which events.fields does not name")
    elif fields:
        raise ConfigError(f"events.fields in {where} is only for a CSV without a header (events.header: false)")

    bundled = raw.get("bundled")  # absent: a live feed
    if bundled is not None and not (isinstance(bundled, dict) and bundled.get("events")):
        raise ConfigError(f"'bundled' in {where} must give 'events', the history file (or leave 'bundled' out: a feed)")
    attrs = raw.get("attributes") or {}

    def attr(kind: str) -> AttributeFile | None:
        from nightrec.contract import ITEM_ATTRIBUTE_SCHEMA, USER_ATTRIBUTE_SCHEMA

        a = attrs.get(kind)
        if not a:
            return None
        unknown_keys = set(a) - {"file", "key", "columns", "first_of"}
        if unknown_keys:
            raise ConfigError(f"Unknown key(s) {sorted(unknown_keys)} under attributes.{kind} in {where}")
        schema = ITEM_ATTRIBUTE_SCHEMA if kind == "items" else USER_ATTRIBUTE_SCHEMA
        allowed = set(schema.names[1:])
        cols = {str(k): str(v) for k, v in (a.get("columns") or {}).items()}
        first_of = {str(k): str(v) for k, v in (a.get("first_of") or {}).items()}
        bad = (set(cols) | set(first_of)) - allowed
        if bad:
            raise ConfigError(
                f"attributes.{kind} in {where} maps unknown attribute(s) {sorted(bad)}; known: {sorted(allowed)}"
            )
        return AttributeFile(
            path=PROJECT_ROOT / _req(a, "file", where),
            key=str(_req(a, "key", where)),
            columns=cols,
            first_of=first_of,
        )

    adapter = SourceAdapter(
        name=name,
        description=str(raw.get("description") or ""),
        bundled_events=PROJECT_ROOT / bundled["events"] if bundled else None,
        history_start=h_start,
        history_end=h_end,
        nightly_start=nightly,
        file_format=fmt_files,
        file_pattern=str(ev.get("file_pattern") or ("*.csv" if fmt_files == "csv" else "*.parquet")),
        delimiter=str(ev.get("delimiter") or ","),
        columns=columns,
        event_type_constant=str(constant) if constant is not None else None,
        event_type_names=names,
        levels=levels,
        time=spec,
        item_attributes=attr("items"),
        user_attributes=attr("users"),
        has_availability=bool(raw.get("has_availability", False)),
        credit=str(raw.get("credit") or ""),
        header=has_header,
        fields=fields,
        open_ended=open_ended,
    )
    if adapter.has_availability and not (adapter.item_attributes and "available" in adapter.item_attributes.columns):
        raise ConfigError(
            f"{where} declares has_availability but attributes.items.columns maps no 'available' column "
            "(the item file's yes/no availability)"
        )
    return adapter
