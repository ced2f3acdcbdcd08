"""Commands that cannot do what they are asked stop with a message and exit 2 before starting anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nightrec.config import PROJECT_ROOT
from nightrec_app import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # before the nightly DAG's first day Airflow would create no task and `dags test` would "succeed" (#24)
        (["nightly", "--day", "2014-07-15"], "come before tmall_brand's nightly_start (2014-08-14)"),
        (["backfill", "--start", "2014-08-10", "--end", "2014-08-14"], "08-11, 2014-08-12 come before"),
        (["nightly", "--day", "2014-08-20"], "lie outside tmall_brand's delivered history"),
        # an empty or inverted bootstrap range: refused, not 30 s into spark-submit (#24)
        (["bootstrap", "--start", "2014-08-14"], "bootstrap range is empty: --start 2014-08-14 and no --end"),
        (["bootstrap", "--start", "2014-05-02", "--end", "2014-05-01"], "--end is inclusive and must be on or after"),
        (["bootstrap", "--start", "2014-04-01", "--end", "2014-04-20"], "leaves tmall_brand's history [2014-04-15"),
        # forgetting nobody, or ids from a file that is not there (#26)
        (["forget"], "No user id to forget: give --user ID"),
        (["forget", "--user", " "], "No user id to forget"),
        (["forget", "--file", "no/such/ids.txt"], "--file no/such/ids.txt: no such file"),
    ],
)
def test_a_day_or_range_the_dags_would_not_process_is_refused(args, message, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("NIGHTREC_WAREHOUSE_ROOT", str(tmp_path / "warehouse"))
    monkeypatch.setenv("NIGHTREC_AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("NIGHTREC_SOURCE", "tmall_brand")
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "airflow").exists()  # refused before Airflow's database was touched


def test_a_day_before_a_first_night_set_later_than_nightly_start_is_refused(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("NIGHTREC_WAREHOUSE_ROOT", str(tmp_path / "warehouse"))
    monkeypatch.setenv("NIGHTREC_AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("NIGHTREC_SOURCE", "tmall_brand")
    monkeypatch.setenv("NIGHTREC_SET", "airflow.first_night=2014-08-15")
    assert cli.main(["nightly", "--day", "2014-08-14"]) == 2  # after nightly_start, before the DAG's first night
    refused = capsys.readouterr().err
    assert "come before the nightly DAG's first night (2014-08-15, set by airflow.first_night)" in refused
    assert not (tmp_path / "airflow").exists()


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path):
    """`nightrec status --all | head -1`: the pipe closes before the output ends; the command ends quietly."""
    import subprocess
    import sys

    env = {**os.environ, "NIGHTREC_WAREHOUSE_ROOT": str(tmp_path / "warehouse"), "NIGHTREC_SOURCE": "tmall_brand"}
    command = [sys.executable, "-m", "nightrec_app.cli", "status", "--all"]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_run_whose_reader_went_away_goes_on_showing_nothing():
    """What `nightrec nightly` shows while its DAG runs (`airflow_env.show`): once the reader of its output is gone the
    lines go nowhere and the run goes on. A BrokenPipeError there used to end the command with exit 0, leave its days
    marked running and the DAG's output unread."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom nightrec_app.airflow_env import show\n"
        "for i in range(3):\n    show(f'line {i}', sys.stdout)\n"
        "sys.stderr.write('went on')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "went on", err
