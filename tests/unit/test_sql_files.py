"""Splitting an analyst's SQL file into statements (`nightrec sql --file`)."""

from __future__ import annotations

from nightrec.config import PROJECT_ROOT
from nightrec.marts_publish import split_queries


def test_semicolons_in_comments_and_quotes_do_not_end_a_statement():
    text = "-- a note; with a semicolon\nselect 1;\n-- c;d\nselect ';' as x, \"a;b\" as y;\n-- only a comment; here\n"
    assert split_queries(text) == ["-- a note; with a semicolon\nselect 1", "-- c;d\nselect ';' as x, \"a;b\" as y"]


def test_the_analysts_example_file_holds_ten_queries():
    queries = split_queries((PROJECT_ROOT / "docs" / "analyst_queries.sql").read_text())
    assert len(queries) == 10
    assert all(f"-- {i}. " in q for i, q in enumerate(queries, 1))
