"""Atomic publication of partitions and small JSON documents.

Every job writes into a temporary directory beside its target and renames it into place, so a reader sees
the old partition or the new one, never a half-written one, and a killed job leaves only a ``.tmp-*``
directory that the next run removes. On Linux the swap of an existing partition is one
``renameat2(RENAME_EXCHANGE)`` call; elsewhere it falls back to two renames (a short window in which the
partition is absent, never partial).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nightrec.faults import before_commit
from nightrec.hidden_siblings import TAGS, prefix

SUCCESS_FILE = "_SUCCESS"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def temp_sibling(target: Path, tag: str = "tmp") -> Path:
    """A fresh hidden path in the same directory as ``target`` (same filesystem, so rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent / f"{prefix(target.name, tag)}{uuid.uuid4().hex[:12]}"


def fresh_staging(target: Path) -> Path:
    """A new temporary path beside ``target`` (see :func:`temp_sibling`), after removing what killed writers of the
    same target left there (``.tmp-<name>-*``, ``.trash-<name>-*``). For targets with one writer at a time (a
    partition, a table, a model version, the analysts' file): a second live writer's temporary would be removed."""
    clean_stale_temporaries(target.parent, target.name)
    return temp_sibling(target)


def swap_into_place(new: Path, target: Path) -> None:
    """Make ``new`` visible at ``target`` atomically, replacing whatever was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    before_commit(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE)
        if rc == 0:
            # `new` now holds the previous content.
            _remove(new)
            return
    old = temp_sibling(target, "trash")
    os.rename(target, old)
    os.rename(new, target)
    _remove(old)


@contextmanager
def staged(target: Path, success: dict[str, Any] | None = None) -> Iterator[Path]:
    """A fresh directory beside ``target`` to write its new content into; when the block ends it is swapped into
    place (with ``_SUCCESS`` holding ``success`` when given), and if the block raises it is removed, leaving the
    previous content visible."""
    staging = fresh_staging(target)
    staging.mkdir(parents=True)
    try:
        yield staging
        if success is not None:
            write_json_atomic(staging / SUCCESS_FILE, success)
    except BaseException:
        _remove(staging)
        raise
    swap_into_place(staging, target)


def retire(path: Path) -> None:
    """Take ``path`` out of view at once (renamed to a hidden ``.retired-*`` beside it), then delete it: a reader
    never sees half a directory, and what a kill in between leaves, :func:`clean_retired` removes."""
    if not (path.exists() or path.is_symlink()):
        return
    retired = temp_sibling(path, "retired")
    os.rename(path, retired)
    _remove(retired)


def clean_retired(directory: Path) -> list[Path]:
    """Remove what a killed :func:`retire` left directly under ``directory`` (never anything a writer uses)."""
    found = list(directory.glob(".retired-*")) if directory.is_dir() else []
    for path in found:
        _remove(path)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_stale_temporaries(directory: Path, name: str = "") -> list[Path]:
    """Remove ``.tmp-*`` and ``.trash-*`` leftovers of killed runs directly under ``directory``.

    :param name: only those made for this target name (``.tmp-<name>-*``); all when empty.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    prefixes = tuple(prefix(name, tag) if name else f".{tag}-" for tag in TAGS)
    for child in directory.iterdir():
        if child.name.startswith(prefixes):
            _remove(child)
            removed.append(child)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new file, never a partial one.

    One writer of a document at a time: the ones several processes rewrite (a day's run manifest, its landing
    ledger) are written inside :func:`update_json`'s lock; the write first removes what killed writers of it left."""
    tmp = fresh_staging(path)
    tmp.write_text(text)
    replace_file(tmp, path)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (``flock`` on its ``.lock`` file) until the block ends.

    For read-modify-write of documents that several tasks update: tasks of one run may run at the same time under
    a real scheduler, and without the lock the later write would drop the earlier one's change. The kernel releases
    the lock of a killed process, so a SIGKILL never leaves a document locked. (``flock`` coordinates the processes
    of one machine; across machines only where the filesystem carries it: docs/decisions.md, decision 24.)"""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def update_json(path: Path, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
    """Replace the JSON document at ``path`` by ``change(current)`` (``None`` when there is none yet), under the
    lock of its directory, atomically (:func:`write_json_atomic`); returns what was written."""
    with locked(path.parent):
        doc = change(read_json(path) if path.is_file() else None)
        write_json_atomic(path, doc)
    return doc


def replace_file(written: Path, path: Path) -> None:
    """Make the complete file (or symlink) ``written`` visible at ``path`` in one rename: readers see the old or
    the new one. Every file publication goes through here (and every directory one through swap_into_place)."""
    before_commit(path)
    os.replace(written, path)


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document so that readers see the old or the new file, never a partial one."""
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def utc_now_iso() -> str:
    """The wall-clock time a record is written, for the records people read (ledgers, run attempts)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_files(directory: Path) -> list[Path]:
    """Visible data files of a partition (hidden and ``_`` files such as _SUCCESS excluded), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
