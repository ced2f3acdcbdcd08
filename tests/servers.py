"""Throwaway servers on 127.0.0.1 for the tests and the benchmarks: Redis, PostgreSQL, and the port helpers they
share. Each is stopped when its context ends, whatever happens inside."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


@contextlib.contextmanager
def serving(server: subprocess.Popen, port: int, stop_seconds: float = 30) -> Iterator[None]:
    """While a started server process listens on ``port``; it is stopped afterwards, whatever happens."""
    try:
        wait_for_port(port)
        yield
    finally:
        server.terminate()
        server.wait(timeout=stop_seconds)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 keeping nothing on disk; yields ``host:port``."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (make test installs it; apt-get install redis-server)"
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    server = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    with serving(server, port):
        yield f"127.0.0.1:{port}"


def _postgres_binaries() -> tuple[str, str]:
    import glob

    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    assert found, "PostgreSQL is required (make test's .ci/run installs it; apt-get install postgresql)"
    bindir = Path(found).parent
    return str(bindir / "initdb"), str(bindir / "postgres")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (run as the postgres user when the tests run as root), trusting
    local connections; yields its SQLAlchemy URL (psycopg 3)."""
    import tempfile

    initdb, postgres_bin = _postgres_binaries()
    work = Path(tempfile.mkdtemp(prefix="nightrec-pg-", dir="/tmp"))
    data = work / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(work, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [*as_user, postgres_bin, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with serving(server, port):
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        shutil.rmtree(work, ignore_errors=True)
