"""The canonical event contract (docs/architecture.md, "Event contract") and the quarantine contract, engine-neutral.

bronze/events/ds=D/ holds EVENT_COLUMNS; bronze/quarantine/ds=D/ holds QUARANTINE_COLUMNS. Types are given as
Arrow types; Spark writes the same Parquet types (timestamps in microseconds, UTC).
"""

from __future__ import annotations

from enum import Enum

import pyarrow as pa

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),  # the source's own id, else hash(source, ds, file, line)
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),  # the source's behaviour word (click, buy, purchase, 4.5 ...)
        ("level", pa.int32()),  # ordinal rank of the behaviour, 1 = weakest
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("ds", pa.date32()),  # the UTC day of event_ts (= the delivery day)
        ("source", pa.string()),
        ("source_file", pa.string()),  # lineage: delivered file name ...
        ("source_line", pa.int32()),  # ... and its line (1 = header)
    ]
)
EVENT_COLUMNS = EVENT_SCHEMA.names

QUARANTINE_SCHEMA = pa.schema(
    [
        ("ds", pa.date32()),
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int32()),
        ("raw_line", pa.string()),  # the row exactly as delivered
        ("reason", pa.string()),  # a QuarantineReason value
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
    ]
)
QUARANTINE_COLUMNS = QUARANTINE_SCHEMA.names


class QuarantineReason(str, Enum):
    """Why a raw row was rejected. The first that applies, in this order, is recorded."""

    BLANK_LINE = "blank_line"
    INVALID_ENCODING = "invalid_encoding"  # bytes that are not UTF-8, in any column (U+FFFD in their place in raw_line)
    MALFORMED_ROW = "malformed_row"  # wrong number of fields or broken quoting
    MISSING_EVENT_ID = "missing_event_id"  # only for sources that deliver their own ids
    MISSING_USER_ID = "missing_user_id"
    MISSING_ITEM_ID = "missing_item_id"
    MISSING_EVENT_TIME = "missing_event_time"
    UNPARSEABLE_EVENT_TIME = "unparseable_event_time"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # a behaviour with no level in the adapter
    EVENT_TIME_OUTSIDE_DELIVERY_DAY = "event_time_outside_delivery_day"
    DUPLICATE_EVENT_ID = "duplicate_event_id"  # a source id seen before (first occurrence kept)


# Attribute snapshots (docs/architecture.md, "Items without attributes"): a source maps its own columns onto these names
# in its adapter; a name it does not map is null. bronze/item_attributes/ and bronze/user_attributes/ are rewritten
# whole from the latest delivered attribute file (they are snapshots, not daily partitions).
ITEM_ATTRIBUTE_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("item_name", pa.string()),
        ("category", pa.string()),  # the broadest grouping (H&M product group, MovieLens first genre)
        ("subcategory", pa.string()),
        ("colour", pa.string()),
        ("tags", pa.string()),  # every value of a multi-valued attribute, "|"-separated (MovieLens genres)
        ("available", pa.bool_()),  # only where the adapter declares has_availability; null = not declared
    ]
)
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})
USER_ATTRIBUTE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("age", pa.int32()),
        ("membership", pa.string()),  # loyalty / membership status
    ]
)
