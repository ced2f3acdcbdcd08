"""The expectations at each boundary: raw landing, bronze, marts (see the package docstring for the policy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date

import pandas as pd

from nightrec.adapters import SourceAdapter
from nightrec.config import Settings
from nightrec.contract import QuarantineReason
from nightrec.quality.frames import RAW_LOCATION, raw_frame, read_partitions
from nightrec.quality.gx_run import WARNING, Check, TableSuite
from nightrec.quality.mart_reader import DAILY_MARTS, DIMENSIONS, bronze_totals, read_marts
from nightrec.run_manifest import read_run_manifest
from nightrec.timeformats import FORMAT_REGEX
from nightrec.warehouse import Warehouse


def _span(days: list[date]) -> str:
    return f"{days[0]}..{days[-1]}" if days else "no days"


def allowed_event_types(adapter: SourceAdapter) -> list[str]:
    """Raw event-type values that map to a level (a code through event_type_names, or the word itself)."""
    names = adapter.event_type_names
    codes = {code for code, word in names.items() if word in adapter.levels}
    words = {word for word in adapter.levels if word not in names}
    return sorted(codes | words)


def raw_suites(settings: Settings, adapter: SourceAdapter, warehouse: Warehouse, days: list[date]) -> list[TableSuite]:
    """Raw deliveries before ingest. Row-level checks allow ``max_bad_row_fraction`` bad rows (quarantined)."""
    import great_expectations.expectations as gxe

    frame = raw_frame(adapter, warehouse, days)
    mostly = 1.0 - settings.quality.max_bad_row_fraction
    cols = adapter.columns
    checks = [
        Check(
            gxe.ExpectTableColumnsToMatchSet(column_set=adapter.source_columns, exact_match=False),
            why="delivered files have the columns the adapter maps",
        ),
        Check(gxe.ExpectColumnValuesToBeNull(column="_missing_columns"), why="every file has every mapped column"),
        Check(
            gxe.ExpectColumnPairValuesToBeEqual(column_A="_n_fields", column_B="_header_fields", mostly=mostly),
            why="each record has as many fields as its file's header",
        ),
        Check(
            gxe.ExpectColumnValuesToBeInSet(column="_valid_utf8", value_set=[True], mostly=mostly),
            why="each line is UTF-8 text",
        ),
        *[
            Check(gxe.ExpectColumnValuesToNotBeNull(column=cols[key], mostly=mostly))
            for key in ("user_id", "item_id", "event_time")
        ],
    ]
    if adapter.file_format == "csv":
        regex = FORMAT_REGEX[adapter.time.format]
        checks.append(
            Check(
                gxe.ExpectColumnValuesToMatchRegex(column=cols["event_time"], regex=regex, mostly=mostly),
                why=f"event time written as {adapter.time.format}",
            )
        )
    if adapter.event_type_constant is None:
        allowed = allowed_event_types(adapter)
        checks.append(
            Check(
                gxe.ExpectColumnValuesToBeInSet(column=cols["event_type"], value_set=allowed, mostly=mostly),
                why="event type known to the adapter",
            )
        )
    checks += [
        Check(
            gxe.ExpectColumnValuesToBeInSet(column="_days_off", value_set=[0.0], mostly=mostly),
            why="event time inside the delivery day (_days_off = event day - delivery day)",
        ),
        # a day whose delivery holds no row at all is legal (a header-only file) but worth a look
        Check(
            gxe.ExpectColumnDistinctValuesToContainSet(column="_ds", value_set=[d.isoformat() for d in days]),
            WARNING,
            why="every day of the run delivered rows",
        ),
    ]
    show = [*RAW_LOCATION, *adapter.source_columns]
    return [TableSuite("raw.events", f"raw/{adapter.name} deliveries {_span(days)}", frame, checks, show)]


def bronze_suites(
    settings: Settings, adapter: SourceAdapter, warehouse: Warehouse, days: list[date]
) -> list[TableSuite]:
    """Bronze events and quarantine of the run's days, after ingest (the attribute snapshots: ``snapshot_suites``)."""
    import great_expectations.expectations as gxe

    events = read_partitions(
        warehouse.bronze_events(),
        days,
        ["event_id", "user_id", "item_id", "event_type", "level", "event_ts", "source_file", "source_line"],
    )
    event_day = pd.to_datetime(events["event_ts"], utc=True).dt.tz_localize(None).dt.normalize()
    events["_days_off"] = (event_day - pd.to_datetime(events["ds"])).dt.days.astype("float64")
    quarantine = read_partitions(warehouse.bronze_quarantine(), days, ["source_file", "source_line", "reason"])
    expected = _ingest_counts(warehouse, days)
    event_checks = [
        Check(gxe.ExpectColumnValuesToBeUnique(column="event_id")),
        *[
            Check(gxe.ExpectColumnValuesToNotBeNull(column=c))
            for c in ("event_id", "user_id", "item_id", "event_type", "level", "event_ts", "ds")
        ],
        Check(gxe.ExpectColumnValuesToBeBetween(column="level", min_value=1, max_value=adapter.max_level)),
        Check(gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=sorted(adapter.levels))),
        Check(gxe.ExpectColumnValuesToBeInSet(column="_days_off", value_set=[0.0]), why="event_ts inside its ds"),
    ]
    quarantine_checks = [
        Check(gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=[r.value for r in QuarantineReason])),
    ]
    if expected is not None:  # the counts the ingest job reconciled against the raw bytes
        why = "rows equal the counts ingest reconciled with the raw bytes"
        event_checks.append(Check(gxe.ExpectTableRowCountToEqual(value=expected["bronze_rows"]), why=why))
        quarantine_checks.append(Check(gxe.ExpectTableRowCountToEqual(value=expected["quarantined_rows"]), why=why))
    show = ["ds", "source_file", "source_line"]
    return [
        TableSuite("bronze.events", f"bronze/events {_span(days)}", events, event_checks, show),
        TableSuite("bronze.quarantine", f"bronze/quarantine {_span(days)}", quarantine, quarantine_checks, show),
    ]


def snapshot_suites(settings: Settings, adapter: SourceAdapter, warehouse: Warehouse) -> list[TableSuite]:
    """The attribute snapshots: one row per key (ingest quarantines the rest)."""
    import great_expectations.expectations as gxe
    import pyarrow.parquet as pq

    suites = []
    for name, root, key in (
        ("bronze.item_attributes", warehouse.bronze_item_attributes(), "item_id"),
        ("bronze.user_attributes", warehouse.bronze_user_attributes(), "user_id"),
    ):
        if not root.is_dir():  # a warehouse from before attribute snapshots existed
            continue
        frame = pq.read_table(root).to_pandas()
        checks = [
            Check(gxe.ExpectColumnValuesToNotBeNull(column=key)),
            Check(gxe.ExpectColumnValuesToBeUnique(column=key)),
        ]
        if "age" in frame.columns:
            checks.append(Check(gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=130), WARNING))
        suites.append(TableSuite(name, f"{name.replace('.', '/')} (snapshot)", frame, checks, [key]))
    return suites


def _ingest_counts(warehouse: Warehouse, days: list[date]) -> dict[str, int] | None:
    totals = {"bronze_rows": 0, "quarantined_rows": 0}
    for ds in days:
        doc = read_run_manifest(warehouse, ds)
        stage = (doc or {}).get("stages", {}).get("ingest_events")
        if stage is None:
            return None
        for key in totals:
            totals[key] += int(stage[key])
    return totals


def _not_null(*columns: str) -> list[Check]:
    import great_expectations.expectations as gxe

    return [Check(gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in columns]


def _sums_equal(column: str, value: int) -> Check:
    import great_expectations.expectations as gxe

    why = "reconciles with bronze"
    return Check(gxe.ExpectColumnSumToBeBetween(column=column, min_value=value, max_value=value), why=why)


def marts_suites(
    settings: Settings, adapter: SourceAdapter, warehouse: Warehouse, days: list[date]
) -> list[TableSuite]:
    """The daily dbt marts on ``days``, reconciled with bronze's rows of those days (the dimensions, which have no
    days: ``dimension_suites``). Every key of a daily mart includes ``ds``, so checking a run's days a chunk at a time
    finds what checking them at once would."""
    import great_expectations.expectations as gxe

    marts = read_marts(settings, days, DAILY_MARTS)
    run_bronze = bronze_totals(warehouse, adapter, days)
    top = adapter.max_level
    span = _span(days)

    def shares(frame: pd.DataFrame, prefix: str) -> list[Check]:
        return [
            Check(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1))
            for c in frame.columns
            if c.startswith(prefix)
        ]

    fct = marts["fct_interactions"]
    suites = [
        TableSuite(
            "marts.fct_interactions",
            f"marts.fct_interactions {span}",
            fct,
            [
                *_not_null("user_id", "item_id", "ds"),
                Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "ds"])),
                Check(gxe.ExpectColumnValuesToBeBetween(column="max_level_reached", min_value=1, max_value=top)),
                # every bronze event of the run's days is counted once, at its own level
                _sums_equal("n_events", run_bronze["events"]),
                *[_sums_equal(f"n_level_{lv}", run_bronze[f"level_{lv}"]) for lv in range(1, top + 1)],
            ],
        ),
        TableSuite(
            "marts.training_examples",
            f"marts.training_examples {span}",
            marts["training_examples"],
            [
                *_not_null("user_id", "item_id", "ds", "example_ts", "label"),
                Check(gxe.ExpectTableRowCountToEqual(value=len(fct)), why="one example per fct_interactions row"),
                Check(gxe.ExpectColumnValuesToBeBetween(column="label", min_value=1, max_value=top)),
            ],
        ),
        TableSuite(
            "marts.user_features",
            f"marts.user_features {span}",
            marts["user_features"],
            [
                *_not_null("user_id", "ds", "feature_ts", "recency_days"),
                Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "ds"])),
                Check(gxe.ExpectColumnValuesToBeBetween(column="recency_days", min_value=0, max_value=89)),
                *shares(marts["user_features"], "rate_"),
            ],
        ),
        TableSuite(
            "marts.item_features",
            f"marts.item_features {span}",
            marts["item_features"],
            [
                *_not_null("item_id", "ds", "feature_ts"),
                Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["item_id", "ds"])),
                *shares(marts["item_features"], "conversion_"),
            ],
        ),
        TableSuite(
            "marts.user_item_features",
            f"marts.user_item_features {span}",
            marts["user_item_features"],
            [
                *_not_null("user_id", "item_id", "ds", "n_days_total", "n_events_total", "first_ds", "interest_14d"),
                Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "ds"])),
                Check(gxe.ExpectTableRowCountToEqual(value=len(fct)), why="one pair state per fct_interactions row"),
                _sums_equal("n_events", run_bronze["events"]),
                Check(gxe.ExpectColumnValuesToBeBetween(column="n_days_total", min_value=1)),
                Check(
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                        column_A="n_events_total", column_B="n_events", or_equal=True
                    ),
                    why="the pair's events through D include D's",
                ),
            ],
        ),
        TableSuite(
            "marts.user_sequences",
            f"marts.user_sequences {span}",
            marts["user_sequences"],
            [
                *_not_null("user_id", "ds", "feature_ts", "seq_item_ids", "seq_levels"),
                Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "ds"])),
                Check(
                    gxe.ExpectTableRowCountToEqual(value=run_bronze["user_days"]),
                    why="one sequence row per user active on a day (bronze)",
                ),
            ],
        ),
    ]
    return _shown(suites)


def dimension_suites(settings: Settings, adapter: SourceAdapter, warehouse: Warehouse) -> list[TableSuite]:
    """The dimension marts, whole: every bronze user and item once, their events adding up to all of bronze."""
    import great_expectations.expectations as gxe

    marts = read_marts(settings, [], DIMENSIONS)
    all_bronze = bronze_totals(warehouse, adapter, None)

    suites = []
    for table, key, total in (("dim_users", "user_id", "users"), ("dim_items", "item_id", "items")):
        checks = [
            *_not_null(key),
            Check(gxe.ExpectColumnValuesToBeUnique(column=key)),
            Check(gxe.ExpectTableRowCountToEqual(value=all_bronze[total]), why=f"every bronze {key[:-3]}, once"),
            _sums_equal("n_events", all_bronze["events"]),
        ]
        suites.append(TableSuite(f"marts.{table}", f"marts.{table} (all {total})", marts[table], checks))
    return _shown(suites)


def _shown(suites: list[TableSuite]) -> list[TableSuite]:
    for suite in suites:
        suite.show = [c for c in ("user_id", "item_id", "ds") if c in suite.frame.columns]
    return suites


SuiteBuilder = Callable[[Settings, SourceAdapter, Warehouse, list[date]], list[TableSuite]]
SUITES: dict[str, SuiteBuilder] = {"raw": raw_suites, "bronze": bronze_suites, "marts": marts_suites}
# What a boundary checks once per run, with its first chunk of days: the tables that have no days.
ONCE: dict[str, Callable[[Settings, SourceAdapter, Warehouse], list[TableSuite]]] = {
    "bronze": snapshot_suites,
    "marts": dimension_suites,
}


def suites_in_chunks(
    boundary: str, settings: Settings, adapter: SourceAdapter, warehouse: Warehouse, days: list[date]
) -> Iterator[tuple[list[date], list[TableSuite]]]:
    """A boundary's suites, ``quality.check_chunk_days`` days at a time, each chunk's frames read only when its turn
    comes (so memory is one chunk's, decisions 39 and 41); the tables without days (attribute snapshots, the marts'
    dimensions) once, with the first chunk."""
    size = settings.quality.check_chunk_days
    for start in range(0, max(len(days), 1), size):
        chunk = days[start : start + size]
        suites = SUITES[boundary](settings, adapter, warehouse, chunk)
        if start == 0 and boundary in ONCE:
            suites += ONCE[boundary](settings, adapter, warehouse)
        yield chunk, suites
        del suites  # validated by now: its frames go before the next chunk's are read
