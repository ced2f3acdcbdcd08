import json
from pathlib import Path

import pytest

from nightrec.storage import (
    clean_stale_temporaries,
    read_json,
    swap_into_place,
    temp_sibling,
    write_json_atomic,
)


def _make(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "part-00000.parquet").write_text(text)
    return path


def test_swap_into_place_replaces_a_partition_and_leaves_no_debris(tmp_path: Path):
    target = tmp_path / "ds=2014-05-01"
    _make(target, "old")
    new = _make(temp_sibling(target), "new")
    swap_into_place(new, target)
    assert (target / "part-00000.parquet").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2014-05-01"]


def test_swap_into_place_creates_a_missing_partition(tmp_path: Path):
    target = tmp_path / "t" / "ds=2014-05-01"
    swap_into_place(_make(temp_sibling(target), "first"), target)
    assert (target / "part-00000.parquet").read_text() == "first"


def test_a_killed_writer_leaves_the_previous_version_visible(tmp_path: Path):
    target = _make(tmp_path / "ds=2014-05-01", "published")
    staging = temp_sibling(target)
    (staging).mkdir()
    (staging / "part-00000.parquet").write_text("half-writ")  # the job dies here, before the swap
    assert (target / "part-00000.parquet").read_text() == "published"
    removed = clean_stale_temporaries(tmp_path)  # what the next run does first
    assert removed == [staging]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2014-05-01"]


def test_write_json_atomic_round_trips(tmp_path: Path):
    path = tmp_path / "a" / "manifest.json"
    write_json_atomic(path, {"rows": 3, "reasons": {"blank_line": 1}})
    write_json_atomic(path, {"rows": 4})
    assert read_json(path) == {"rows": 4}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_a_staged_partition_replaces_the_old_one_only_when_its_block_completes(tmp_path) -> None:
    from nightrec.storage import SUCCESS_FILE, staged

    target = tmp_path / "ds=2014-08-15"
    with staged(target, success={"rows": 1}) as staging:
        (staging / "part-0.parquet").write_text("first")
        assert not target.exists()  # nothing visible while it is written
    assert (target / "part-0.parquet").read_text() == "first"
    assert json.loads((target / SUCCESS_FILE).read_text()) == {"rows": 1}
    with pytest.raises(RuntimeError), staged(target, success={"rows": 2}) as staging:
        (staging / "part-0.parquet").write_text("second")
        raise RuntimeError("killed half way")
    assert (target / "part-0.parquet").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2014-08-15"]  # no staging left behind


def test_a_writer_killed_as_it_publishes_leaves_the_previous_version_and_a_retry_publishes(tmp_path: Path):
    """A real SIGKILL (the fault hook of nightrec.faults) at the moment a partition and a document would be replaced:
    readers see the previous versions, the new content sits complete in a hidden temporary, a rerun publishes."""
    import os
    import signal
    import subprocess
    import sys

    from nightrec.faults import KILL_AT_COMMIT

    target = _make(tmp_path / "t" / "ds=2014-05-01", "published")
    write_json_atomic(tmp_path / "t" / "pointer.json", {"version": 1})
    writer = (
        "import sys; from pathlib import Path; from nightrec.storage import staged, write_json_atomic\n"
        "root = Path(sys.argv[1])\n"
        "with staged(root / 'ds=2014-05-01', success={'rows': 1}) as s: (s / 'part-00000.parquet').write_text('new')\n"
        "write_json_atomic(root / 'pointer.json', {'version': 2})\n"
    )

    def write(kill_at: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k != KILL_AT_COMMIT} | (
            {KILL_AT_COMMIT: kill_at} if kill_at else {}
        )
        return subprocess.run([sys.executable, "-c", writer, str(tmp_path / "t")], env=env, check=False).returncode

    assert write("*/ds=2014-05-01") == -signal.SIGKILL
    assert (target / "part-00000.parquet").read_text() == "published"
    assert read_json(tmp_path / "t" / "pointer.json") == {"version": 1}
    (left,) = [p for p in (tmp_path / "t").iterdir() if p.name.startswith(".tmp-")]
    assert (left / "part-00000.parquet").read_text() == "new"  # complete, and hidden
    assert write("*/pointer.json") == -signal.SIGKILL  # the partition is published, the document not
    assert (target / "part-00000.parquet").read_text() == "new"
    assert read_json(tmp_path / "t" / "pointer.json") == {"version": 1}
    assert write(None) == 0
    assert read_json(tmp_path / "t" / "pointer.json") == {"version": 2}
    # the retry itself removed both killed writers' temporaries
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["ds=2014-05-01", "pointer.json"]


def test_kill_once_kills_each_glob_once_and_records_what_readers_saw(tmp_path: Path):
    """With NIGHTREC_KILL_ONCE, each of several globs kills the first writer that meets it (as a scheduler's first
    try) and records the version readers still saw and the hidden new one; the next writer (the retry) publishes."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from nightrec.faults import KILL_AT_COMMIT, KILL_ONCE, kill_record

    root = tmp_path / "t"
    target = _make(root / "ds=2014-05-01", "published")
    write_json_atomic(root / "pointer.json", {"version": 1})
    before = target.stat()
    writer = (
        "import sys; from pathlib import Path; from nightrec.storage import staged, write_json_atomic\n"
        "root = Path(sys.argv[1])\n"
        "with staged(root / 'ds=2014-05-01', success={'rows': 1}) as s: (s / 'part-00000.parquet').write_text('new')\n"
        "write_json_atomic(root / 'pointer.json', {'version': 2})\n"
    )
    globs = ["*/ds=2014-05-01", "*/pointer.json"]
    env = os.environ | {KILL_AT_COMMIT: ";".join(globs), KILL_ONCE: str(tmp_path / "kills")}

    def write() -> int:
        return subprocess.run([sys.executable, "-c", writer, str(root)], env=env, check=False).returncode

    assert write() == -signal.SIGKILL  # the first glob
    record = json.loads(kill_record(tmp_path / "kills", globs[0]).read_text())
    assert record["target"] == str(target) and record["version"] == [before.st_ino, before.st_mtime_ns]
    assert len(record["hidden"]) == 1 and record["hidden"][0].startswith(".tmp-ds=2014-05-01-")
    assert (target / "part-00000.parquet").read_text() == "published"
    assert write() == -signal.SIGKILL  # the retry passes the first glob and meets the second
    assert (target / "part-00000.parquet").read_text() == "new"
    assert read_json(root / "pointer.json") == {"version": 1}
    assert kill_record(tmp_path / "kills", globs[1]).is_file()
    assert write() == 0  # both killed once: this retry publishes everything
    assert read_json(root / "pointer.json") == {"version": 2}
    assert sorted(p.name for p in root.iterdir()) == ["ds=2014-05-01", "pointer.json"]


def test_a_new_write_of_a_target_removes_what_killed_writers_of_that_target_left(tmp_path: Path):
    from nightrec.storage import fresh_staging

    target = _make(tmp_path / "ds=2014-05-01", "published")
    stale = [temp_sibling(target), temp_sibling(target, "trash")]
    other = temp_sibling(tmp_path / "ds=2014-05-02")  # another partition's writer: not this one's to remove
    for p in [*stale, other]:
        p.mkdir()
    staging = fresh_staging(target)
    assert not staging.exists() and staging.name.startswith(".tmp-ds=2014-05-01-")
    assert not any(p.exists() for p in stale) and other.is_dir()
    assert (target / "part-00000.parquet").read_text() == "published"


def test_documents_several_processes_update_at_once_lose_no_change(tmp_path: Path):
    """Four processes each add 30 sections to one day's run manifest at the same time (tasks of a run under a
    scheduler that runs them in parallel): every section is there, none overwritten by another's older copy."""
    import subprocess
    import sys

    writer = (
        "import sys; from datetime import date; from pathlib import Path\n"
        "from nightrec.run_manifest import update_run_manifest; from nightrec.warehouse import Warehouse\n"
        "wh = Warehouse(Path(sys.argv[1]), 'tmall_brand')\n"
        "for i in range(30): update_run_manifest(wh, date(2014, 5, 1), f'{sys.argv[2]}-{i}', {'i': i})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(tmp_path), name]) for name in "abcd"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    from datetime import date

    from nightrec.run_manifest import read_run_manifest
    from nightrec.warehouse import Warehouse

    doc = read_run_manifest(Warehouse(tmp_path, "tmall_brand"), date(2014, 5, 1))
    assert doc is not None and len(doc["stages"]) == 120
    assert not [p.name for p in Warehouse(tmp_path, "tmall_brand").run_manifest(date(2014, 5, 1)).parent.glob(".tmp-*")]
