"""The names of the hidden siblings a publication makes beside its target (see :mod:`nightrec.storage`).

``.tmp-<name>-<id>`` holds a new version while it is written, ``.trash-<name>-<id>`` the old one on its way out.
Readers list no dot-names, so neither is ever seen as the target. Everything that looks for what a writer left
(the stale-temporary cleaner, the fault hook's record of what readers saw, the tests) finds them by these prefixes.
"""

from __future__ import annotations

from pathlib import Path

TAGS = ("tmp", "trash")  # a version being written, a version being removed


def prefix(name: str, tag: str = "tmp") -> str:
    """The start of the name of every hidden sibling made with ``tag`` for a target called ``name``."""
    return f".{tag}-{name}-"


def hidden_siblings(target: Path, tags: tuple[str, ...] = TAGS) -> list[str]:
    """The names of the hidden siblings of ``target`` with these tags, sorted (none when its directory is absent)."""
    if not target.parent.is_dir():
        return []
    starts = tuple(prefix(target.name, tag) for tag in tags)
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(starts))
