"""The consumer encoder (UNICON's representation): a transformer over a consumer's behaviour sequence -> one vector.

Each token of ``silver/sequences`` (a consumer's latest state as of day D, oldest first, right-aligned here) is the
sum of its item, behaviour level, time-gap bucket and recency-position embeddings; a small transformer encoder reads
the real tokens and their mean is projected and L2-normalised into the consumer's embedding. Two self-supervised
objectives, chosen by ``objective``:

- ``masked``: a share of the tokens' items is replaced by a mask id and the item is predicted back from the token's
  output (a softmax over the item vocabulary, the item table tied as the output layer);
- ``contrastive``: two views of a consumer (a random contiguous crop, some tokens dropped) must find each other among
  the batch's other consumers (InfoNCE on the embeddings);
- ``both``: the sum.

The embedding's use is lookalike expansion, so the epoch kept is the one with the best validation lookalike recall
(``nightrec.lookalike``) on seeds given by the caller, not the lowest loss. Runs on CUDA when present.

Version 1 (issue #23): items, levels and gaps; item and consumer attributes and the nightly task come next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from nightrec.errors import InputError
from training.towers import GAP_BUCKETS, gap_buckets

log = logging.getLogger(__name__)

PAD, MASK, UNKNOWN = 0, 1, 2  # reserved item ids; real items start at 3
OBJECTIVES = ("masked", "contrastive", "both")


@dataclass(frozen=True)
class EncoderSettings:
    """:param dim: embedding width; :param layers, heads: the transformer's; :param objective: see the module doc;
    :param mask_share: share of real tokens masked (masked objective); :param temperature: InfoNCE temperature;
    :param min_item_count: items seen fewer times share the unknown id."""

    dim: int = 64
    layers: int = 2
    heads: int = 4
    objective: str = "both"
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 2e-3
    mask_share: float = 0.2
    temperature: float = 0.1
    min_item_count: int = 2
    seed: int = 0


@dataclass
class Sequences:
    """Every consumer's tokens as right-aligned int64 arrays (N = the sequences' length), and the item vocabulary."""

    user_ids: np.ndarray  # (U,) str, sorted
    items: np.ndarray  # (U, N) item index, PAD on the left
    levels: np.ndarray  # (U, N) level, 0 = padding
    gaps: np.ndarray  # (U, N) gap bucket, 0 = padding
    vocabulary: list[str]  # item id of each index >= 3


def latest_sequences(sequences_root: Path, day: date) -> pd.DataFrame:
    """Each consumer's latest ``silver/sequences`` row on or before ``day`` (their state at the end of that day)."""
    import duckdb

    files = sequences_root / "ds=*" / "*.parquet"
    return duckdb.sql(
        f"select user_id, seq_item_ids, seq_levels, seq_gap_seconds from read_parquet('{files}', "
        "hive_partitioning = true, hive_types = {'ds': date}) where ds <= ? "
        "qualify row_number() over (partition by user_id order by ds desc) = 1 order by user_id",
        params=[day],
    ).df()


def encode(frame: pd.DataFrame, length: int, min_item_count: int = 2) -> Sequences:
    """Tokens of ``latest_sequences`` rows, the most recent ``length`` per consumer, right-aligned."""
    if frame.empty:
        raise InputError("No behaviour sequences to encode (is silver/sequences built up to the day?)")
    counts = pd.Series([i for row in frame["seq_item_ids"] for i in row]).value_counts()
    vocabulary = sorted(counts.index[counts >= min_item_count])
    index = {item: i + 3 for i, item in enumerate(vocabulary)}
    n = len(frame)
    items = np.zeros((n, length), dtype=np.int64)
    levels = np.zeros((n, length), dtype=np.int64)
    gaps = np.zeros((n, length), dtype=np.int64)
    for r, (seq, lv, gap) in enumerate(
        zip(frame["seq_item_ids"], frame["seq_levels"], frame["seq_gap_seconds"], strict=True)
    ):
        seq, lv = list(seq)[-length:], list(lv)[-length:]
        # DuckDB hands a list with NULLs (a consumer's first event has no gap) as a masked array
        gap = _gaps_or_first(gap)[-length:]
        k = len(seq)
        if k:
            items[r, -k:] = [index.get(i, UNKNOWN) for i in seq]
            levels[r, -k:] = lv
            gaps[r, -k:] = gap_buckets(gap)
    return Sequences(frame["user_id"].astype(str).to_numpy(), items, levels, gaps, vocabulary)


def _gaps_or_first(gap: Iterable[float | None]) -> np.ndarray:
    """Seconds since the previous event, -1 for a consumer's first (NULL; DuckDB hands such a list as a masked
    array, a plain list holds None)."""
    if isinstance(gap, np.ma.MaskedArray):
        return np.ma.filled(np.ma.asarray(gap, dtype=np.float64), -1.0)
    values = np.asarray([np.nan if g is None else g for g in gap], dtype=np.float64)
    return np.where(np.isnan(values), -1.0, values)


class ConsumerEncoder(nn.Module):
    """Tokens -> transformer -> mean over real tokens -> projection -> L2-normalised consumer embedding."""

    def __init__(self, n_items: int, levels: int, length: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items, dim, padding_idx=PAD)
        self.levels = nn.Embedding(levels + 1, dim, padding_idx=0)
        self.gaps = nn.Embedding(GAP_BUCKETS, dim, padding_idx=0)
        self.positions = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)

    def tokens(self, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """Every token's contextual output (B, N, dim); padding positions are masked out of attention."""
        n = items.shape[1]
        positions = torch.arange(self.positions.num_embeddings - n, self.positions.num_embeddings, device=items.device)
        x = self.items(items) + self.levels(levels) + self.gaps(gaps) + self.positions(positions)
        padding = levels == 0
        # a consumer without any token would make attention all -inf: let such rows attend to their padding
        empty = padding.all(dim=1, keepdim=True)
        return self.transformer(x, src_key_padding_mask=padding & ~empty)

    def forward(self, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        h = self.tokens(items, levels, gaps)
        real = (levels > 0).unsqueeze(-1).to(h.dtype)
        pooled = (h * real).sum(1) / real.sum(1).clamp(min=1.0)
        return F.normalize(self.out(pooled), dim=-1)


def masked_item_loss(
    model: ConsumerEncoder, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor, share: float
) -> torch.Tensor:
    """Cross-entropy of the masked tokens' items, predicted from their outputs against the whole item table."""
    real = levels > 0
    chosen = real & (torch.rand(items.shape, device=items.device) < share)
    if not chosen.any():
        return items.new_zeros((), dtype=torch.float32)
    h = model.tokens(items.masked_fill(chosen, MASK), levels, gaps)
    logits = h[chosen] @ model.items.weight[MASK + 1 :].T  # PAD and MASK are never the answer
    return F.cross_entropy(logits, items[chosen] - (MASK + 1))


def _view(items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A random view: keep a contiguous crop of 60-100% of the real tokens and drop 15% of the rest (re-aligned)."""
    b, n = items.shape
    lengths = (levels > 0).sum(1)
    keep_share = 0.6 + 0.4 * torch.rand(b, device=items.device)
    kept = torch.clamp((lengths.float() * keep_share).ceil().long(), min=1)
    offset = (torch.rand(b, device=items.device) * (lengths - kept + 1).clamp(min=1).float()).long()
    # real tokens occupy positions n - length .. n - 1; keep [start, start + kept)
    start = n - lengths + offset
    pos = torch.arange(n, device=items.device).unsqueeze(0)
    keep = (pos >= start.unsqueeze(1)) & (pos < (start + kept).unsqueeze(1))
    keep &= torch.rand(items.shape, device=items.device) >= 0.15
    keep |= keep.sum(1, keepdim=True).eq(0) & (pos == (start + kept - 1).unsqueeze(1))  # never an empty view
    # move the kept tokens to the right end, in their order: sort by (kept, position)
    order = torch.argsort(keep.long() * 2 * n + pos, dim=1)
    kept_sorted = torch.gather(keep, 1, order)

    def moved(t: torch.Tensor) -> torch.Tensor:
        return torch.where(kept_sorted, torch.gather(t, 1, order), torch.zeros_like(t))

    return moved(items), moved(levels), moved(gaps)


def contrastive_loss(
    model: ConsumerEncoder, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE between two views of each consumer, the batch's other consumers as negatives (both directions)."""
    a = model(*_view(items, levels, gaps))
    b = model(*_view(items, levels, gaps))
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def compatible(record: dict[str, Any], settings: EncoderSettings, levels: int, length: int) -> bool:
    """Whether an earlier night's weights record has this model's shape (then :func:`warm_start` can use it)."""
    old = record.get("settings", {})
    return (
        record.get("levels") == levels
        and record.get("length") == length
        and all(old.get(key) == getattr(settings, key) for key in ("dim", "layers", "heads"))
    )


@torch.no_grad()
def warm_start(model: ConsumerEncoder, vocabulary: list[str], record: dict[str, Any]) -> int:
    """Load an earlier night's weights into ``model``: every layer as it was, each item's row by its id (items new
    tonight keep their random rows). Returns how many items were carried over."""
    state = record["state_dict"]
    own = model.state_dict()
    for name, value in state.items():
        if name != "items.weight" and name in own and own[name].shape == value.shape:
            own[name].copy_(value)
    old_rows = {item: i + 3 for i, item in enumerate(record["vocabulary"])}
    table = own["items.weight"]
    table[: MASK + 2] = state["items.weight"][: MASK + 2]  # PAD, MASK, UNKNOWN
    carried = 0
    for i, item in enumerate(vocabulary):
        row = old_rows.get(item)
        if row is not None:
            table[i + 3] = state["items.weight"][row]
            carried += 1
    return carried


@torch.no_grad()
def embed(model: ConsumerEncoder, data: Sequences, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Every consumer's embedding (U, dim), float32."""
    model.eval()
    out = []
    for lo in range(0, len(data.user_ids), batch_size):
        batch = [torch.from_numpy(a[lo : lo + batch_size]).to(device) for a in (data.items, data.levels, data.gaps)]
        out.append(model(*batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.out.out_features), dtype=np.float32)


@dataclass
class TrainedEncoder:
    model: ConsumerEncoder
    embeddings: np.ndarray  # (U, dim) of the best epoch
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float


def train(
    data: Sequences,
    levels: int,
    settings: EncoderSettings,
    device: torch.device,
    validate: Callable[[np.ndarray], float],
    start_from: dict[str, Any] | None = None,
) -> TrainedEncoder:
    """Train on every consumer's sequence; keep the epoch whose embeddings score best on ``validate`` (a lookalike
    recall on validation seeds: the metric of the embedding's use).

    :param start_from: an earlier night's weights record (``vocabulary``, ``state_dict``, ``settings``, ``length``,
        ``levels``) to continue from (:func:`warm_start`) instead of a random start."""
    if settings.objective not in OBJECTIVES:
        raise InputError(f"Unknown consumer encoder objective {settings.objective!r}; one of {OBJECTIVES}")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    length = data.items.shape[1]
    model = ConsumerEncoder(len(data.vocabulary) + 3, levels, length, settings.dim, settings.layers, settings.heads)
    if start_from is not None:
        warm_start(model, data.vocabulary, start_from)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    tensors = [torch.from_numpy(a) for a in (data.items, data.levels, data.gaps)]
    has_tokens = np.flatnonzero(data.levels.any(axis=1))
    t0 = time.time()
    best = (-np.inf, 0, embed(model, data, device))
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = rng.permutation(has_tokens)
        total, batches = 0.0, 0
        for lo in range(0, len(order) - 1, settings.batch_size):
            idx = torch.from_numpy(order[lo : lo + settings.batch_size])
            if len(idx) < 2:
                continue
            items, lv, gaps = (t[idx].to(device) for t in tensors)
            loss = items.new_zeros((), dtype=torch.float32)
            if settings.objective in {"masked", "both"}:
                loss = loss + masked_item_loss(model, items, lv, gaps, settings.mask_share)
            if settings.objective in {"contrastive", "both"}:
                loss = loss + contrastive_loss(model, items, lv, gaps, settings.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.detach().item(), batches + 1
        embeddings = embed(model, data, device)
        score = float(validate(embeddings))
        history.append({"epoch": epoch, "loss": total / max(batches, 1), "validation": score})
        log.info(
            f"consumer encoder epoch {epoch}: loss {total / max(batches, 1):.4f}, validation lookalike {score:.4f}"
            f"{' (best)' if score > best[0] else ''}"
        )
        if score > best[0]:
            best = (score, epoch, embeddings)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return TrainedEncoder(model, best[2], best[1], history, round(time.time() - t0, 1))
