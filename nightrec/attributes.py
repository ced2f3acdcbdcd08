"""Item and user attribute snapshots: raw/<source>/_attributes/ -> bronze/item_attributes/, bronze/user_attributes/.

The adapter maps source columns onto the canonical attribute names of nightrec.contract; names it does not map are
null, and a source without attribute files (Tmall: its items are brands) gets empty tables with the same columns,
so the dbt models read one shape for every source. Every delivered row is accounted for: rows = accepted +
rejected, where a row without a key or repeating an earlier row's key is written, with its reason, to
bronze/attribute_quarantine/. Each table is written to a temporary directory and swapped into place.

Attribute files are small snapshots (H&M's full article table is 105k rows), so this runs with pandas on the
driver rather than as a Spark job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.adapters import AttributeFile, SourceAdapter
from nightrec.contract import FALSE_WORDS, ITEM_ATTRIBUTE_SCHEMA, TRUE_WORDS, USER_ATTRIBUTE_SCHEMA
from nightrec.errors import InputError, ReconciliationError
from nightrec.storage import fresh_staging, swap_into_place, write_json_atomic
from nightrec.warehouse import Warehouse

ATTRIBUTE_QUARANTINE_SCHEMA = pa.schema(
    [
        ("entity", pa.string()),  # item | user
        ("source_file", pa.string()),
        ("source_record", pa.int32()),  # 1 = header; a quoted field may span lines, so records, not lines
        ("key", pa.string()),
        ("reason", pa.string()),  # missing_key | duplicate_key (the first row with a key is kept)
    ]
)


def ingest_attributes(adapter: SourceAdapter, warehouse: Warehouse) -> dict[str, Any]:
    """Rewrite both attribute snapshots and their quarantine from the landed attribute files; return the counts."""
    counts: dict[str, Any] = {}
    rejected: list[pd.DataFrame] = []
    for entity, attr, schema, target in (
        ("item", adapter.item_attributes, ITEM_ATTRIBUTE_SCHEMA, warehouse.bronze_item_attributes()),
        ("user", adapter.user_attributes, USER_ATTRIBUTE_SCHEMA, warehouse.bronze_user_attributes()),
    ):
        if attr is None:
            table, bad, rows = schema.empty_table(), pd.DataFrame(), 0
        else:
            table, bad, rows = _canonical(entity, attr, warehouse.raw_attributes() / attr.path.name, schema)
        if rows != table.num_rows + len(bad):
            raise ReconciliationError(
                f"{entity} attributes: {rows} rows != {table.num_rows} kept + {len(bad)} rejected"
            )
        _publish(table, target, {"rows": rows, "kept": table.num_rows, "rejected": len(bad)})
        counts[f"{entity}s"] = {"rows": rows, "kept": table.num_rows, "rejected": len(bad)}
        rejected.append(bad)
    quarantine = pd.concat(rejected, ignore_index=True) if any(len(b) for b in rejected) else None
    q_table = (
        pa.Table.from_pandas(quarantine, schema=ATTRIBUTE_QUARANTINE_SCHEMA, preserve_index=False)
        if quarantine is not None
        else ATTRIBUTE_QUARANTINE_SCHEMA.empty_table()
    )
    _publish(q_table, warehouse.bronze_attribute_quarantine(), {"rows": q_table.num_rows})
    return counts


def _canonical(entity: str, attr: AttributeFile, path: Path, schema: pa.Schema) -> tuple[pa.Table, pd.DataFrame, int]:
    if not path.is_file():
        raise InputError(f"{entity} attribute file {path} has not been landed (run `nightrec land` first)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"Cannot read {entity} attribute file {path}: {exc}") from exc
    needed = [attr.key, *attr.columns.values()]
    missing = [c for c in dict.fromkeys(needed) if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: column(s) {missing} that the adapter maps are not in its header {list(raw.columns)}")
    key = raw[attr.key].str.strip()
    record = pd.Series(range(2, len(raw) + 2), index=raw.index)
    reason = pd.Series(None, index=raw.index, dtype=object)
    reason[key == ""] = "missing_key"
    reason[(key != "") & key.duplicated(keep="first")] = "duplicate_key"
    bad = pd.DataFrame(
        {
            "entity": entity,
            "source_file": path.name,
            "source_record": record[reason.notna()].astype("int32"),
            "key": key[reason.notna()],
            "reason": reason[reason.notna()],
        }
    )
    good = raw[reason.isna()]
    out = pd.DataFrame({schema.names[0]: key[reason.isna()]})
    for name in schema.names[1:]:
        column = attr.columns.get(name)
        values = good[column].str.strip() if column else pd.Series(None, index=good.index, dtype=object)
        if column and name in attr.first_of:
            values = values.str.split(attr.first_of[name], regex=False).str[0].str.strip()
        if column:
            values = values.where(values != "", None)
        if pa.types.is_integer(schema.field(name).type):  # e.g. H&M writes ages as "21.0"
            values = pd.to_numeric(values, errors="coerce").round().astype("Int32")
        elif pa.types.is_boolean(schema.field(name).type) and column:
            words = values.str.lower()
            unknown = values.notna() & ~words.isin(TRUE_WORDS | FALSE_WORDS)
            if unknown.any():
                sample = sorted(set(values[unknown]))[:5]
                raise InputError(f"{path}: column {column!r} ({name}) holds values that are not yes/no: {sample}")
            values = words.map(lambda w: None if w is None else w in TRUE_WORDS).astype(object)
        out[name] = values
    return pa.Table.from_pandas(out, schema=schema, preserve_index=False), bad, len(raw)


def _publish(table: pa.Table, target: Path, manifest: dict[str, Any]) -> None:
    staging = fresh_staging(target)
    staging.mkdir(parents=True)
    pq.write_table(table, staging / "part-00000.parquet")
    write_json_atomic(staging / "_SUCCESS", manifest)
    swap_into_place(staging, target)
