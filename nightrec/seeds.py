"""Seeds of lookalike audiences: a list of user ids, or a predicate over the analysts' database, checked before any
work starts.

A predicate is one SELECT returning a ``user_id`` column, over the views analysts query (``marts.*``, ``bronze.*``,
``silver.*``), run on a read-only connection with a time limit. Anything else is refused with the problem named:
several statements, a statement that is not a SELECT, a table that is not one of those views, a table function
(``read_parquet``, ``read_csv`` ...: a predicate reads no other file), a query that runs past the limit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nightrec.errors import InputError

SEED_SCHEMAS = ("marts", "bronze", "silver")  # the analysts' views a predicate may read


class SeedError(InputError):
    """A seed that cannot be expanded (empty, too large, or no known consumer in it)."""


@dataclass(frozen=True)
class SeedCheck:
    """A validated seed: the positions of its known consumers in the population, and the ids nobody knows."""

    members: np.ndarray  # sorted positions into the population
    unknown: tuple[str, ...]

    def summary(self) -> str:
        shown = ", ".join(self.unknown[:10]) + (" ..." if len(self.unknown) > 10 else "")
        unknown = f"; {len(self.unknown)} unknown id(s) left out: {shown}" if self.unknown else ""
        return f"{len(self.members):,} consumers in the seed{unknown}"


def check_seed(seed_ids: Iterable[str], population: Sequence[str]) -> SeedCheck:
    """Validate a seed against the population before any work starts.

    :raises SeedError: the seed is empty, none of its ids is known, or it holds more than half the population (an
        audience "like half of everyone" is not a lookalike; segment or filter instead).
    """
    wanted = list(dict.fromkeys(str(s).strip() for s in seed_ids if str(s).strip()))
    if not wanted:
        raise SeedError("The seed is empty: give at least one user id (or a predicate that selects some)")
    position = {user: i for i, user in enumerate(population)}
    known = sorted(position[u] for u in wanted if u in position)
    unknown = tuple(u for u in wanted if u not in position)
    if not known:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise SeedError(f"None of the seed's {len(unknown)} id(s) is a known consumer: {shown}")
    if len(known) > len(population) / 2:
        raise SeedError(
            f"The seed holds {len(known):,} of {len(population):,} consumers (more than half): a lookalike of most "
            "consumers is everyone; narrow the seed"
        )
    return SeedCheck(np.asarray(known, dtype=np.int64), unknown)


def predicate_users(analyst_db: Path, predicate: str, timeout_s: float = 60.0) -> list[str]:
    """The distinct ``user_id`` values a predicate selects from the analysts' database, in sorted order.

    :raises SeedError: the predicate is not one SELECT over the analysts' views, returns no ``user_id`` column, or
        runs longer than ``timeout_s``.
    """
    import duckdb

    if not analyst_db.is_file():
        raise SeedError(f"No analysts' database at {analyst_db} yet: run the nightly DAG (or `nightrec demo`) first")
    try:
        statements = duckdb.extract_statements(predicate)
    except duckdb.Error as exc:
        raise SeedError(f"The seed predicate does not parse: {exc}") from exc
    if len(statements) != 1:
        raise SeedError(f"A seed predicate is one SELECT; this text holds {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SeedError(f"A seed predicate is one SELECT; this is a {kind.name} statement")
    with duckdb.connect(str(analyst_db), read_only=True) as con:
        views = {
            f"{schema}.{name}"
            for schema, name in con.execute(
                "select table_schema, table_name from information_schema.tables where table_schema in "
                f"({', '.join('?' for _ in SEED_SCHEMAS)})",
                list(SEED_SCHEMAS),
            ).fetchall()
        }
        tree = json.loads(con.execute("select json_serialize_sql(?)", [predicate]).fetchone()[0])
        if tree.get("error"):
            raise SeedError(f"The seed predicate cannot be checked: {tree.get('error_message')}")
        _check_tables(tree, views)
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            result = con.execute(predicate)
            columns = [d[0] for d in result.description]
            if "user_id" not in columns:
                raise SeedError(f"A seed predicate returns a user_id column; this one returns {columns}")
            rows = result.fetchall()
        except duckdb.InterruptException as exc:
            raise SeedError(f"The seed predicate ran longer than {timeout_s:g} s and was stopped") from exc
        except duckdb.Error as exc:
            raise SeedError(f"The seed predicate failed: {exc}") from exc
        finally:
            timer.cancel()
    position = columns.index("user_id")
    return sorted({str(r[position]) for r in rows if r[position] is not None})


def _check_tables(tree: Any, views: set[str]) -> None:
    """Refuse table functions and tables other than the analysts' views (common table expressions are allowed)."""
    ctes: set[str] = set()
    refs: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in {"BASE_TABLE", "TABLE_FUNCTION"} and "alias" in node:
                refs.append(node)
            for entry in (node.get("cte_map") or {}).get("map", []) if isinstance(node.get("cte_map"), dict) else []:
                ctes.add(str(entry.get("key", "")).lower())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    for ref in refs:
        if ref["type"] == "TABLE_FUNCTION":
            name = (ref.get("function") or {}).get("function_name", "a table function")
            raise SeedError(f"A seed predicate reads only the analysts' views; it may not call {name}()")
        schema, table = str(ref.get("schema_name") or ""), str(ref.get("table_name") or "")
        if not schema and table.lower() in ctes:
            continue
        if f"{schema}.{table}" not in views:
            known = ", ".join(sorted(views)[:12]) + (" ..." if len(views) > 12 else "")
            raise SeedError(
                f"A seed predicate reads only the analysts' views; {schema or '?'}.{table} is not one ({known})"
            )
