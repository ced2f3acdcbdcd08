"""Commands that cannot do what they are asked stop with a message and exit 2 before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightrec_app import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # before the nightly DAG's first day Airflow would create no task and `dags test` would "succeed" (#24)
        (["nightly", "--day", "2014-07-15"], "come before tmall_brand's nightly_start (2014-08-14)"),
        (["backfill", "--start", "2014-08-10", "--end", "2014-08-14"], "08-11, 2014-08-12 come before"),
        (["nightly", "--day", "2014-08-20"], "lie outside tmall_brand's delivered history"),
    ],
)
def test_a_nightly_day_the_dag_would_not_process_is_refused(args, message, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("NIGHTREC_WAREHOUSE_ROOT", str(tmp_path / "warehouse"))
    monkeypatch.setenv("NIGHTREC_AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("NIGHTREC_SOURCE", "tmall_brand")
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "airflow").exists()  # refused before Airflow's database was touched
