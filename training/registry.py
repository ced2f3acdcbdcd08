"""Model directories and champion pointers under <warehouse>/models/.

    models/<name>/<version>/   weights.pt, user_embeddings.parquet, item_embeddings.parquet, metrics.json,
                               manifest.json (data range, config, code version, vocabularies, feature columns),
                               evaluated.pt when the served model is a refit on every day (training.refit): the
                               held-out model that metrics.json describes; anchors/ds=<A>/ the held-out model's
                               user and item embeddings as of each anchor the candidate job scores with it
    models/<name>/champion.json   {"version": ..., "metric": ..., "value": ...}: the published model

A version directory is written beside its target and renamed into place, so a reader sees a whole model or none;
rerunning a day replaces that day's version. The champion pointer is a JSON file replaced atomically.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nightrec import warehouse
from nightrec.config import PROJECT_ROOT
from nightrec.storage import fresh_staging, swap_into_place, write_json_atomic

CHAMPION_FILE = warehouse.CHAMPION_FILE
EVALUATED_FILE = "evaluated.pt"


def code_version() -> str:
    """The git commit when the project is a checkout, and always a digest of the training code itself."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "training").glob("*.py")):
        digest.update(path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{commit or 'no-git'}+training-{digest.hexdigest()[:12]}"


def embeddings_table(ids: list[str], vectors: np.ndarray, key: str) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table(
        {
            key: pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(vectors.ravel(), vectors.shape[1]),
        }
    )


def write_version(
    warehouse_root: Path,
    name: str,
    version: str,
    writers: dict[str, Callable[[Path], None]],
    metrics: dict[str, Any],
    manifest: dict[str, Any],
) -> Path:
    """Write models/<name>/<version>/ atomically (a rerun replaces it whole): each writer gets its file's path."""
    target = model_dir(warehouse_root, name, version)
    tmp = fresh_staging(target)
    tmp.mkdir(parents=True)
    for filename, write in writers.items():
        (tmp / filename).parent.mkdir(parents=True, exist_ok=True)
        write(tmp / filename)
    write_json_atomic(tmp / "metrics.json", metrics)
    write_json_atomic(tmp / "manifest.json", manifest)
    swap_into_place(tmp, target)
    return target


def write_model(
    warehouse_root: Path,
    name: str,
    version: str,
    state_dict: dict[str, Any],
    user_embeddings: pa.Table,
    item_embeddings: pa.Table,
    metrics: dict[str, Any],
    manifest: dict[str, Any],
    evaluated: dict[str, Any] | None = None,
    more: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """An embedding model's version: weights, user and item embeddings, metrics, manifest; when the served model is a
    refit on every day, the held-out model the metrics belong to (evaluated.pt, re-scored by the gate); and `more`
    files (relative path -> writer: the anchor embeddings)."""
    writers: dict[str, Callable[[Path], None]] = {
        "weights.pt": lambda path: torch.save(state_dict, path),
        **table_writers("", user_embeddings, item_embeddings),
    }
    if evaluated is not None:
        writers[EVALUATED_FILE] = lambda path: torch.save(evaluated, path)
    writers.update(more or {})
    return write_version(warehouse_root, name, version, writers, metrics, manifest)


def table_writers(
    prefix: str, user_embeddings: pa.Table, item_embeddings: pa.Table
) -> dict[str, Callable[[Path], None]]:
    """Writers of a pair of embedding tables under `prefix` (a relative directory; "" for the version itself)."""
    base = f"{prefix}/" if prefix else ""
    return {
        f"{base}user_embeddings.parquet": lambda path: pq.write_table(user_embeddings, path),
        f"{base}item_embeddings.parquet": lambda path: pq.write_table(item_embeddings, path),
    }


def evaluated_weights(directory: Path) -> dict[str, Any]:
    """The weights whose metrics a version reports: evaluated.pt when the served model is a refit, else weights.pt
    (each with its vocabularies and, since refits exist, its architecture)."""
    path = directory / EVALUATED_FILE
    return torch.load(path if path.exists() else directory / "weights.pt", map_location="cpu", weights_only=False)


def set_champion(warehouse_root: Path, name: str, pointer: dict[str, Any]) -> None:
    write_json_atomic(warehouse.Warehouse(warehouse_root, "").champion_pointer(name), pointer)


def model_dir(warehouse_root: Path, name: str, version: str) -> Path:
    return warehouse.Warehouse(warehouse_root, "").model_dir(name, version)


def gate(
    new: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    tolerance: float,
    why_none: str = "no champion yet",
    metric: str = "ndcg@20",
) -> dict[str, Any]:
    """Publish unless the new model is worse than the champion (re-scored on this window) by more than `tolerance`."""
    value = float(new[metric])
    if champion_metrics is None or metric not in champion_metrics:
        return {"publish": True, "reason": why_none, "metric": metric, "new": value}
    old = float(champion_metrics[metric])
    publish = value >= old - tolerance
    return {
        "publish": publish,
        "reason": "not worse than the champion beyond the tolerance" if publish else "worse than the champion",
        "metric": metric,
        "new": value,
        "champion": old,
        "tolerance": tolerance,
    }
