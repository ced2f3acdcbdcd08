"""The night's embedding models: the split and its features, training stopped early on each model's use, the
held-out evaluation, the champion gate, the refit on every day and the embeddings the candidate job reads.

Split (training.data.split_for): with E the last data day and S = E + 1, the models train on the days before
C = T - ranker_days, stop early on [C, T) and are evaluated on [T, E], T = S - eval_days.

Each model is stopped and gated on the metric of its use:
- ``two_tower`` retrieves: Recall@20 of the validation days' purchases (users embedded as of C, items its vocabulary)
  picks its epoch; NDCG@20 of the held-out window's purchases gates it. Its in-batch loss is not the criterion (it
  rose every epoch while retrieval improved).
- the ordinal models (GNOLR, its baselines) classify how far an exposure goes: their mean AUC over the level
  boundaries picks the epoch and gates them. GNOLR's retrieval adds log q(item) back to its score (trained against
  items drawn by popularity q, its inner product alone prefers the long tail); both are reported.

Retrieval ranks only the items a model trained on: an item it never saw has no vector of its own (id 0 is padding),
so it stays out of that model's lists until a later night trains on it; other sources still propose it.

Outputs per model (models/<kind>/<E>/, training/registry.py): the served model (a refit on every day through E when
``training.refit``, else the held-out one) with its user and item embeddings as of S for every user known by E; the
held-out model (evaluated.pt) with its embeddings as of every anchor from C to the last evaluation anchor
(anchors/ds=A/), which the candidate job scores the ranker's anchors with; metrics, gate and manifest.

With ``training.processes`` > 1, :func:`train_models` starts ``torchrun`` on this module (:func:`main`): every process
prepares the same split (rank 0 fetches the features, the others read them), trains each model on its share of the
steps (training/distributed.py), and rank 0 alone evaluates, gates and writes; its report comes back to the caller.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from nightrec.adapters import load_adapter
from nightrec.anchors import AnchorPlan, plan_for
from nightrec.config import ORDINAL_KINDS, PROJECT_ROOT, Settings
from nightrec.errors import InputError, NightrecError
from nightrec.logs import show_progress
from nightrec.warehouse import Warehouse, champion
from training import data, distributed, metrics, ordinal, registry, trainer
from training.towers import Inputs
from training.two_tower import RetrievalTwoTower

log = logging.getLogger(__name__)

K = 20  # the cut-off of the retrieval metrics (Recall@20, NDCG@20: the quality bar's)


def gate_metric(kind: str) -> str:
    """The metric a model is gated on: its use's (retrieval for the two-tower model, classification otherwise)."""
    return "ndcg@20" if kind == "two_tower" else "auc_mean"


@dataclass
class Prepared:
    """Everything the models of one run share: split, vocabularies, feature files, evaluation targets."""

    split: data.Split
    levels: int
    users: data.Vocabulary
    items: data.Vocabulary
    attributes: data.ItemAttributes
    train: data.FeatureFiles
    validation: data.FeatureFiles
    evaluation: data.FeatureFiles
    base_rates: list[float]
    relevant: dict[str, set[str]]  # the held-out window's purchases per buyer
    validation_relevant: dict[str, set[str]]  # the validation days' purchases per buyer
    catalogue: list[str]  # items seen before T
    item_users: dict[str, int]
    n_history_users: int
    item_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_examples: pd.DataFrame = field(default_factory=pd.DataFrame)
    negatives: dict[str, dict[str, int]] = field(default_factory=dict)
    work_dir: Path = Path()

    @property
    def vocabularies(self) -> data.Vocabularies:
        return data.Vocabularies(self.users, self.items, self.attributes)


@dataclass
class RefitData:
    """Every day through E as one training set (training.refit): what the served model learns from."""

    levels: int
    users: data.Vocabulary
    items: data.Vocabulary
    attributes: data.ItemAttributes
    train: data.FeatureFiles
    base_rates: list[float]
    item_counts: np.ndarray
    data_range: tuple[date, date]
    work_dir: Path

    @property
    def vocabularies(self) -> data.Vocabularies:
        return data.Vocabularies(self.users, self.items, self.attributes)


def last_data_day(settings: Settings) -> date:
    """The run's last data day E: the configured run date, else the last day in the examples mart."""
    if settings.run_date is not None:
        return settings.run_date
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wh = Warehouse.of(settings)
    table = pq.read_table(wh.mart_export(data.EXAMPLES_MART), columns=["ds"])
    return pc.max(table.column("ds")).as_py()


def purchases(examples: pd.DataFrame, top_level: int) -> dict[str, set[str]]:
    """Items each user bought (reached the top level on) in the examples."""
    bought = examples[examples["category"] == top_level]
    return {str(u): set(g.astype(str)) for u, g in bought.groupby("user_id")["item_id"]}


def prepare(settings: Settings, last_day: date, seed: int, work_dir: Path) -> Prepared:
    """Split, sample negatives (seeded) and fetch point-in-time features for the train, validation and evaluation
    examples."""
    t = settings.training
    adapter = load_adapter(settings.source)
    split = data.split_for(adapter.history_start, last_day, t)
    train_ex = data.load_examples(settings, *split.train)
    val_ex = data.load_examples(settings, *split.validation)
    eval_ex = data.load_examples(settings, *split.evaluation)
    if train_ex.empty or eval_ex.empty:
        raise InputError(f"No training or evaluation examples for split {split} under {settings.warehouse_root}")
    users, items = data.Vocabulary.of(train_ex["user_id"]), data.Vocabulary.of(train_ex["item_id"])
    attributes = data.ItemAttributes.load(settings, items)
    popularity = train_ex["item_id"].value_counts().sort_index()
    rng = np.random.default_rng(seed)
    frames, negatives = {}, {}
    for name, ex in (("train", train_ex), ("validation", val_ex), ("evaluation", eval_ex)):
        sampled = data.sample_negatives(ex, popularity, t.negatives, rng)
        negatives[name] = {"real": len(ex), "drawn": sampled.drawn, "collisions_discarded": sampled.collisions}
        frames[name] = pd.concat([ex, sampled.rows], ignore_index=True)
    files = {}
    columns = None
    for name, frame in frames.items():
        out = work_dir / "features" / name  # a resumed run: the same seed gives the same rows, fetched already
        files[name] = data.cached_features(
            out,
            lambda frame=frame, out=out, name=name, columns=columns: data.fetch_features(
                settings, frame, users, items, attributes, out, columns, name, shuffle_seed=seed
            ),
        )
        columns = (files[name].user_columns, files[name].item_columns)

    before_t = pd.concat([train_ex, val_ex], ignore_index=True)
    return Prepared(
        split=split,
        levels=adapter.max_level,
        users=users,
        items=items,
        attributes=attributes,
        train=files["train"],
        validation=files["validation"],
        evaluation=files["evaluation"],
        base_rates=ordinal.exceed_rates(frames["train"]["category"].to_numpy(), adapter.max_level).tolist(),
        relevant=purchases(eval_ex, adapter.max_level),
        validation_relevant=purchases(val_ex, adapter.max_level),
        catalogue=sorted(before_t["item_id"].astype(str).unique()),
        item_users=before_t.groupby("item_id")["user_id"].nunique().to_dict(),
        n_history_users=before_t["user_id"].nunique(),
        item_counts=np.bincount(items.index(train_ex["item_id"]), minlength=len(items)),
        train_examples=train_ex,
        negatives=negatives,
        work_dir=work_dir,
    )


Model = ordinal.OrdinalTwoTower | RetrievalTwoTower


def architecture(kind: str, prepared: Prepared | RefitData, settings: Settings) -> dict[str, Any]:
    """Everything needed to rebuild a model before loading its weights (kept in its manifest)."""
    t = settings.training
    return {
        "kind": kind,
        "n_users": len(prepared.users),
        "n_items": len(prepared.items),
        "n_user_dense": len(prepared.train.user_columns) + 1,  # + the "view had a row" indicator
        "n_item_dense": len(prepared.train.item_columns) + 1,
        "levels": prepared.levels,
        "base_rates": prepared.base_rates,
        "sequence_length": settings.pipeline.sequence_length,
        "item_attribute_values": prepared.attributes.cardinalities(),
        "dim": t.retrieval_dim if kind == "two_tower" else t.dim,
        "hidden": t.hidden,
        "gamma": t.gamma,
        "temperature": t.temperature,
        "learnable_cut_points": t.learnable_cut_points,
    }


def build_model(spec: dict[str, Any], item_counts: np.ndarray | None = None) -> Model:
    common = {
        "n_users": spec["n_users"],
        "n_items": spec["n_items"],
        "n_user_dense": spec["n_user_dense"],
        "n_item_dense": spec["n_item_dense"],
        "dim": spec["dim"],
        "hidden": spec["hidden"],
        "sequence_length": spec["sequence_length"],
        "item_attribute_values": spec.get("item_attribute_values", ()),  # () for models trained before attributes
    }
    if spec["kind"] == "two_tower":
        counts = np.zeros(spec["n_items"]) if item_counts is None else item_counts  # a loaded model brings log Q
        return RetrievalTwoTower(levels=spec["levels"], item_counts=counts, temperature=spec["temperature"], **common)
    return ordinal.OrdinalTwoTower(
        spec["kind"],
        base_rates=spec["base_rates"],
        gamma=spec["gamma"],
        learnable_cut_points=spec["learnable_cut_points"],
        **common,
    )


def log_q(item_counts: np.ndarray) -> np.ndarray:
    """log q(item) per vocabulary row (row 0 included): the share of the training examples the item had, each item
    counted once more (finite for every item). GNOLR's negatives were drawn by it; its retrieval adds it back."""
    counts = np.asarray(item_counts, dtype=np.float64) + 1.0
    return np.log(counts / counts.sum())


def _loss(model: torch.nn.Module, inputs: Inputs) -> torch.Tensor:
    return model.batch_loss(inputs)


def _fit(
    kind: str,
    source: Prepared | RefitData,
    settings: Settings,
    seed: int,
    device: torch.device,
    mixed: bool,
    *,
    validation: Callable[[], Iterator[data.Batch]] | None,
    epochs: int,
    patience: int,
    label: str,
    validation_score: Callable[[torch.nn.Module], float] | None = None,
    validation_loss: bool = True,
) -> tuple[Model, trainer.FitResult]:
    """A fresh model of `kind` trained on `source.train` (checkpoints under its work dir, named by label and seed)."""
    t = settings.training
    w = distributed.world()
    batch_size = max(1, t.batch_size // w.size)  # a step's examples over all processes: batch_size, as with one
    trainer.seed_everything(seed)
    model = build_model(architecture(kind, source, settings), source.item_counts)
    result = trainer.fit(
        model,
        _loss,
        train=lambda epoch: data.batches(source.train, batch_size, shuffle=True, seed=seed * 1000 + epoch),
        validation=validation,
        device=device,
        mixed_precision=mixed,
        epochs=epochs,
        learning_rate=t.learning_rate,
        patience=patience,
        checkpoint_dir=source.work_dir / "checkpoints" / f"{label}-seed{seed}",
        name=label,
        batches_per_epoch=-(-source.train.rows // batch_size) // w.size,
        validation_score=validation_score,
        validation_loss=validation_loss,
    )
    return model, result


def train_model(
    kind: str, prepared: Prepared, settings: Settings, seed: int, device: torch.device, mixed: bool
) -> tuple[Model, trainer.FitResult]:
    """Train on the training days; keep the epoch with the best validation score of the model's use."""
    t = settings.training

    def validation() -> Iterator[data.Batch]:
        return data.batches(prepared.validation, 8192)

    if kind == "two_tower":
        day = prepared.split.validation[0]
        buyers = sorted(prepared.validation_relevant)

        def score(model: torch.nn.Module) -> float:
            source = embedding_source(model, kind, prepared, settings, buyers, day, device)
            return metrics.ranking_metrics(source.top(buyers, K), prepared.validation_relevant, K).recall

    else:
        # read once: the score runs after every epoch and the validation categories do not change
        categories = data.read_all(prepared.validation, ["category"])["category"].to_numpy()

        def score(model: torch.nn.Module) -> float:
            return validation_auc(categories, score_exposures(model, prepared.validation, device), prepared.levels)

    return _fit(
        kind,
        prepared,
        settings,
        seed,
        device,
        mixed,
        validation=validation,
        epochs=t.epochs,
        patience=t.patience,
        label=kind,
        validation_score=score,
        # the two-tower model's loss is kept as a record (it rose while retrieval improved); the ordinal models'
        # would cost a pass over every validation row and sampled item per epoch, and their AUC decides anyway
        validation_loss=kind == "two_tower",
    )


@torch.no_grad()
def score_exposures(
    model: Model,
    files: data.FeatureFiles,
    device: torch.device,
    vocabularies: data.Vocabularies | None = None,
    files_vocabularies: data.Vocabularies | None = None,
) -> np.ndarray:
    """P(k > c) (rows x T) for every row of the feature files, in file order.

    :param vocabularies: the model's vocabularies when they are not the ones the files were indexed with
        (re-scoring an earlier champion); the users, the items, the items of the behaviour sequences and the item
        attribute values are then re-indexed into the model's vocabularies.
    :param files_vocabularies: the vocabularies the files were written with (needed with `vocabularies`).
    """
    model.eval().to(device)
    remap = None
    if vocabularies is not None:
        if files_vocabularies is None:
            raise ValueError("re-indexing needs the vocabularies the files were written with")
        ids = data.read_all(files, ["user_id", "item_id"])
        sequence_items = data.reindex(files_vocabularies.items, vocabularies.items)
        attribute_values = files_vocabularies.attributes.remap_to(vocabularies.attributes.values)
        remap = (vocabularies.users.index(ids["user_id"]), vocabularies.items.index(ids["item_id"]), sequence_items)
    out, offset = [], 0
    for batch in data.batches(files, 8192):
        if remap is not None:
            batch.user = remap[0][offset : offset + len(batch)]
            batch.item = remap[1][offset : offset + len(batch)]
            batch.seq_items = remap[2][batch.seq_items]
            batch.item_attrs = np.stack([m[batch.item_attrs[:, a]] for a, m in enumerate(attribute_values)], axis=1)
        offset += len(batch)
        out.append(model(trainer.to_tensors(batch, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.boundaries))


@torch.no_grad()
def embed(
    model: Model,
    vocabularies: data.Vocabularies,
    columns: tuple[list[str], list[str]],
    settings: Settings,
    side: str,
    ids: list[str],
    at: date,
    work_dir: Path,
    device: torch.device,
) -> np.ndarray:
    """Unified embeddings of users or items with their features as of `at` 00:00 (features through at - 1)."""
    frame = pd.DataFrame(
        {
            "user_id": ids if side == "user" else [""] * len(ids),
            "item_id": ids if side == "item" else [""] * len(ids),
            "category": 0,
            "example_ts": data.midnight(at),
            "ds": at,
        }
    )
    # The features of these ids at this time do not depend on the model: one Feast call serves every model of the
    # run (evaluation, validation, exports embed the same users and items), keyed by what the encoding depends on.
    parts = [side, str(at), *ids, "|", *vocabularies.users.ids, "|", *vocabularies.items.ids]
    parts += [v for a in data.ITEM_ATTRIBUTES for v in ("|", *vocabularies.attributes.values[a])]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    out = work_dir / "features" / f"embed-{side}-{at}-{key}"
    files = data.cached_features(
        out, lambda: data.fetch_features(settings, frame, *vocabularies, out, columns, label=f"{side}s at {at}")
    )
    model.eval().to(device)
    vectors = []
    for batch in data.batches(files, 8192):
        inputs = trainer.to_tensors(batch, device)
        tower = model.user_vectors(inputs) if side == "user" else model.item_vectors(inputs)
        vectors.append(model.unified(tower).float().cpu().numpy())
    return np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)


@dataclass
class EmbeddingSource:
    """A model's unified embeddings at one time: users and its vocabulary's items, and how it retrieves."""

    name: str
    users: dict[str, int]
    user_vectors: np.ndarray
    items: list[str]
    item_vectors: np.ndarray
    bias: np.ndarray  # added to every item's score (GNOLR: log q; zeros otherwise)
    scale: float = 1.0  # GNOLR: gamma, so the bias is on the scale of its logits

    def top(self, users: list[str], k: int) -> dict[str, list[str]]:
        """The k items with the largest scale x inner product + bias per user (users without a vector are left out);
        ties by item order."""
        from nightrec.scoring import top_k

        known = [u for u in users if u in self.users]
        if not known or not self.items:
            return {}
        vectors = self.user_vectors[[self.users[u] for u in known]] * self.scale
        # the bias as one more dimension: score = <[scale u, 1], [v, bias]>
        best = top_k(
            np.hstack([vectors, np.ones((len(known), 1), np.float32)]).astype(np.float32),
            np.hstack([self.item_vectors, self.bias[:, None]]).astype(np.float32),
            k,
        )
        return {u: [self.items[j] for j in best.items[n, : best.counts[n]]] for n, u in enumerate(known)}


def item_bias(model: Model, kind: str, vocabularies: data.Vocabularies, counts: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-item bias over the vocabulary's items, scale) of a model's retrieval score."""
    if kind != "gnolr":
        return np.zeros(len(vocabularies.items) - 1), 1.0
    return log_q(counts)[1:], float(model.gamma)


def embedding_source(
    model: Model,
    kind: str,
    prepared: Prepared,
    settings: Settings,
    users: list[str],
    at: date,
    device: torch.device,
    vocabularies: data.Vocabularies | None = None,
    counts: np.ndarray | None = None,
) -> EmbeddingSource:
    """A model's retrieval as of `at`: the given users and its own vocabulary's items (with features through at - 1);
    `vocabularies` and `counts` are the model's when they are not this run's (a champion)."""
    vocabularies = vocabularies or prepared.vocabularies
    counts = prepared.item_counts if counts is None else counts
    columns = (prepared.train.user_columns, prepared.train.item_columns)
    items = list(vocabularies.items.ids)
    args = (model, vocabularies, columns, settings)
    user_vectors = embed(*args, "user", users, at, prepared.work_dir, device)
    item_vectors = embed(*args, "item", items, at, prepared.work_dir, device)
    bias, scale = item_bias(model, kind, vocabularies, counts)
    return EmbeddingSource(kind, {u: n for n, u in enumerate(users)}, user_vectors, items, item_vectors, bias, scale)


def boundary_aucs(categories: np.ndarray, exceed: np.ndarray, levels: int) -> dict[str, float]:
    """AUC of P(k > c) at every level boundary: c >= 1 over the real exposures, c = 0 (a real exposure against a
    sampled item) over every row."""
    real = categories >= 1
    out = {f"auc_c{c}": v for c, v in metrics.auc_per_level(categories[real], exceed[real], range(1, levels)).items()}
    out["auc_sampled_c0"] = metrics.auc(categories > 0, exceed[:, 0])
    return out


def validation_auc(categories: np.ndarray, exceed: np.ndarray, levels: int) -> float:
    """The ordinal models' early-stopping score: the mean of `boundary_aucs` on the validation days, given their
    categories and P(k > c). Their loss weighs the sampled boundary most (it is in every term of GNOLR's nested loss
    and has the most positives for the others), so a falling validation loss can hide falling AUCs at the level
    boundaries that evaluation reports."""
    values = [v for v in boundary_aucs(categories, exceed, levels).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def ordinal_metrics(prepared: Prepared, exceed: np.ndarray) -> dict[str, float]:
    frame = data.read_all(prepared.evaluation, ["user_id", "category"])
    categories = frame["category"].to_numpy()
    real = categories >= 1
    out = boundary_aucs(categories, exceed, prepared.levels)
    values = [v for v in out.values() if not np.isnan(v)]
    out["auc_mean"] = float(np.mean(values)) if values else float("nan")
    top = prepared.levels - 1
    if top >= 1:
        out["gauc_top"] = metrics.gauc(frame["user_id"].to_numpy()[real], categories[real] > top, exceed[real, top])
    return out


def retrieval_metrics(prepared: Prepared, recommended: dict[str, list[str]], prefix: str = "") -> dict[str, float]:
    """Recall/NDCG/MRR@K of the held-out purchases, coverage, novelty and exposure fairness of the lists."""
    ranking = metrics.ranking_metrics(recommended, prepared.relevant, K)
    fairness = metrics.exposure_fairness(recommended, prepared.catalogue, K)
    out = {
        "eval_users": ranking.users,
        f"recall@{K}": ranking.recall,
        f"ndcg@{K}": ranking.ndcg,
        f"mrr@{K}": ranking.mrr,
        f"coverage@{K}": metrics.coverage(recommended, len(prepared.catalogue), K),
        f"novelty@{K}": metrics.novelty(recommended, prepared.item_users, prepared.n_history_users, K),
        f"gini@{K}": fairness.gini,
        f"gini_corrected@{K}": fairness.gini_corrected,
        f"entropy@{K}": fairness.entropy,
        f"entropy_corrected@{K}": fairness.entropy_corrected,
    }
    return {f"{prefix}{key}": value for key, value in out.items()}


@dataclass
class ModelOutcome:
    kind: str
    metrics: dict[str, Any]
    fit: dict[str, Any]
    exceed: np.ndarray
    recommended: dict[str, list[str]]
    model: Model


def evaluate_model(
    model: Model,
    kind: str,
    vocabularies: data.Vocabularies,
    prepared: Prepared,
    settings: Settings,
    device: torch.device,
    counts: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray, dict[str, list[str]]]:
    """The model's metrics on this run's held-out window: AUC per level (ordinal models) and the retrieval of its
    lists as of T over the items it trained on (GNOLR: with log q added back; its raw inner product's as
    ``uncorrected_``)."""
    own = vocabularies == prepared.vocabularies
    exceed = score_exposures(model, prepared.evaluation, device, None if own else vocabularies, prepared.vocabularies)
    users = sorted(prepared.relevant)
    source = embedding_source(
        model, kind, prepared, settings, users, prepared.split.evaluation[0], device, vocabularies, counts
    )
    recommended = source.top(users, K)
    result = retrieval_metrics(prepared, recommended)
    if kind in ORDINAL_KINDS:
        result.update(ordinal_metrics(prepared, exceed))
    if kind == "gnolr":
        raw = EmbeddingSource(
            kind, source.users, source.user_vectors, source.items, source.item_vectors, np.zeros(len(source.items))
        )
        result.update(retrieval_metrics(prepared, raw.top(users, K), prefix="uncorrected_"))
    return result, exceed, recommended


def train_and_evaluate(
    kind: str, prepared: Prepared, settings: Settings, seed: int, device: torch.device, mixed: bool
) -> ModelOutcome:
    model, fit = train_model(kind, prepared, settings, seed, device, mixed)
    result, exceed, recommended = evaluate_model(model, kind, prepared.vocabularies, prepared, settings, device)
    result["train_samples_per_s"] = fit.train_samples_per_s
    return ModelOutcome(kind, result, asdict(fit), exceed, recommended, model)


def rescore_champion(
    kind: str, prepared: Prepared, settings: Settings, device: torch.device
) -> tuple[dict[str, Any] | None, str]:
    """The current champion's metrics on this run's evaluation window, or None with the reason it cannot be scored."""
    wh = Warehouse.of(settings)
    pointer = champion(wh, kind)
    if pointer is None:
        return None, "no champion yet"
    directory = wh.model_dir(kind, pointer["version"])
    manifest = json.loads((directory / "manifest.json").read_text())
    # the held-out model the champion's metrics came from (a refit has seen this window's days)
    weights = registry.evaluated_weights(directory)
    columns, spec = manifest["feature_columns"], weights.get("architecture", manifest.get("architecture"))
    if (columns["user"], columns["item"]) != (prepared.train.user_columns, prepared.train.item_columns):
        return None, f"champion {pointer['version']} was trained on other feature columns"
    if spec is None or spec["sequence_length"] != settings.pipeline.sequence_length:
        return None, f"champion {pointer['version']} has another architecture or sequence length"
    users, items = data.Vocabulary(tuple(weights["users"])), data.Vocabulary(tuple(weights["items"]))
    # a champion from before item attributes has none: its towers ignore the attribute indices
    values = weights.get("item_attributes") or {a: () for a in data.ITEM_ATTRIBUTES}
    attributes = data.ItemAttributes.load(settings, items, values)
    model = build_model(spec)
    model.load_state_dict(weights["state_dict"])
    counts = np.asarray(weights.get("item_counts", np.zeros(len(items))), dtype=np.float64)
    vocabularies = data.Vocabularies(users, items, attributes)
    result, _, _ = evaluate_model(model, kind, vocabularies, prepared, settings, device, counts)
    return result, f"champion {pointer['version']} re-scored on this window"


def run_key(settings: Settings, last_day: date, seed: int) -> str:
    doc = {"training": asdict(settings.training), "source": settings.source, "last_day": str(last_day), "seed": seed}
    doc["code"] = registry.code_version()
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def known_users(settings: Settings, before: date) -> list[str]:
    """Every user with an exposure before `before`: who gets an embedding as of that day."""
    start = load_adapter(settings.source).history_start
    return sorted(data.load_examples(settings, start, before)["user_id"].astype(str).unique())


def embedding_tables(
    model: Model,
    kind: str,
    vocabularies: data.Vocabularies,
    counts: np.ndarray,
    prepared: Prepared,
    settings: Settings,
    at: date,
    device: torch.device,
) -> tuple[pa.Table, pa.Table]:
    """The user embeddings of every user known by E and the item embeddings of the model's vocabulary (with log q for
    GNOLR, whose candidates add it back), as of `at`. A user first seen after `at` (a buyer of a later label window)
    has no features or sequence as of `at` yet: the vector the model gives a newcomer."""
    users = known_users(settings, prepared.split.evaluation[1])
    source = embedding_source(model, kind, prepared, settings, users, at, device, vocabularies, counts)
    items = registry.embeddings_table(source.items, source.item_vectors, "item_id")
    if kind == "gnolr":
        items = items.append_column("log_q", pa.array(source.bias, pa.float64()))
    return registry.embeddings_table(users, source.user_vectors, "user_id"), items


def train_models(
    settings: Settings,
    last_day: date,
    seed: int,
    version: str,
    plan: AnchorPlan | None,
    gate_champions: bool = True,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate (and gate) every model of `training.models` and write each as `version`, with the held-out
    model's embeddings at the plan's anchors from C on and the served model's as of S.

    :param gate_champions: compare with each model's champion and move its pointer (the nightly run); off, nothing
        but the version directories is written (the benchmark's seeds).
    """
    t = settings.training
    if t.processes > 1 and not distributed.launched():
        return launch(settings, last_day, seed, version, plan, gate_champions, work_dir)
    w = distributed.join(t.device)
    device, mixed = trainer.pick_device(t.device)
    work_dir = work_dir or Warehouse.of(settings).models() / "_work" / (
        f"{version}-{run_key(settings, last_day, seed)}"
    )
    started = time.time()
    log.info(
        f"training: data through {last_day}, device {device}{' (bf16 autocast)' if mixed else ''}"
        f"{f', {w.size} data-parallel processes' if w.distributed else ''}"
    )
    with distributed.main_first(w):  # rank 0 fetches the features; the others find them fetched
        prepared = prepare(settings, last_day, seed, work_dir)
    if not w.main:
        return _train_beside_main(prepared, settings, last_day, seed, device, mixed)
    log.info(
        f"training: train {prepared.split.train[0]}..{prepared.split.train[1] - timedelta(days=1)} "
        f"({prepared.train.rows:,} rows), validation {prepared.validation.rows:,}, evaluation "
        f"{prepared.evaluation.rows:,}; {len(prepared.relevant)} buyers to retrieve for"
    )
    report: dict[str, Any] = {
        "version": version,
        "processes": w.size,
        "split": {k: [str(d) for d in v] for k, v in asdict(prepared.split).items()},
        "models": {},
    }
    manifest_base = {
        "data_range": report["split"],
        "source": settings.source,
        "seed": seed,
        "config": asdict(t),
        "code_version": registry.code_version(),
        "device": str(device),
        "processes": w.size,
        "exposure_definition": "any_event_on_day; untouched items sampled by popularity as category 0",
        "negatives": prepared.negatives,
        "base_rates": prepared.base_rates,
        "feature_columns": {"user": prepared.train.user_columns, "item": prepared.train.item_columns},
    }
    serve = last_day + timedelta(days=1)
    anchor_days = [d for d in (plan.embedded_days() if plan else []) if d < serve]
    refit: RefitData | None = None
    report["stage_seconds"] = {"prepare": round(time.time() - started, 1)}
    for kind in t.models:
        clock = time.time()
        outcome = train_and_evaluate(kind, prepared, settings, seed, device, mixed)
        stages = {"train_and_evaluate": round(time.time() - clock, 1)}
        clock = time.time()
        metric = gate_metric(kind)
        if gate_champions:
            champion_metrics, why = rescore_champion(kind, prepared, settings, device)
            decision = registry.gate(outcome.metrics, champion_metrics, t.champion_tolerance, why, metric)
        else:
            decision = {"publish": False, "reason": "not gated (benchmark)", "metric": metric}
        spec = architecture(kind, prepared, settings)
        held_out = weights_record(outcome.model, prepared.vocabularies, spec, prepared.item_counts)
        writers: dict[str, Callable[[Path], None]] = {}
        for day in anchor_days:  # the held-out model scores the ranker's anchors from C on
            users, items = embedding_tables(
                outcome.model, kind, prepared.vocabularies, prepared.item_counts, prepared, settings, day, device
            )
            writers.update(registry.table_writers(f"anchors/ds={day.isoformat()}", users, items))
        stages["anchor_embeddings"] = round(time.time() - clock, 1)
        clock = time.time()
        served, vocabularies, counts, refit_record = outcome.model, prepared.vocabularies, prepared.item_counts, None
        if t.refit:
            with distributed.main_first(w):
                refit = refit or prepare_refit(settings, last_day, seed, prepared)
            served, refit_record = refit_model(kind, refit, settings, seed, device, mixed, outcome.fit["best_epoch"])
            vocabularies, counts, spec = refit.vocabularies, refit.item_counts, architecture(kind, refit, settings)
        stages["refit"] = round(time.time() - clock, 1)
        clock = time.time()
        users, items = embedding_tables(served, kind, vocabularies, counts, prepared, settings, serve, device)
        path = registry.write_model(
            settings.warehouse_root,
            kind,
            version,
            weights_record(served, vocabularies, spec, counts),
            users,
            items,
            {"metrics": outcome.metrics, "gate": decision, "fit": outcome.fit},
            {
                **manifest_base,
                "model": kind,
                "version": version,
                "embeddings_as_of": str(serve),
                "anchor_embeddings": [str(d) for d in anchor_days],
                "architecture": spec,
                "served_model": refit_record or {"trained_on": report["split"]["train"], "refit": False},
                **({"head": served.head()} if hasattr(served, "head") else {}),
                **({"evaluated_head": outcome.model.head()} if hasattr(outcome.model, "head") else {}),
            },
            held_out if refit_record else None,
            writers,
        )
        if decision["publish"]:
            registry.set_champion(
                settings.warehouse_root, kind, {"version": version, "metrics": outcome.metrics, "gate": decision}
            )
        stages["export"] = round(time.time() - clock, 1)
        report["stage_seconds"][kind] = stages
        report["models"][kind] = {"metrics": outcome.metrics, "gate": decision, "path": str(path)}
        verdict = "published" if decision["publish"] else "kept the champion"
        served_from = " (served model refit on every day)" if refit_record else ""
        log.info(f"training: {kind} -> {path} ({verdict}: {decision['reason']}){served_from}; seconds {stages}")
    distributed.barrier(w)  # the other processes are done with the features
    shutil.rmtree(work_dir, ignore_errors=True)  # features and checkpoints: only needed to resume this run
    report["seconds"] = round(time.time() - started, 1)
    return report


def _train_beside_main(
    prepared: Prepared, settings: Settings, last_day: date, seed: int, device: torch.device, mixed: bool
) -> dict[str, Any]:
    """A process other than rank 0: the same fits in the same order as rank 0's `train_models` (each of its steps
    waits for theirs), nothing evaluated or written."""
    t, w = settings.training, distributed.world()
    refit: RefitData | None = None
    for kind in t.models:
        _, fit = train_model(kind, prepared, settings, seed, device, mixed)
        if t.refit:
            with distributed.main_first(w):
                refit = refit or prepare_refit(settings, last_day, seed, prepared)
            refit_model(kind, refit, settings, seed, device, mixed, fit.best_epoch)
    distributed.barrier(w)
    return {"rank": w.rank}


def run(settings: Settings, last_day: date | None = None, seed: int | None = None) -> dict[str, Any]:
    """The nightly models: train, evaluate, gate and write every model of `training.models` for data day E, with the
    embeddings the candidate job needs for the night's anchors (nightrec/anchors.py)."""
    seed = settings.training.seed if seed is None else seed
    last_day = last_day or last_data_day(settings)
    adapter = load_adapter(settings.source)
    plan = plan_for(settings, adapter.history_start, last_day) if settings.training.ranker else None
    return train_models(settings, last_day, seed, last_day.isoformat(), plan)


def weights_record(
    model: Model, vocabularies: data.Vocabularies, spec: dict[str, Any], counts: np.ndarray
) -> dict[str, Any]:
    """What weights.pt (and evaluated.pt) hold: everything needed to rebuild the model, index its inputs and score
    its retrieval (the item counts of its training examples: GNOLR's log q)."""
    return {
        "state_dict": model.state_dict(),
        "users": vocabularies.users.ids,
        "items": vocabularies.items.ids,
        "item_attributes": vocabularies.attributes.values,
        "item_counts": np.asarray(counts, dtype=np.float64).tolist(),
        "architecture": spec,
    }


def prepare_refit(settings: Settings, last_day: date, seed: int, prepared: Prepared) -> RefitData:
    """Every day of the history through E as training examples (real exposures and sampled negatives, as in
    `prepare`), with vocabularies of their own and features fetched with the held-out run's feature columns."""
    t = settings.training
    start, end = load_adapter(settings.source).history_start, last_day + timedelta(days=1)
    examples = data.load_examples(settings, start, end)
    users, items = data.Vocabulary.of(examples["user_id"]), data.Vocabulary.of(examples["item_id"])
    attributes = data.ItemAttributes.load(settings, items)
    popularity = examples["item_id"].value_counts().sort_index()
    sampled = data.sample_negatives(examples, popularity, t.negatives, np.random.default_rng([seed, 1]))
    frame = pd.concat([examples, sampled.rows], ignore_index=True)
    out = prepared.work_dir / "features" / "refit"
    columns = (prepared.train.user_columns, prepared.train.item_columns)
    files = data.cached_features(
        out,
        lambda: data.fetch_features(settings, frame, users, items, attributes, out, columns, "refit", seed),
    )
    return RefitData(
        levels=prepared.levels,
        users=users,
        items=items,
        attributes=attributes,
        train=files,
        base_rates=ordinal.exceed_rates(frame["category"].to_numpy(), prepared.levels).tolist(),
        item_counts=np.bincount(items.index(examples["item_id"]), minlength=len(items)),
        data_range=(start, end),
        work_dir=prepared.work_dir,
    )


def refit_model(
    kind: str, refit: RefitData, settings: Settings, seed: int, device: torch.device, mixed: bool, epochs: int
) -> tuple[Model, dict[str, Any]]:
    """The model trained again on every day for `epochs` epochs (the held-out run's best), no early stopping."""
    epochs = max(epochs, 1)
    model, result = _fit(
        kind,
        refit,
        settings,
        seed,
        device,
        mixed,
        validation=None,
        epochs=epochs,
        patience=epochs,
        label=f"{kind}-refit",
    )
    record = {
        "refit": True,
        "trained_on": [str(d) for d in refit.data_range],
        "epochs": result.epochs_run,
        "rows": refit.train.rows,
        "users": len(refit.users) - 1,
        "items": len(refit.items) - 1,
        "train_samples_per_s": result.train_samples_per_s,
    }
    return model, record


def launch(
    settings: Settings,
    last_day: date,
    seed: int,
    version: str,
    plan: AnchorPlan | None,
    gate_champions: bool,
    work_dir: Path | None,
) -> dict[str, Any]:
    """`train_models` in ``training.processes`` processes on this machine, started by torchrun; rank 0's report.

    The arguments travel as a pickle (these very objects, settings overrides and all: the processes run the same
    code). torchrun stops every process when one fails; that failure is raised here, the processes' output above it.
    """
    n = settings.training.processes
    with tempfile.TemporaryDirectory(prefix="nightrec-torchrun-") as tmp:
        pickled, report = Path(tmp) / "arguments.pkl", Path(tmp) / "report.json"
        arguments = (settings, last_day, seed, version, plan, gate_champions, work_dir)
        pickled.write_bytes(pickle.dumps(arguments))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # one machine: a rendezvous of its own on a free local port
            f"--nproc-per-node={n}",
            "-m",
            "training.run",
            "--arguments",
            str(pickled),
            "--report",
            str(report),
        ]
        log.info(f"training: {n} data-parallel processes (torchrun)")
        env = {
            **os.environ,
            **settings.environment(),
            # one machine: gloo (CPU processes) talks over the loopback, whatever the host name resolves to
            "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        }
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False)
        if done.returncode != 0 or not report.exists():
            raise NightrecError(f"data-parallel training ({n} processes) failed with exit code {done.returncode}")
        return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    """One of torchrun's processes (what `launch` starts)."""
    parser = argparse.ArgumentParser(description="One process of a data-parallel training run (started by torchrun).")
    parser.add_argument("--arguments", type=Path, required=True, help="train_models' arguments, pickled by `launch`")
    parser.add_argument("--report", type=Path, required=True, help="where rank 0 writes its report (JSON)")
    args = parser.parse_args(argv)
    arguments = pickle.loads(args.arguments.read_bytes())
    settings: Settings = arguments[0]
    w = distributed.join(settings.training.device)
    show_progress(logging.INFO if w.main else logging.WARNING)  # one process's progress, not one line per process
    try:
        report = train_models(*arguments)
        if w.main:
            args.report.write_text(json.dumps(report, default=str))
    finally:
        distributed.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
