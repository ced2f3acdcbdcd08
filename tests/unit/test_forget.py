"""Forgetting a user (nightrec/forget.py) on real Tmall and H&M rows: the files keep every other byte, landing keeps
them out afterwards, the counts still reconcile, and a second request removes nothing."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec import forget
from nightrec.adapters import load_adapter
from nightrec.deliveries import inventory
from nightrec.errors import InputError
from nightrec.forget import Forgotten, filter_attribute_file, filter_event_file, filter_table
from nightrec.landing import land_file, replay
from nightrec.run_manifest import reconciles, update_run_manifest
from nightrec.warehouse import Warehouse
from tests.conftest import make_settings

DAYS = [date(2014, 5, 22), date(2014, 5, 23)]


def _day_lines(tmall, n: int = 400) -> list[str]:
    lines = tmall.bundled_events.read_text().splitlines(keepends=True)
    return lines[: n + 1]


def _busiest_user(lines: list[str]) -> str:
    return Counter(line.split(",")[0] for line in lines[1:]).most_common(1)[0][0]


def test_a_delivered_csv_loses_exactly_the_users_records_and_keeps_every_other_byte(tmall):
    lines = _day_lines(tmall)
    user = _busiest_user(lines)
    # as users deliver: a record with the id padded (ingest trims it), CRLF endings, a byte that is not UTF-8
    lines[5] = f" {user} ," + lines[5].split(",", 1)[1]
    lines[6] = lines[6].rstrip("\n") + "\r\n"
    content = "".join(lines).encode() + b"99\xff,1,0,5-22\n"
    theirs = [i for i, line in enumerate(lines) if i and line.split(",")[0].strip() == user]

    out = filter_event_file(content, tmall, Forgotten.ids(tmall.name, [user]))

    assert out.removed == len(theirs) > 2 and out.users == {user}
    kept = [line for i, line in enumerate(lines) if i not in theirs]
    assert out.content == "".join(kept).encode() + b"99\xff,1,0,5-22\n"
    nobody = filter_event_file(content, tmall, Forgotten.ids(tmall.name, ["no-such-user"]))
    assert nobody.content is content and nobody.removed == 0


def test_a_headerless_delivery_and_a_parquet_delivery_lose_the_users_rows(tmall):
    lines = _day_lines(tmall)
    user = _busiest_user(lines)
    names = tuple(lines[0].strip().split(","))
    headerless = replace(tmall, header=False, fields=names)
    body = "".join(lines[1:]).encode()
    out = filter_event_file(body, headerless, Forgotten.ids(tmall.name, [user]))
    assert out.removed == sum(line.startswith(f"{user},") for line in lines[1:]) > 0
    assert out.content.decode().splitlines() == [x.rstrip("\n") for x in lines[1:] if not x.startswith(f"{user},")]

    table = pa.table({n: [line.strip().split(",")[i] for line in lines[1:]] for i, n in enumerate(names)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    parquet = replace(tmall, file_format="parquet", file_pattern="*.parquet")
    out = filter_event_file(sink.getvalue(), parquet, Forgotten.ids(tmall.name, [user]))
    left = pq.read_table(io.BytesIO(out.content))
    assert left.num_rows == table.num_rows - out.removed and user not in left.column(names[0]).to_pylist()


def test_a_user_attribute_snapshot_loses_the_users_record_even_where_a_quoted_field_spans_lines():
    hm = load_adapter("hm")
    attr = hm.user_attributes
    assert attr is not None
    with attr.path.open() as fh:
        real = [next(fh) for _ in range(30)]
    header = real[0].rstrip("\n").split(",")
    key = header.index(attr.key)
    first, second = real[1].split(",")[key], real[2].split(",")[key]
    # the first customer's record written over two lines inside quotes, as a CSV writer may
    fields = real[1].rstrip("\n").split(",")
    fields[-1] = f'"{fields[-1]}\nsecond line"'
    real[1] = ",".join(fields) + "\n"
    content = "".join(real).encode()

    out = filter_attribute_file(content, attr.key, Forgotten.ids(hm.name, [first, second]))

    assert out.removed == 2 and out.users == {first, second}
    assert out.content == (real[0] + "".join(real[3:])).encode()


def test_tables_lose_the_users_rows_whatever_the_ids_type():
    table = pa.table({"user_id": pa.array([7, 8, 7, None], pa.int64()), "x": [1, 2, 3, 4]})
    out = filter_table(table, Forgotten.ids("s", ["7"]))
    assert out.removed == 2 and out.content.column("x").to_pylist() == [2, 4]


@pytest.fixture
def forgotten_warehouse(tmp_path: Path, tmall):
    """Two real days replayed, with what ingest would have counted, a Spark-style table (with its checksum file)
    and a DuckDB table of marts."""
    settings = make_settings(tmp_path)
    wh = Warehouse.of(settings)
    replay(tmall, wh, DAYS[0], DAYS[-1] + timedelta(days=1))
    rows = {d: (wh.raw_day(d) / tmall.bundled_events.name).read_text().splitlines()[1:] for d in DAYS}
    on_both = {line.split(",")[0] for line in rows[DAYS[-1]]}
    user = next(u for u, _ in Counter(line.split(",")[0] for line in rows[DAYS[0]]).most_common() if u in on_both)
    for d in DAYS:
        users = [line.split(",")[0] for line in rows[d]]
        part = wh.bronze_events() / f"ds={d}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": users, "line": list(range(len(users)))}), part / "part-00000.parquet")
        (part / ".part-00000.parquet.crc").write_bytes(b"crc")
        quarantine = wh.bronze_quarantine() / f"ds={d}"
        quarantine.mkdir(parents=True)
        pq.write_table(
            pa.table({"user_id": pa.array([], pa.string()), "reason": pa.array([], pa.string())}),
            quarantine / "part-00000.parquet",
        )
        files = inventory(tmall, wh, [d])
        counts = {"raw_rows": len(users), "bronze_rows": len(users), "quarantined_rows": 0, "redelivered_rows": 0}
        update_run_manifest(
            wh, d, "ingest_events", {**counts, "quarantine_reasons": {}, "files": [f.describe() for f in files]}
        )
    wh.duckdb_target_db().parent.mkdir(parents=True)
    with duckdb.connect(str(wh.duckdb_target_db())) as con:
        con.execute("create table user_features as select * from (values (?, 1), ('other', 2)) t(user_id, n)", [user])
    return settings, wh, user, rows


def test_forget_removes_the_user_everywhere_and_the_counts_still_reconcile(forgotten_warehouse, tmall):
    settings, wh, user, rows = forgotten_warehouse
    theirs = {d: sum(line.split(",")[0] == user for line in rows[d]) for d in DAYS}
    before = {p: p.read_bytes() for p in wh.root.rglob("*") if p.is_file()}

    dry = forget.forget(settings, [user], dry_run=True)
    assert dry["removed"]["raw"] == sum(theirs.values()) == dry["removed"]["bronze/events"]
    assert {p: p.read_bytes() for p in wh.root.rglob("*") if p.is_file()} == before  # a dry run writes nothing

    done = forget.forget(settings, [user, "no-such-user"])

    assert done["removed"] == dry["removed"] and done["not_found"] == ["no-such-user"]
    assert done["removed"]["marts/duckdb/nightrec.duckdb:user_features"] == 1
    assert done["unreconciled_days"] == []
    for d in DAYS:
        raw = (wh.raw_day(d) / tmall.bundled_events.name).read_text().splitlines()[1:]
        assert raw == [line for line in rows[d] if line.split(",")[0] != user]
        bronze = pq.read_table(wh.bronze_events() / f"ds={d}" / "part-00000.parquet")
        assert user not in bronze.column("user_id").to_pylist() and bronze.num_rows == len(raw)
        assert not (wh.bronze_events() / f"ds={d}" / ".part-00000.parquet.crc").exists()  # it would not match
        ledger = json.loads(wh.raw_ledger(d).read_text())[tmall.bundled_events.name]
        assert ledger["delivered_rows"] == len(rows[d])
        (delivered,) = inventory(tmall, wh, [d])
        assert delivered.forgotten == theirs[d] and delivered.delivered_rows == len(rows[d])
        ingest = json.loads(wh.run_manifest(d).read_text())["stages"]["ingest_events"]
        assert ingest["forgotten_rows"] == theirs[d] and ingest["raw_rows"] == len(rows[d]) and reconciles(ingest)
    with duckdb.connect(str(wh.duckdb_target_db()), read_only=True) as con:
        assert con.sql("select user_id from user_features").fetchall() == [("other",)]
    assert user not in wh.forgotten_users().read_text()  # kept by key only

    # the replayed history and a later delivery land without them; a second request finds nothing
    after = {p: p.read_bytes() for p in wh.raw().glob("ds=*/*.csv")}
    again = replay(tmall, wh, DAYS[0], DAYS[-1] + timedelta(days=1))
    assert [d.status for d in again.days] == ["unchanged", "unchanged"]
    assert [d.forgotten for d in again.days] == [theirs[d] for d in DAYS]
    assert {p: p.read_bytes() for p in wh.raw().glob("ds=*/*.csv")} == after
    late = wh.root / "late.csv"
    delivery = [line for line in rows[DAYS[0]] if line.split(",")[0] == user] + rows[DAYS[0]][-20:]
    late.write_text("user_id,brand_id,type,visit_datetime\n" + "\n".join(delivery) + "\n")
    landed = land_file(tmall, wh, DAYS[0], late)
    assert landed.forgotten == sum(line.split(",")[0] == user for line in delivery) > 0
    assert landed.rows == len(delivery) - landed.forgotten
    assert user not in (wh.raw_day(DAYS[0]) / "late.csv").read_text()
    second = forget.forget(settings, [user])
    assert second["removed"] == {} and second["not_found"] == [user]


def test_forget_refuses_no_ids(tmp_path: Path):
    with pytest.raises(InputError, match="No user id to forget"):
        forget.forget(make_settings(tmp_path), ["", "  "])
