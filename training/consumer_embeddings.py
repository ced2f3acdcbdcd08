"""The nightly consumer embedding table: the consumer encoder trained on every consumer's sequence as of night D.

    models/consumer_encoder/<D>/user_embeddings.parquet   user_id, embedding (float32[segments.dim], L2-normalised)
    models/consumer_encoder/<D>/weights.pt                the encoder, its item and attribute vocabularies
    models/consumer_encoder/<D>/metrics.json              epochs, validation lookalike recall, seconds, device
    models/consumer_encoder/<D>/manifest.json             day, settings, code version

Every consumer with a ``silver/sequences`` row on or before D gets a vector (the segments job clusters them all);
the items' attributes (category, subcategory, colour) and the consumers' (age, membership) come from the bronze
snapshots where the source delivers them. The
epoch kept is the one whose embeddings expand validation seeds best (``nightrec.lookalike.validation_recall``): the
buyers (the source's top level; a lower level when too few buy) of the items ranked 4th to 8th by such consumers in
the sequences, 30% of each hidden, recall at 10x. The top three items are left out because the benchmark reports
them. A night without three such seeds of ten consumers keeps the last epoch and says so.

Night to night the table keeps one frame: the encoder continues from the previous night's weights (items by id)
when their shape matches, and tonight's vectors are rotated onto the previous night's (orthogonal Procrustes on the
consumers in both), so the segments job can match segments by their centroids. A rerun of a night replaces its
version whole and gives the same table (it starts from the nights before it only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import torch

from nightrec.adapters import load_adapter
from nightrec.config import Settings
from nightrec.errors import HistoryTooShort
from nightrec.lookalike import validation_recall
from nightrec.warehouse import Warehouse, complete_nights
from training import consumer_encoder as ce
from training import registry
from training.trainer import pick_device

log = logging.getLogger(__name__)

KIND = "consumer_encoder"
MIN_SEED = 10  # a validation seed needs this many buyers (three hidden, seven expanded)
VALIDATION_RANKS = slice(3, 8)  # items ranked 4th..8th by buyers


def validation_seeds(data: ce.Sequences, top_level: int) -> tuple[int, list[np.ndarray]]:
    """(the level, positions of the consumers who reached it on each of the items ranked 4th to 8th by such
    consumers): the top level (buyers) where that gives three seeds of MIN_SEED, else the next level down (recent
    sequences hold few purchases on a small history)."""
    for level in range(top_level, 0, -1):
        rows, cols = np.nonzero((data.levels >= level) & (data.items > ce.UNKNOWN))
        if not len(rows):
            continue
        pairs = np.unique(np.stack([data.items[rows, cols], rows], axis=1), axis=0)  # (item, consumer), distinct
        items, counts = np.unique(pairs[:, 0], return_counts=True)
        order = np.lexsort((items, -counts))  # most consumers first, ties by item index
        seeds = [np.sort(pairs[pairs[:, 0] == item, 1]) for item in items[order][VALIDATION_RANKS]]
        seeds = [seed for seed in seeds if len(seed) >= MIN_SEED]
        if len(seeds) >= 3:
            return level, seeds
    return 0, []


def previous_version(wh: Warehouse, night: date) -> date | None:
    """The latest earlier night with a consumer embedding table."""
    nights = complete_nights(wh.models() / KIND, before=night, marker="*/user_embeddings.parquet")
    return nights[-1] if nights else None


def align(embeddings: np.ndarray, users: np.ndarray, previous: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    """Rotate tonight's embeddings onto the previous night's frame (orthogonal Procrustes on the consumers in both):
    a retrained encoder may express the same geometry in other coordinates, and the segments job matches centroids
    across nights in one frame. A rotation keeps every distance, so nothing a consumer's vector says is changed."""
    before = pd.Series(np.arange(len(previous)), index=previous["user_id"].astype(str))
    common = np.flatnonzero(pd.Index(users).isin(before.index))
    dim = embeddings.shape[1]
    if len(common) <= dim:
        return embeddings, {"aligned": False, "common_consumers": len(common)}
    new = embeddings[common].astype(np.float64)
    old = np.stack(previous["embedding"].to_numpy())[before[users[common]].to_numpy()].astype(np.float64)
    u, _, vt = np.linalg.svd(new.T @ old)
    rotation = u @ vt
    aligned = (embeddings.astype(np.float64) @ rotation).astype(np.float32)
    return aligned, {
        "aligned": True,
        "common_consumers": len(common),
        # mean cosine of a consumer's vector with their previous night's: how far consumers moved in one night
        "mean_cosine_to_previous": round(float(np.mean(np.sum((new @ rotation) * old, axis=1))), 6),
    }


def encoder_settings(settings: Settings, fine_tune: bool = False) -> ce.EncoderSettings:
    s = settings.segments
    return ce.EncoderSettings(
        dim=s.dim,
        layers=s.layers,
        objective=s.objective,
        epochs=s.epochs,
        learning_rate=s.fine_tune_learning_rate if fine_tune else s.learning_rate,
        seed=settings.training.seed,
    )


def run(settings: Settings, day: date) -> dict[str, Any]:
    """Train the encoder on the sequences as of ``day`` and write the night's consumer embedding table.

    :raises HistoryTooShort: no consumer has a sequence by ``day``.
    """
    wh = Warehouse.of(settings)
    adapter = load_adapter(settings.source)
    frame = ce.latest_sequences(wh.silver_sequences(), day)
    if len(frame) < 2:
        raise HistoryTooShort(f"{len(frame)} consumer(s) have a behaviour sequence by {day}: nothing to embed")
    data = ce.encode(
        frame,
        settings.pipeline.sequence_length,
        item_attributes=ce.item_attribute_frame(wh, adapter.item_attributes is not None),
        consumer_attributes=ce.consumer_attribute_frame(wh, adapter.user_attributes is not None),
    )
    seed_level, seeds = validation_seeds(data, adapter.max_level)
    if seeds:

        def validate(embeddings: np.ndarray) -> float:
            return validation_recall(embeddings, seeds)
    else:
        log.info(
            f"consumer encoder: no three items with {MIN_SEED} consumers among ranks 4-8 by {day}; "
            "the last epoch is kept"
        )
        epochs = iter(range(1, settings.segments.epochs + 1))

        def validate(embeddings: np.ndarray) -> float:
            return float(next(epochs))  # every epoch better than the one before: the last is kept

    device, _ = pick_device(settings.training.device)
    earlier = previous_version(wh, day)
    start_from = None
    config = encoder_settings(settings)
    if earlier is not None:
        record = torch.load(
            wh.model_dir(KIND, earlier.isoformat()) / "weights.pt", map_location="cpu", weights_only=False
        )
        if ce.compatible(record, config, adapter.max_level, data.items.shape[1]):
            start_from = record
            config = encoder_settings(settings, fine_tune=True)
    log.info(
        f"consumer encoder: {len(data.user_ids):,} consumers, {len(data.vocabulary):,} items, objective "
        f"{config.objective}, {config.epochs} epochs on {device}, {len(seeds)} validation seeds (level >= "
        f"{seed_level}), attribute values: "
        + (", ".join(f"{k} {len(v)}" for k, v in data.attribute_values.items() if v) or "none")
        + ", "
        + (f"continuing from {earlier}" if start_from else "from a random start")
    )
    trained = ce.train(data, adapter.max_level, config, device, validate, start_from)
    embeddings, alignment = trained.embeddings, {"aligned": False}
    if earlier is not None:
        previous = pd.read_parquet(wh.consumer_embeddings(earlier))
        embeddings, alignment = align(trained.embeddings, data.user_ids, previous)
        alignment["previous_night"] = earlier.isoformat()
    metrics = {
        "consumers": len(data.user_ids),
        "items": len(data.vocabulary),
        # values of each attribute the tokens and consumers carry (0: the source has none)
        "attribute_values": {name: len(values) for name, values in data.attribute_values.items()},
        "best_epoch": trained.best_epoch,
        "validation_seeds": [len(s) for s in seeds],
        "validation_level": seed_level,
        "warm_start": start_from is not None,
        "alignment": alignment,
        "validation_recall@10x": max(h["validation"] for h in trained.history) if seeds else None,
        "history": trained.history if seeds else [{**h, "validation": None} for h in trained.history],
        "seconds": trained.seconds,
        "device": str(device),
    }
    weights = {
        "state_dict": trained.model.state_dict(),
        "vocabulary": data.vocabulary,
        "attribute_values": data.attribute_values,
        "levels": adapter.max_level,
        "length": data.items.shape[1],
        "settings": asdict(config),
    }
    table = registry.embeddings_table(list(data.user_ids), embeddings, "user_id")
    import pyarrow.parquet as pq

    started = time.time()
    directory = registry.write_version(
        settings.warehouse_root,
        KIND,
        day.isoformat(),
        {
            "weights.pt": lambda path: torch.save(weights, path),
            "user_embeddings.parquet": lambda path: pq.write_table(table, path),
        },
        metrics,
        {
            "day": day.isoformat(),
            "source": settings.source,
            "settings": asdict(settings.segments),
            "seed": settings.training.seed,
            "code_version": registry.code_version(),
        },
    )
    log.info(
        f"consumer encoder: kept epoch {trained.best_epoch} of {config.epochs}"
        + (f" (validation recall@10x {metrics['validation_recall@10x']:.3f})" if seeds else "")
        + f", {trained.seconds:.0f}s training; wrote {directory} in {time.time() - started:.1f}s"
    )
    return {"version": day.isoformat(), "path": str(directory), **{k: v for k, v in metrics.items() if k != "history"}}
