"""Run table suites through a Great Expectations file context, classify the results, publish Data Docs.

The GX project lives in ``<warehouse>/gx/`` (suites, validation definitions, checkpoints and results, all
rewritten from code on each run, so the code stays the one source of truth); its Data Docs site is
``<warehouse>/docs/gx/index.html`` and gains one page per table and run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nightrec.warehouse import Warehouse

CRITICAL, WARNING = "critical", "warning"
_SITE = "nightrec"
_HIDDEN_KWARGS = {"batch_id", "result_format", "mostly", "catch_exceptions", "include_config"}


@dataclass(frozen=True)
class Check:
    """One expectation and what a failure means: ``critical`` stops the run, ``warning`` is recorded."""

    expectation: Any  # a great_expectations.expectations.Expectation
    severity: str = CRITICAL
    why: str = ""  # what the expectation means, in words, for the failure message (where its name does not say)


@dataclass
class TableSuite:
    """The checks of one table (or the rows of one run of it).

    :param name: GX suite and asset name, e.g. ``raw.events`` or ``marts.fct_interactions``.
    :param table: what the message calls the table, with the rows covered (days, source).
    :param frame: the rows to validate.
    :param checks: the expectations.
    :param show: columns quoted for each sample offending row (its location first).
    """

    name: str
    table: str
    frame: pd.DataFrame
    checks: list[Check]
    show: list[str] = field(default_factory=list)


@dataclass
class Finding:
    table: str
    expectation: str
    severity: str
    summary: str
    samples: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"- [{self.severity}] {self.table}: {self.expectation}: {self.summary}"]
        lines += [f"    {_format_row(row)}" for row in self.samples]
        return "\n".join(lines)


@dataclass
class QualityReport:
    """What one boundary's validation found."""

    boundary: str
    run_name: str
    data_docs: Path
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    critical: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.critical

    def add(self, part: QualityReport) -> None:
        """Take in the report of another chunk of the same run's days: rows and expectations add up per table."""
        for table, counts in part.tables.items():
            mine = self.tables.setdefault(table, {"rows": 0, "expectations": 0, "passed": 0, "chunks": 0})
            for key in ("rows", "expectations", "passed"):
                mine[key] += counts[key]
            mine["chunks"] += 1
        self.critical += part.critical
        self.warnings += part.warnings

    def failure_message(self) -> str:
        head = (
            f"Data quality check '{self.boundary}' failed: {len(self.critical)} critical expectation(s) "
            f"(run {self.run_name}). The run stops here; nothing downstream was written."
        )
        body = "\n".join(f.render() for f in self.critical)
        return f"{head}\n{body}\nData Docs: {self.data_docs / 'index.html'}"

    def summary(self) -> str:
        checked = ", ".join(
            f"{t} ({v['rows']:,} rows, {v['passed']}/{v['expectations']} passed)" for t, v in self.tables.items()
        )
        text = f"quality {self.boundary}: {'OK' if self.success else 'FAILED'}: {checked}"
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s):\n" + "\n".join(f.render() for f in self.warnings)
        return text

    def to_manifest(self) -> dict[str, Any]:
        def items(findings: list[Finding]) -> list[dict[str, Any]]:
            return [
                {"table": f.table, "expectation": f.expectation, "summary": f.summary, "samples": f.samples[:3]}
                for f in findings
            ]

        return {
            "success": self.success,
            "run_name": self.run_name,
            "tables": self.tables,
            "critical": items(self.critical),
            "warnings": items(self.warnings),
            "data_docs": str(self.data_docs / "index.html"),
        }


def _context(warehouse_root: Path) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network here, and no phoning home anyway
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    warehouse_root.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(warehouse_root))
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(Warehouse(warehouse_root, "").data_docs()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    if ctx.variables.data_docs_sites != {_SITE: site}:
        ctx.variables.data_docs_sites = {_SITE: site}
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    return ctx


def validate(
    warehouse_root: Path, boundary: str, run_name: str, suites: list[TableSuite], sample_rows: int = 5
) -> QualityReport:
    """Validate each suite's frame, update the Data Docs, and sort the outcomes into critical and warning."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _context(warehouse_root)
    source = ctx.data_sources.add_or_update_pandas("nightrec")
    report = QualityReport(boundary, run_name, Warehouse(warehouse_root, "").data_docs())
    for suite in suites:
        try:
            asset = source.get_asset(suite.name)
        except LookupError:
            asset = source.add_dataframe_asset(suite.name)
        try:
            batch = asset.get_batch_definition("whole")
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe("whole")
        expectations = []
        for i, check in enumerate(suite.checks):
            check.expectation.meta = {"severity": check.severity, "check": i, "why": check.why}
            expectations.append(check.expectation)
        gx_suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=suite.name, expectations=expectations))
        definition = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
        )
        checkpoint = ctx.checkpoints.add_or_update(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[_SITE])],
                result_format={"result_format": "COMPLETE"},
            )
        )
        frame = suite.frame.reset_index(drop=True)
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
        passed = 0
        for validation in result.run_results.values():
            for res in validation.results:
                passed += bool(res.success)
                finding = _finding(suite, frame, res, sample_rows)
                if finding is not None:
                    (report.critical if finding.severity == CRITICAL else report.warnings).append(finding)
        report.tables[suite.name] = {"rows": len(frame), "expectations": len(suite.checks), "passed": passed}
    return report


def _finding(suite: TableSuite, frame: pd.DataFrame, res: Any, sample_rows: int) -> Finding | None:
    cfg = res.expectation_config
    severity = (cfg.meta or {}).get("severity", CRITICAL)
    outcome = res.result or {}
    n_bad = outcome.get("unexpected_count")
    if res.success and not n_bad:
        return None
    if res.exception_info and res.exception_info.get("raised_exception"):
        summary = f"could not be evaluated: {res.exception_info.get('exception_message')}"
    elif n_bad is not None:
        total = outcome.get("element_count") or 0
        summary = f"{n_bad:,} of {total:,} rows ({100 * n_bad / max(total, 1):.2f}%) unexpected"
        mostly = cfg.kwargs.get("mostly")
        if mostly is not None and mostly < 1:
            summary += f"; tolerance {100 * (1 - mostly):.2f}%"
        if res.success:  # within tolerance: ingest quarantines these rows with their reason
            severity = WARNING
            summary += ": within tolerance, these rows go to bronze quarantine"
    else:
        summary = f"observed {_observed(outcome.get('observed_value'))}"
    if not res.success and severity != WARNING:
        severity = CRITICAL
    why = (cfg.meta or {}).get("why")
    expectation = f"{why}: {_describe(cfg)}" if why else _describe(cfg)
    return Finding(suite.name, expectation, severity, summary, _samples(suite, frame, cfg, outcome, sample_rows))


def _observed(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return repr(value)
    return f"{int(value):,}" if float(value).is_integer() else f"{float(value):,.6g}"


def _describe(cfg: Any) -> str:
    args = []
    for key, value in cfg.kwargs.items():
        if key in _HIDDEN_KWARGS or value is None:
            continue
        text = repr(sorted(value) if isinstance(value, set | frozenset) else value)
        args.append(f"{key}={text if len(text) <= 80 else text[:77] + '...'}")
    return f"{cfg.type}({', '.join(args)})"


def _samples(suite: TableSuite, frame: pd.DataFrame, cfg: Any, outcome: dict, n: int) -> list[dict[str, Any]]:
    index = outcome.get("unexpected_index_list") or []
    if not index or n <= 0:
        return []
    cols = list(dict.fromkeys([*suite.show, *_columns_of(cfg)]))
    cols = [c for c in cols if c in frame.columns]
    rows = []
    for i in index[:n]:
        pos = i if isinstance(i, int | float) else None
        if pos is None:  # multi-column expectations report dicts of the row's key values
            rows.append({k: _plain(v) for k, v in dict(i).items()})
            continue
        rows.append({c: _plain(frame.at[int(pos), c]) for c in cols})
    return rows


def _columns_of(cfg: Any) -> list[str]:
    kw = cfg.kwargs
    return [kw["column"]] if kw.get("column") else list(kw.get("column_list") or [])


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of one cell (samples go into the run manifest)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value if isinstance(value, int | float | str | bool) else str(value)


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in row.items())
