"""Lookalike audiences: validate a seed, expand it with a positive-unlabelled classifier, and measure an expansion.

A seed is a set of consumers an analyst starts from ("bought brand X twice in 90 days"); its lookalike audience is
the consumers most like them. Whatever represents a consumer (the consumer encoder's embedding, ``user_features``,
RFM), expansion and its measurement are the same code, so the benchmark that compares representations scores what
the nightly job would publish:

- a seed is checked first (``nightrec.seeds``);
- :func:`fit_pu` fits a class-balanced logistic regression of "in the seed" against everyone else. Treating the
  unlabelled as negatives ranks consumers in the same order as the true P(positive | x) when the seed is a random
  sample of all positives (Elkan and Noto, 2008), which is what ranking an audience needs;
- :func:`expand` ranks every consumer outside the seed by that score;
- :func:`hidden_recall` hides a share of a seed, expands the rest and reports the recall of the hidden members at
  audience sizes that are multiples of the expanded seed, beside the recall a random audience of that size has;
  :func:`share_recall` the same at audiences that are shares of the population;
- :func:`converter_lift` judges an audience by the consumers who take up the seed's behaviour later, outside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from nightrec.errors import InputError
from nightrec.seeds import SeedError

MULTIPLES = (1, 5, 10)  # audience sizes reported, as multiples of the expanded seed
# audience sizes reported as shares of the candidates: on a small population 10x a large seed is nearly everyone
# (a random audience finds almost all hidden members too), while a share keeps the best possible lift at 1 / share
SHARES = (0.05, 0.10, 0.20)
HIDDEN_SHARE = 0.3  # the share of a seed hidden when an expansion is measured


@dataclass(frozen=True)
class LinearScorer:
    """A fitted logistic scorer over standardised features: score = ((x - mean) / scale) . weights + bias."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The logit of each row (higher = more like the seed)."""
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias


def fit_pu(features: np.ndarray, positive: np.ndarray, l2: float = 1.0) -> LinearScorer:
    """Class-balanced L2 logistic regression of ``positive`` (the seed) against every other row (unlabelled).

    Each class carries half the loss whatever the seed's size, so a small seed is not drowned by the population;
    ``l2`` is the penalty on the weights of standardised features (features are centred and scaled on all rows; a
    constant column gets scale 1 and no influence).
    :raises SeedError: no positive row, or no unlabelled row to contrast them with.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if not y.any() or y.all():
        raise SeedError("A lookalike needs seed members and consumers outside the seed")
    if not np.isfinite(x).all():
        raise InputError("Consumer features hold NaN or infinite values; fill them before expanding a seed")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    weight = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    target = y.astype(np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        logits = z @ w + b
        # log(1 + exp(-t * logit)) with t = +-1, computed stably
        signed = np.where(y, logits, -logits)
        value = float(weight @ np.logaddexp(0.0, -signed) + 0.5 * l2 * w @ w / len(y))
        p = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid without overflow
        residual = weight * (p - target)
        grad = np.concatenate([z.T @ residual + l2 * w / len(y), [residual.sum()]])
        return value, grad

    # One BLAS thread: each step is two matrix-vector products over (consumers x features), which take less time
    # than waking OpenBLAS's threads (10x the e2e night's consumers: 2.9 s a fit with them, 0.13 s without; decision 36)
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return LinearScorer(mean=mean, scale=scale, weights=result.x[:-1], bias=float(result.x[-1]))


def expand(scores: np.ndarray, seed: np.ndarray, size: int) -> np.ndarray:
    """The positions of the ``size`` highest-scoring rows outside ``seed`` (positions), best first; equal scores
    keep population order, so an audience is defined by the data alone."""
    outside = np.ones(len(scores), dtype=bool)
    outside[seed] = False
    candidates = np.flatnonzero(outside)
    order = np.lexsort((candidates, -np.asarray(scores, dtype=np.float64)[candidates]))
    return candidates[order[: max(size, 0)]]


@dataclass(frozen=True)
class HiddenRecall:
    """How well an expansion finds hidden seed members: recall at each audience multiple, and a random audience's."""

    visible: int
    hidden: int
    candidates: int
    recall: dict[int, float]
    random: dict[int, float]

    def best_at_share(self, share: float) -> float:
        """The recall a perfect ranking reaches in an audience of ``share`` of the candidates (every hidden member
        first): 1 unless the hidden members outnumber that audience."""
        return min(1.0, share_size(share, self.candidates) / self.hidden)

    def lift(self, multiple: int) -> float:
        """Recall over a random audience's recall at the same size."""
        return self.recall[multiple] / self.random[multiple] if self.random[multiple] > 0 else float("nan")


def split_seed(
    seed: np.ndarray, rng: np.random.Generator, share: float = HIDDEN_SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """(visible, hidden) positions: ``share`` of the seed hidden at random (at least one member on each side)."""
    if len(seed) < 2:
        raise SeedError("Measuring an expansion needs a seed of at least two consumers (one to hide)")
    shuffled = rng.permutation(np.asarray(seed))
    n_hidden = min(max(round(share * len(seed)), 1), len(seed) - 1)
    return np.sort(shuffled[n_hidden:]), np.sort(shuffled[:n_hidden])


def hidden_recall(
    scores: np.ndarray, visible: np.ndarray, hidden: np.ndarray, multiples: Sequence[int] = MULTIPLES
) -> HiddenRecall:
    """Recall of ``hidden`` in the audiences of ``multiples`` x len(visible) ranked by ``scores`` (which must not
    have seen ``hidden`` as positives). A random audience of n out of the c candidates finds n / c of them."""
    candidates = len(scores) - len(visible)
    audience = expand(scores, visible, max(multiples) * len(visible))
    found = np.isin(audience, hidden)
    recall = {m: float(found[: m * len(visible)].sum() / len(hidden)) for m in multiples}
    random = {m: min(1.0, m * len(visible) / candidates) for m in multiples}
    return HiddenRecall(len(visible), len(hidden), candidates, recall, random)


def share_size(share: float, candidates: int) -> int:
    """The audience size that is ``share`` of the candidates."""
    return round(share * candidates)


def share_recall(
    scores: np.ndarray, visible: np.ndarray, hidden: np.ndarray, shares: Sequence[float] = SHARES
) -> dict[float, float]:
    """Recall of ``hidden`` in the audiences of ``shares`` of the candidates (everyone outside ``visible``) ranked by
    ``scores``; a random audience's expected recall at a share is the share itself."""
    candidates = len(scores) - len(visible)
    sizes = {share: share_size(share, candidates) for share in shares}
    found = np.isin(expand(scores, visible, max(sizes.values())), hidden)
    return {share: float(found[:n].sum() / len(hidden)) for share, n in sizes.items()}


def converter_lift(
    scores: np.ndarray, seed: np.ndarray, converters: np.ndarray, share: float = SHARES[1]
) -> tuple[float, float]:
    """How an audience does on what lookalikes are for: finding consumers who take up the seed's behaviour later.

    The audience is ``share`` of the candidates (everyone outside ``seed``), ranked by ``scores`` (fitted on the whole
    seed); ``converters`` are the consumers who did the seed's behaviour after the seed was taken (members of the seed
    among them do not count). Returns (the audience's rate of converters over the candidates' rate: the lift over a
    random audience, the best lift an audience of that size could reach); both NaN when no candidate converted.
    """
    outside = np.setdiff1d(np.asarray(converters), np.asarray(seed))
    candidates = len(scores) - len(seed)
    size = share_size(share, candidates)
    if len(outside) == 0 or size == 0:
        return float("nan"), float("nan")
    base = len(outside) / candidates
    found = int(np.isin(expand(scores, seed, size), outside).sum())
    return found / size / base, min(len(outside), size) / size / base


def centroid_scores(features: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Similarity to the seed's centre: minus the distance of each row's standardised features to the mean of the
    seed's (the RFM-similarity baseline, on recency, frequency and monetary columns)."""
    x = np.asarray(features, dtype=np.float64)
    scale = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    return -np.linalg.norm(z - z[seed].mean(axis=0), axis=1)


def pu_scores(features: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Every row's score from :func:`fit_pu` with ``members`` (positions) as the seed."""
    positive = np.zeros(len(features), dtype=bool)
    positive[members] = True
    return fit_pu(features, positive).scores(features)


def validation_recall(features: np.ndarray, seeds: Sequence[np.ndarray], multiple: int = max(MULTIPLES)) -> float:
    """Mean recall of hidden members at ``multiple`` x the seed over ``seeds`` (positions), each with one fixed hide:
    the number an encoder's epoch is chosen on (the same seeds and hides every epoch, so epochs compare)."""
    found = []
    for i, seed in enumerate(seeds):
        visible, hidden = split_seed(seed, np.random.default_rng(1000 + i))
        found.append(hidden_recall(pu_scores(features, visible), visible, hidden, (multiple,)).recall[multiple])
    return float(np.mean(found)) if found else float("nan")
