"""Model directories and champion pointers under <warehouse>/models/.

    models/<name>/<version>/   weights.pt, user_embeddings.parquet, item_embeddings.parquet, metrics.json,
                               manifest.json (data range, config, code version, vocabularies, feature columns),
                               evaluated.pt when the served model is a refit on every day (training.refit): the
                               held-out model that metrics.json describes
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

from nightrec.config import PROJECT_ROOT
from nightrec.storage import read_json, swap_into_place, temp_sibling, write_json_atomic

CHAMPION_FILE = "champion.json"
EVALUATED_FILE = "evaluated.pt"


def models_root(warehouse_root: Path) -> Path:
    return warehouse_root / "models"


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
    target = models_root(warehouse_root) / name / version
    tmp = temp_sibling(target)
    tmp.mkdir(parents=True)
    for filename, write in writers.items():
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
) -> Path:
    """An embedding model's version: weights, user and item embeddings, metrics, manifest; and, when the served
    model is a refit on every day, the held-out model the metrics belong to (evaluated.pt, re-scored by the gate)."""
    writers: dict[str, Callable[[Path], None]] = {
        "weights.pt": lambda path: torch.save(state_dict, path),
        "user_embeddings.parquet": lambda path: pq.write_table(user_embeddings, path),
        "item_embeddings.parquet": lambda path: pq.write_table(item_embeddings, path),
    }
    if evaluated is not None:
        writers[EVALUATED_FILE] = lambda path: torch.save(evaluated, path)
    return write_version(warehouse_root, name, version, writers, metrics, manifest)


def evaluated_weights(directory: Path) -> dict[str, Any]:
    """The weights whose metrics a version reports: evaluated.pt when the served model is a refit, else weights.pt
    (each with its vocabularies and, since refits exist, its architecture)."""
    path = directory / EVALUATED_FILE
    return torch.load(path if path.exists() else directory / "weights.pt", map_location="cpu", weights_only=False)


def champion(warehouse_root: Path, name: str) -> dict[str, Any] | None:
    path = models_root(warehouse_root) / name / CHAMPION_FILE
    return read_json(path) if path.exists() else None


def set_champion(warehouse_root: Path, name: str, pointer: dict[str, Any]) -> None:
    write_json_atomic(models_root(warehouse_root) / name / CHAMPION_FILE, pointer)


def model_dir(warehouse_root: Path, name: str, version: str) -> Path:
    return models_root(warehouse_root) / name / version
