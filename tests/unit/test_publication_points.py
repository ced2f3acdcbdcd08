"""Every publication goes through nightrec/storage.py: the one place that makes a new version visible atomically,
removes what killed writers left and calls the fault hook the kill tests use. A rename, replace or move of a path
anywhere else would be a publication those guarantees (and tests) do not cover. (Renaming files inside a staging
directory before it is swapped in, as spark_jobs/common.py names its part files, is not a publication; neither are
the two stores written in place, documented in docs/bad_input.md: Feast's online store and dbt's own DuckDB file.)"""

from __future__ import annotations

import ast

from nightrec.config import PROJECT_ROOT

PACKAGES = ("nightrec", "nightrec_app", "spark_jobs", "training", "dags")
MOVES = {("os", "rename"), ("os", "replace"), ("os", "renames"), ("shutil", "move")}


def _moves(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) in MOVES
    ]


def test_only_the_storage_module_renames_paths_into_place():
    found = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for package in PACKAGES
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if (lines := _moves(ast.parse(path.read_text())))
    }
    assert set(found) == {"nightrec/storage.py"}, found


def test_the_check_finds_a_rename():
    assert _moves(ast.parse("import os\nos.replace(a, b)\nshutil.move(a, b)\nx.replace('a', 'b')\n")) == [2, 3]
