"""One training run: prepare the split and features, train the ordinal models, score the retrieval baselines,
evaluate everything on the same window, write the model directories and apply the champion gate.

Evaluation (days [T, E]):
- AUC per level boundary c on real exposures only (DESIGN.md: "Report AUCs on real exposures only"), for the
  boundaries real exposures can tell apart (c = 1..L-1), and GAUC (per user) at the top boundary (a purchase);
  the boundary between a real exposure and a sampled untouched item is reported separately as `auc_sampled_c0`.
- Retrieval of next-period purchases: for every user who buys in [T, E], the top K of the catalogue (items seen
  before T) by the unified embedding's inner product, against the items they bought: Recall/NDCG/MRR@K, coverage,
  novelty and exposure fairness. The baselines (popularity, co-visitation, own history) get the same users.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nightrec.adapters import load_adapter
from nightrec.config import Settings
from nightrec.errors import InputError
from training import data, metrics, ordinal, ranker, registry, retrieval_baselines, trainer
from training.towers import Inputs
from training.two_tower import RetrievalTwoTower

K = 20  # the cut-off of the retrieval metrics (Recall@20, NDCG@20: the quality bar's)
GATE_METRIC = "ndcg@20"


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
    history: retrieval_baselines.History
    catalogue: list[str]
    relevant: dict[str, set[str]]
    item_users: dict[str, int]
    n_history_users: int
    item_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_examples: pd.DataFrame = field(default_factory=pd.DataFrame)
    ranker_examples: pd.DataFrame = field(default_factory=pd.DataFrame)
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

    table = pq.read_table(settings.warehouse_root / "marts" / "parquet" / data.EXAMPLES_MART, columns=["ds"])
    return pc.max(table.column("ds")).as_py()


def prepare(settings: Settings, last_day: date, seed: int, work_dir: Path) -> Prepared:
    """Split, sample negatives (seeded) and fetch point-in-time features for the train, validation (the ranker's
    window) and evaluation examples."""
    t = settings.training
    adapter = load_adapter(settings.source)
    split = data.split_for(adapter.history_start, last_day, t)
    train_ex = data.load_examples(settings, *split.train)
    val_ex = data.load_examples(settings, *split.ranker)
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
    history = retrieval_baselines.History(before_t, split.evaluation[0])
    bought = eval_ex[eval_ex["category"] == adapter.max_level]
    relevant = {u: set(g.astype(str)) for u, g in bought.groupby("user_id")["item_id"]}
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
        history=history,
        catalogue=sorted(before_t["item_id"].astype(str).unique()),
        relevant=relevant,
        item_users=before_t.groupby("item_id")["user_id"].nunique().to_dict(),
        n_history_users=before_t["user_id"].nunique(),
        item_counts=np.bincount(items.index(train_ex["item_id"]), minlength=len(items)),
        train_examples=train_ex,
        ranker_examples=val_ex,
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
) -> tuple[Model, trainer.FitResult]:
    """A fresh model of `kind` trained on `source.train` (checkpoints under its work dir, named by label and seed)."""
    t = settings.training
    trainer.seed_everything(seed)
    model = build_model(architecture(kind, source, settings), source.item_counts)
    result = trainer.fit(
        model,
        _loss,
        train=lambda epoch: data.batches(source.train, t.batch_size, shuffle=True, seed=seed * 1000 + epoch),
        validation=validation,
        device=device,
        mixed_precision=mixed,
        epochs=epochs,
        learning_rate=t.learning_rate,
        patience=patience,
        checkpoint_dir=source.work_dir / "checkpoints" / f"{label}-seed{seed}",
        name=label,
        batches_per_epoch=-(-source.train.rows // t.batch_size),
        validation_score=validation_score,
    )
    return model, result


def train_model(
    kind: str, prepared: Prepared, settings: Settings, seed: int, device: torch.device, mixed: bool
) -> tuple[Model, trainer.FitResult]:
    t = settings.training

    def validation() -> Iterator[data.Batch]:
        return data.batches(prepared.validation, 8192)

    score = None
    if kind in ordinal.MODELS:  # the two-tower model stops on its loss and needs no categories
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
    # run (evaluation, ranker and export embed the same users and items), keyed by what the encoding depends on.
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
    return np.concatenate(vectors)


def boundary_aucs(categories: np.ndarray, exceed: np.ndarray, levels: int) -> dict[str, float]:
    """AUC of P(k > c) at every level boundary: c >= 1 over the real exposures, c = 0 (a real exposure against a
    sampled item) over every row."""
    real = categories >= 1
    out = {f"auc_c{c}": v for c, v in metrics.auc_per_level(categories[real], exceed[real], range(1, levels)).items()}
    out["auc_sampled_c0"] = metrics.auc(categories > 0, exceed[:, 0])
    return out


def validation_auc(categories: np.ndarray, exceed: np.ndarray, levels: int) -> float:
    """The ordinal models' early-stopping score: the mean of `boundary_aucs` on the validation days (the ranker's
    window, before evaluation), given their categories and P(k > c). Their loss weighs the sampled boundary most (it
    is in every term of GNOLR's nested loss and has the most positives for the others), so a falling validation loss
    can hide falling AUCs at the level boundaries that evaluation reports."""
    values = [v for v in boundary_aucs(categories, exceed, levels).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def ordinal_metrics(prepared: Prepared, exceed: np.ndarray) -> dict[str, float]:
    frame = data.read_all(prepared.evaluation, ["user_id", "category"])
    categories = frame["category"].to_numpy()
    real = categories >= 1
    out = boundary_aucs(categories, exceed, prepared.levels)
    top = prepared.levels - 1
    if top >= 1:
        out["gauc_top"] = metrics.gauc(frame["user_id"].to_numpy()[real], categories[real] > top, exceed[real, top])
    return out


def retrieval_metrics(prepared: Prepared, recommended: dict[str, list[str]]) -> dict[str, float]:
    ranking = metrics.ranking_metrics(recommended, prepared.relevant, K)
    fairness = metrics.exposure_fairness(recommended, prepared.catalogue, K)
    return {
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


def baseline_recommendations(prepared: Prepared) -> dict[str, dict[str, list[str]]]:
    users = sorted(prepared.relevant)
    return {name: fn(prepared.history, users, K) for name, fn in retrieval_baselines.BASELINES.items()}


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
    vocabularies: data.Vocabularies,
    prepared: Prepared,
    settings: Settings,
    device: torch.device,
) -> tuple[dict[str, Any], np.ndarray, dict[str, list[str]]]:
    """Ordinal and retrieval metrics of a model on this run's evaluation window."""
    own = vocabularies == prepared.vocabularies
    exceed = score_exposures(model, prepared.evaluation, device, None if own else vocabularies, prepared.vocabularies)
    users = sorted(prepared.relevant)
    t_day = prepared.split.evaluation[0]
    source = embedding_source(
        model, "evaluated", prepared, settings, users, prepared.catalogue, t_day, device, vocabularies
    )
    recommended = source.top(users, K)
    return {**ordinal_metrics(prepared, exceed), **retrieval_metrics(prepared, recommended)}, exceed, recommended


def train_and_evaluate(
    kind: str, prepared: Prepared, settings: Settings, seed: int, device: torch.device, mixed: bool
) -> ModelOutcome:
    model, fit = train_model(kind, prepared, settings, seed, device, mixed)
    result, exceed, recommended = evaluate_model(model, prepared.vocabularies, prepared, settings, device)
    result["train_samples_per_s"] = fit.train_samples_per_s
    return ModelOutcome(kind, result, asdict(fit), exceed, recommended, model)


def rescore_champion(
    kind: str, prepared: Prepared, settings: Settings, device: torch.device
) -> tuple[dict[str, Any] | None, str]:
    """The current champion's metrics on this run's evaluation window, or None with the reason it cannot be scored."""
    pointer = registry.champion(settings.warehouse_root, kind)
    if pointer is None:
        return None, "no champion yet"
    directory = registry.model_dir(settings.warehouse_root, kind, pointer["version"])
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
    result, _, _ = evaluate_model(model, data.Vocabularies(users, items, attributes), prepared, settings, device)
    return result, f"champion {pointer['version']} re-scored on this window"


def gate(
    new: dict[str, Any], champion_metrics: dict[str, Any] | None, tolerance: float, why_none: str = "no champion yet"
) -> dict[str, Any]:
    """Publish unless the new model is worse than the champion (re-scored on this window) by more than `tolerance`."""
    value = float(new[GATE_METRIC])
    if champion_metrics is None:
        return {"publish": True, "reason": why_none, "metric": GATE_METRIC, "new": value}
    old = float(champion_metrics[GATE_METRIC])
    publish = value >= old - tolerance
    return {
        "publish": publish,
        "reason": "not worse than the champion beyond the tolerance" if publish else "worse than the champion",
        "metric": GATE_METRIC,
        "new": value,
        "champion": old,
        "tolerance": tolerance,
    }


def run_key(settings: Settings, last_day: date, seed: int) -> str:
    doc = {"training": asdict(settings.training), "source": settings.source, "last_day": str(last_day), "seed": seed}
    doc["code"] = registry.code_version()
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run(settings: Settings, last_day: date | None = None, seed: int | None = None) -> dict[str, Any]:
    """The nightly training run; returns the report that also lands in models/<kind>/<version>/metrics.json."""
    t = settings.training
    seed = t.seed if seed is None else seed
    last_day = last_day or last_data_day(settings)
    device, mixed = trainer.pick_device(t.device)
    version = last_day.isoformat()
    work_dir = (
        registry.models_root(settings.warehouse_root) / "_work" / f"{version}-{run_key(settings, last_day, seed)}"
    )
    started = time.time()
    print(f"training: data through {last_day}, device {device}{' (bf16 autocast)' if mixed else ''}", flush=True)
    prepared = prepare(settings, last_day, seed, work_dir)
    print(
        f"training: train {prepared.split.train[0]}..{prepared.split.train[1] - timedelta(days=1)} "
        f"({prepared.train.rows:,} rows), validation {prepared.validation.rows:,}, evaluation "
        f"{prepared.evaluation.rows:,}; {len(prepared.relevant)} buyers to retrieve for",
        flush=True,
    )
    report: dict[str, Any] = {
        "version": version,
        "split": {k: [str(d) for d in v] for k, v in asdict(prepared.split).items()},
    }
    report["baselines"] = {
        name: retrieval_metrics(prepared, rec) for name, rec in baseline_recommendations(prepared).items()
    }
    report["models"] = {}
    manifest_base = {
        "data_range": report["split"],
        "source": settings.source,
        "seed": seed,
        "config": asdict(t),
        "code_version": registry.code_version(),
        "device": str(device),
        "exposure_definition": "any_event_on_day; untouched items sampled by popularity as category 0",
        "negatives": prepared.negatives,
        "base_rates": prepared.base_rates,
        "feature_columns": {"user": prepared.train.user_columns, "item": prepared.train.item_columns},
    }
    trained: dict[str, Model] = {}
    refit: RefitData | None = None
    for kind in t.models:
        outcome = train_and_evaluate(kind, prepared, settings, seed, device, mixed)
        champion_metrics, why = rescore_champion(kind, prepared, settings, device)
        decision = gate(outcome.metrics, champion_metrics, t.champion_tolerance, why)
        served, served_vocabularies, refit_record, evaluated = outcome.model, prepared.vocabularies, None, None
        spec = architecture(kind, prepared, settings)
        if t.refit and decision["publish"]:
            refit = refit or prepare_refit(settings, last_day, seed, prepared)
            served, refit_record = refit_model(kind, refit, settings, seed, device, mixed, outcome.fit["best_epoch"])
            served_vocabularies = refit.vocabularies
            evaluated = weights_record(outcome.model, prepared.vocabularies, spec)
            spec = architecture(kind, refit, settings)
        export_day = last_day + timedelta(days=1)
        users, items = list(served_vocabularies.users.ids), list(served_vocabularies.items.ids)
        exported = embedding_source(
            served, kind, prepared, settings, users, items, export_day, device, served_vocabularies
        )
        path = registry.write_model(
            settings.warehouse_root,
            kind,
            version,
            weights_record(served, served_vocabularies, spec),
            registry.embeddings_table(users, exported.user_vectors, "user_id"),
            registry.embeddings_table(items, exported.item_vectors, "item_id"),
            {"metrics": outcome.metrics, "gate": decision, "fit": outcome.fit},
            {
                **manifest_base,
                "model": kind,
                "version": version,
                "embeddings_as_of": str(export_day),
                "architecture": spec,
                "served_model": refit_record or {"trained_on": report["split"]["train"], "refit": False},
                **({"head": served.head()} if hasattr(served, "head") else {}),
            },
            evaluated,
        )
        if decision["publish"]:
            registry.set_champion(
                settings.warehouse_root, kind, {"version": version, "metrics": outcome.metrics, "gate": decision}
            )
        report["models"][kind] = {"metrics": outcome.metrics, "gate": decision, "path": str(path)}
        verdict = "published" if decision["publish"] else "kept the champion"
        served_from = " (served model refit on every day)" if refit_record else ""
        print(f"training: {kind} -> {path} ({verdict}: {decision['reason']}){served_from}", flush=True)
        trained[kind] = outcome.model
    if t.ranker:
        report["models"]["ranker"] = run_ranker(prepared, settings, trained, manifest_base, version, seed, device)
    shutil.rmtree(work_dir, ignore_errors=True)  # features and checkpoints: only needed to resume this run
    report["seconds"] = round(time.time() - started, 1)
    return report


def weights_record(model: Model, vocabularies: data.Vocabularies, spec: dict[str, Any]) -> dict[str, Any]:
    """What weights.pt (and evaluated.pt) hold: everything needed to rebuild the model and index its inputs."""
    return {
        "state_dict": model.state_dict(),
        "users": vocabularies.users.ids,
        "items": vocabularies.items.ids,
        "item_attributes": vocabularies.attributes.values,
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


RANKER_SOURCES = ("two_tower", "gnolr")  # the retrieval models whose candidates and scores the ranker uses


def embedding_source(
    model: Model,
    name: str,
    prepared: Prepared,
    settings: Settings,
    users: list[str],
    items: list[str],
    at: date,
    device: torch.device,
    vocabularies: data.Vocabularies | None = None,
) -> ranker.EmbeddingSource:
    """A model's user and item embeddings at `at` (features through at - 1); `vocabularies` are the model's when
    they are not this run's (a champion)."""
    vocabularies = vocabularies or prepared.vocabularies
    columns = (prepared.train.user_columns, prepared.train.item_columns)
    args = (model, vocabularies, columns, settings)
    user_vectors = embed(*args, "user", users, at, prepared.work_dir, device)
    item_vectors = embed(*args, "item", items, at, prepared.work_dir, device)
    return ranker.EmbeddingSource(name, {u: n for n, u in enumerate(users)}, user_vectors, items, item_vectors)


def fit_ranker(
    prepared: Prepared, settings: Settings, trained: dict[str, Model], seed: int, device: torch.device
) -> ranker.RankerOutcome:
    """Train LambdaRank on the ranker window's candidates and rank the evaluation buyers' candidates."""
    t0, t_eval = prepared.split.ranker[0], prepared.split.evaluation[0]
    label_users = sorted(prepared.ranker_examples["user_id"].astype(str).unique())
    train_items = sorted(prepared.train_examples["item_id"].astype(str).unique())
    eval_users = sorted(prepared.relevant)
    sources = [k for k in RANKER_SOURCES if k in trained]
    train_sources = [
        embedding_source(trained[k], k, prepared, settings, label_users, train_items, t0, device) for k in sources
    ]
    eval_sources = [
        embedding_source(trained[k], k, prepared, settings, eval_users, prepared.catalogue, t_eval, device)
        for k in sources
    ]
    return ranker.train_and_rank(
        settings,
        retrieval_baselines.History(prepared.train_examples, t0),
        prepared.ranker_examples,
        train_sources,
        prepared.history,
        eval_users,
        eval_sources,
        (prepared.train.user_columns, prepared.train.item_columns),
        prepared.vocabularies,
        prepared.work_dir,
        K,
        seed,
    )


def run_ranker(
    prepared: Prepared,
    settings: Settings,
    trained: dict[str, Model],
    manifest_base: dict[str, Any],
    version: str,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Train the LambdaRank re-ranker on the ranker window, evaluate it like every retrieval model, gate, write."""
    import lightgbm as lgb

    outcome = fit_ranker(prepared, settings, trained, seed, device)
    sources = [k for k in RANKER_SOURCES if k in trained]
    result = retrieval_metrics(prepared, outcome.recommended)
    result.update(train_groups=outcome.train_groups, train_rows=outcome.train_rows)
    champion_metrics, why = None, "no champion yet"
    pointer = registry.champion(settings.warehouse_root, "ranker")
    if pointer is not None:
        directory = registry.model_dir(settings.warehouse_root, "ranker", pointer["version"])
        champion_names = json.loads((directory / "manifest.json").read_text())["feature_names"]
        if champion_names == outcome.feature_names:
            booster = lgb.Booster(model_file=str(directory / "model.txt"))
            champion_metrics = retrieval_metrics(prepared, outcome.rank_with(booster, K))
            why = f"champion {pointer['version']} re-scored on this window"
        else:
            why = f"champion {pointer['version']} used other features"
    decision = gate(result, champion_metrics, settings.training.champion_tolerance, why)
    path = registry.write_version(
        settings.warehouse_root,
        "ranker",
        version,
        {"model.txt": lambda p: outcome.booster.save_model(str(p))},
        {"metrics": result, "gate": decision},
        {
            **manifest_base,
            "model": "ranker",
            "version": version,
            "sources": [*retrieval_baselines.BASELINES, *sources],
            "candidates_per_source": ranker.CANDIDATES,
            "feature_names": outcome.feature_names,
        },
    )
    if decision["publish"]:
        registry.set_champion(
            settings.warehouse_root, "ranker", {"version": version, "metrics": result, "gate": decision}
        )
    verdict = "published" if decision["publish"] else "kept the champion"
    print(f"training: ranker -> {path} ({verdict}: {decision['reason']})", flush=True)
    return {"metrics": result, "gate": decision, "path": str(path)}
