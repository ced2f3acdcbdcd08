"""The training loop's early stopping: a validation score, when given, picks the best epoch and stops the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training import trainer
from training.data import Batch


def _batches(rows: int = 64, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)
    item = rng.integers(1, 5, rows)
    empty = np.zeros((rows, 0), np.float32)
    no_tokens = np.zeros((rows, 0), np.int64)
    return [
        Batch(
            user=np.zeros(rows, np.int64),
            user_dense=empty,
            seq_items=no_tokens,
            seq_levels=no_tokens,
            seq_gaps=no_tokens,
            item=item,
            item_dense=empty,
            item_attrs=no_tokens,
            category=(item > 2).astype(np.int64),
        )
    ]


class _Logistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Embedding(5, 1)

    def loss(self, x) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self.weight(x.item).squeeze(1), x.category.float())


def _fit(tmp_path, scores: list[float] | None, patience: int) -> tuple[trainer.FitResult, list[torch.Tensor]]:
    torch.manual_seed(0)
    model, snapshots = _Logistic(), []
    scripted = iter(scores or [])

    def score(m: nn.Module) -> float:
        snapshots.append(m.weight.weight.detach().clone())  # the weights of the epoch just validated
        return next(scripted)

    result = trainer.fit(
        model,
        lambda m, x: m.loss(x),
        train=lambda epoch: _batches(seed=epoch),
        validation=lambda: _batches(seed=99),
        device=torch.device("cpu"),
        mixed_precision=False,
        epochs=10,
        learning_rate=0.1,
        patience=patience,
        checkpoint_dir=tmp_path,
        name="logistic",
        validation_score=score if scores is not None else None,
    )
    snapshots.append(model.weight.weight.detach().clone())  # the weights the model ends with
    return result, snapshots


def test_the_score_picks_the_best_epoch_and_stops_after_patience_even_while_the_loss_falls(tmp_path):
    result, snapshots = _fit(tmp_path / "scored", [0.50, 0.70, 0.60, 0.65, 0.90], patience=2)
    losses = [h["validation_loss"] for h in result.history]
    assert losses == sorted(losses, reverse=True)  # the loss fell every epoch: the loss would not have stopped here
    assert result.epochs_run == 4 and result.best_epoch == 2  # epochs 3 and 4 did not beat 0.70: stop
    assert [h["validation_score"] for h in result.history] == [0.50, 0.70, 0.60, 0.65]
    assert result.best_validation_score == 0.70 and result.best_validation_loss == losses[1]
    assert torch.equal(snapshots[-1], snapshots[1])  # the model ends with epoch 2's weights, not the last ones


def test_without_a_score_the_loss_decides_and_the_score_is_not_recorded(tmp_path):
    result, _ = _fit(tmp_path / "loss", None, patience=2)
    assert result.epochs_run == 10 and result.best_epoch == 10  # the loss keeps falling on this separable data
    assert np.isnan(result.best_validation_score)
    assert all(np.isnan(h["validation_score"]) for h in result.history)


def test_a_resumed_run_keeps_the_best_score_it_had(tmp_path):
    first, _ = _fit(tmp_path / "resume", [0.50, 0.70, 0.60], patience=1)  # stops after epoch 3
    assert first.epochs_run == 3 and first.best_epoch == 2
    # started again with the same checkpoints and more patience: epoch 4 must beat 0.70, not 0.60, to be the best
    again, _ = _fit(tmp_path / "resume", [0.68, 0.71, 0.69, 0.69, 0.69], patience=3)  # epoch 3 counted one bad
    assert again.resumed_from_epoch == 3
    assert [h["validation_score"] for h in again.history] == [0.50, 0.70, 0.60, 0.68, 0.71, 0.69, 0.69, 0.69]
    assert again.best_epoch == 5 and again.best_validation_score == pytest.approx(0.71)
