"""The training loop every model shares: device choice, seeds, progress, early stopping and resumable checkpoints.

Device: ``auto`` takes CUDA when a GPU is visible (with bfloat16 autocast: mixed precision without a loss scaler) and
the CPU otherwise; ``--device`` / ``training.device`` forces one. A checkpoint is written atomically after every epoch
(weights, optimiser, epoch, best validation criterion, patience left); a run started again with the same checkpoint
directory resumes after the last finished epoch, so a killed nightly run loses at most one epoch.

Under torchrun (``training.processes`` > 1, training/distributed.py) every process runs this loop on its share of
each step's batches and the gradients are averaged before the step; rank 0 validates, tells the others its figures
and alone writes the checkpoints, so all stop at the same epoch with the same weights.

Early stopping watches the validation loss, or a validation score when the caller gives one (the ordinal models:
their AUC per level boundary, which is what evaluation reports; their loss is dominated by the boundary between a
sampled and a real exposure).
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nightrec.errors import InputError
from nightrec.storage import replace_file
from training import distributed
from training.data import Batch
from training.towers import Inputs

log = logging.getLogger(__name__)


def pick_device(setting: str) -> tuple[torch.device, bool]:
    """(device, mixed precision) for ``auto``, ``cpu`` or ``cuda``."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError("training.device is 'cuda' but PyTorch sees no CUDA device (use 'auto' or 'cpu')")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), False
    return torch.device("cuda"), True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensors(batch: Batch, device: torch.device) -> Inputs:
    # a copy: Arrow hands out read-only arrays, which PyTorch would share and warn about
    return Inputs(*(torch.tensor(getattr(batch, name), device=device) for name in Inputs._fields))


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_validation_loss: float
    best_validation_score: float  # nan without a validation score
    train_samples_per_s: float
    resumed_from_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    replace_file(tmp, path)


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Inputs], torch.Tensor],
    train: Callable[[int], Iterable[Batch]],
    validation: Callable[[], Iterable[Batch]] | None,
    *,
    device: torch.device,
    mixed_precision: bool,
    epochs: int,
    learning_rate: float,
    patience: int,
    checkpoint_dir: Path,
    name: str,
    batches_per_epoch: int | None = None,
    validation_score: Callable[[nn.Module], float] | None = None,
    validation_loss: bool = True,
) -> FitResult:
    """Train with Adam until `epochs` or until the validation criterion has not improved for `patience` epochs; the
    model ends with its best weights.

    :param loss_fn: (model, tensors of a batch) -> mean loss.
    :param train: epoch number -> batches of that epoch (shuffled by the caller with the epoch as seed).
    :param validation: -> validation batches; None trains exactly `epochs` epochs and keeps the last weights (a refit
        on every day, for as many epochs as early stopping chose on held-out days).
    :param validation_score: model -> a validation score, higher is better; when given it picks the best epoch and
        stops early instead of the validation loss (both are recorded per epoch).
    :param validation_loss: compute the validation loss every epoch (recorded; the criterion without a score). Off,
        it is recorded as nan: a pass over the validation rows saved where the score decides anyway.
    """
    w = distributed.world()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last, best = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    # "best" is the criterion, lower is better: the validation loss, or minus the validation score
    state = {"epoch": 0, "best": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": []}
    resumed = 0
    if last.exists():
        saved = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        state = saved["state"]
        state.setdefault("best", state.pop("best_loss", float("inf")))  # a checkpoint written before the score
        resumed = state["epoch"]
        log.info(f"{name}: resuming after epoch {resumed} from {last}")
    distributed.same_start(model, w)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision)
    seen, busy = 0, 0.0
    while state["epoch"] < epochs and state["bad_epochs"] < patience:
        epoch = state["epoch"] + 1
        model.train()
        t0 = time.perf_counter()
        total, rows, own = 0.0, 0, 0  # own: this process's rows (its loss); rows: every process's
        progress = tqdm(
            distributed.shard(train(epoch), w),
            desc=f"{name} epoch {epoch}/{epochs}",
            total=batches_per_epoch,
            unit="batch",
            file=sys.stderr,
            mininterval=5.0,
            # on when attached to a terminal (rank 0's only); Airflow logs get the per-epoch line below
            disable=None if w.main else True,
        )
        for batch in progress:
            tensors = to_tensors(batch, device)
            optimiser.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(model, tensors)
            loss.backward()
            distributed.average_gradients(model, w)
            optimiser.step()
            total += loss.item() * len(batch)
            own += len(batch)
            rows += len(batch) * w.size  # every process took a batch of this size in this step
            progress.set_postfix(loss=f"{total / own:.4f}")
        elapsed = time.perf_counter() - t0
        seen += rows
        busy += elapsed
        val_loss = (
            evaluate_loss(model, loss_fn, validation(), device, mixed_precision)
            if w.main and validation and (validation_loss or validation_score is None)
            else float("nan")
        )
        score = float(validation_score(model)) if w.main and validation and validation_score else float("nan")
        val_loss, score = distributed.from_main([val_loss, score], w, device)
        state["epoch"] = epoch
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": total / max(own, 1),
                "validation_loss": val_loss,
                "validation_score": score,
                "seconds": elapsed,
            }
        )
        criterion = -score if validation_score else val_loss
        if validation is None:
            state.update(best_epoch=epoch)
        elif criterion < state["best"] or state["best_epoch"] == 0:  # the first epoch is the best so far (nan too)
            state.update(best=criterion, best_epoch=epoch, bad_epochs=0)
            if w.main:
                _save_atomic({"model": model.state_dict()}, best)
        else:
            state["bad_epochs"] += 1
        if w.main:
            _save_atomic({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "state": state}, last)
        validated = f"validation loss {val_loss:.4f}, " if validation and not np.isnan(val_loss) else ""
        validated += f"validation score {score:.4f}, " if validation and validation_score else ""
        log.info(
            f"{name} epoch {epoch}: train loss {total / max(own, 1):.4f}, {validated}"
            f"{rows / elapsed:,.0f} samples/s{' (best)' if validation and state['best_epoch'] == epoch else ''}"
            f"{f' over {w.size} processes' if w.distributed else ''}"
        )
    distributed.barrier(w)  # rank 0 has written best.pt
    if best.exists():
        model.load_state_dict(torch.load(best, map_location=device, weights_only=False)["model"])
    at_best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    return FitResult(
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        best_validation_loss=at_best.get("validation_loss", float("nan")),
        best_validation_score=at_best.get("validation_score", float("nan")),
        train_samples_per_s=seen / busy if busy else float("nan"),
        resumed_from_epoch=resumed,
        history=state["history"],
    )


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Inputs], torch.Tensor],
    batches: Iterable[Batch],
    device: torch.device,
    mixed_precision: bool,
) -> float:
    model.eval()
    total, rows = 0.0, 0
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision):
        for batch in batches:
            total += loss_fn(model, to_tensors(batch, device)).item() * len(batch)
            rows += len(batch)
    return total / rows if rows else float("nan")
