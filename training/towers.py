"""The towers every model here is built from: a batch of inputs, the user's behaviour-sequence encoder, and a tower
that maps ids, dense features (and, for users, the sequence) to L2-normalised sub-embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

GAP_BUCKETS = 17  # 0 padding, 1 a user's first event, 2.. log2 buckets of hours since the previous event


class Inputs(NamedTuple):
    """One batch as tensors. Sequences are right-aligned (the most recent token last) and padded with level 0."""

    user: torch.Tensor  # (B,) user index, 0 = unseen in training
    user_dense: torch.Tensor  # (B, U) encoded user features
    seq_items: torch.Tensor  # (B, N) item index of each recent behaviour token
    seq_levels: torch.Tensor  # (B, N) its level, 0 = padding
    seq_gaps: torch.Tensor  # (B, N) its gap bucket
    item: torch.Tensor  # (B,) item index
    item_dense: torch.Tensor  # (B, I) encoded item features
    item_attrs: torch.Tensor  # (B, A) item attribute value indices, 0 = unknown
    category: torch.Tensor  # (B,) ordinal category (0 = sampled, untouched)


def gap_buckets(gap_seconds: np.ndarray) -> np.ndarray:
    """Seconds since the previous token -> bucket: 1 for a first event (gap -1), 2 + floor(log2(1 + hours))."""
    gaps = np.asarray(gap_seconds, dtype=np.float64)
    hours = np.maximum(gaps, 0) / 3600.0
    buckets = 2 + np.minimum(np.floor(np.log2(1 + hours)), GAP_BUCKETS - 3)
    return np.where(gaps < 0, 1, buckets).astype(np.int64)


class SequenceEncoder(nn.Module):
    """Recent behaviour tokens -> one vector: token = item + level + gap + recency position embeddings, pooled by
    learned attention over the real (non-padding) tokens. The item table is the item tower's, so a user's history
    and the items it is compared with live in one space (repeat behaviour is learnable)."""

    def __init__(self, items: nn.Embedding, levels: int, length: int, hidden: int) -> None:
        super().__init__()
        self.items = items
        self.levels = nn.Embedding(levels + 1, hidden, padding_idx=0)
        self.gaps = nn.Embedding(GAP_BUCKETS, hidden, padding_idx=0)
        self.positions = nn.Embedding(length, hidden)
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        n = items.shape[1]
        positions = torch.arange(self.positions.num_embeddings - n, self.positions.num_embeddings, device=items.device)
        tokens = self.items(items) + self.levels(levels) + self.gaps(gaps) + self.positions(positions)
        mask = levels > 0
        # a finite fill and a mask after the softmax: a user without history gets a zero vector and finite gradients
        weights = torch.softmax(self.score(tokens).squeeze(-1).float().masked_fill(~mask, -1e4), dim=1) * mask
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-9)
        return (weights.unsqueeze(-1).to(tokens.dtype) * tokens).sum(1)


class Tower(nn.Module):
    """Ids, dense features, categorical attributes (items) and the sequence (users) -> a shared MLP -> `heads`
    L2-normalised sub-embeddings of size `dim` (one matmul for all heads). Id 0 is every id unseen in training: its
    row is zero and never trained (padding), so such a user or item is placed by its features, sequence and
    attributes alone, not by one shared untrained vector; attribute value 0 is unknown."""

    def __init__(
        self,
        n_ids: int,
        n_dense: int,
        dim: int,
        heads: int,
        hidden: int,
        sequence: SequenceEncoder | None = None,
        attribute_values: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.ids = nn.Embedding(n_ids, hidden, padding_idx=0)
        self.dense = nn.Linear(n_dense, hidden) if n_dense else None
        self.attributes = nn.ModuleList(nn.Embedding(n, hidden, padding_idx=0) for n in attribute_values)
        for table in self.attributes:
            nn.init.normal_(table.weight[1:], std=0.05)
        self.sequence = sequence
        self.shared = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, heads * dim)
        nn.init.normal_(self.ids.weight[1:], std=0.05)

    def forward(
        self,
        ids: torch.Tensor,
        dense: torch.Tensor | None,
        sequence: tuple[torch.Tensor, ...] | None = None,
        attributes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.ids(ids)
        if attributes is not None and attributes.shape[1]:
            for n, table in enumerate(self.attributes):
                h = h + table(attributes[:, n])
        if self.dense is not None and dense is not None and dense.shape[1]:
            h = h + self.dense(dense)
        if self.sequence is not None and sequence is not None and sequence[0].shape[1]:
            h = h + self.sequence(*sequence)
        return F.normalize(self.out(self.shared(h)).view(-1, self.heads, self.dim), dim=-1)


def user_and_item_towers(
    n_users: int,
    n_items: int,
    n_user_dense: int,
    n_item_dense: int,
    levels: int,
    sequence_length: int,
    dim: int,
    heads: int,
    hidden: int,
    item_attribute_values: Sequence[int] = (),
) -> tuple[Tower, Tower]:
    """An item tower (with one embedding table per item attribute) and a user tower whose sequence encoder shares
    the item tower's id table."""
    item = Tower(n_items, n_item_dense, dim, heads, hidden, attribute_values=item_attribute_values)
    encoder = SequenceEncoder(item.ids, levels, sequence_length, hidden) if sequence_length else None
    user = Tower(n_users, n_user_dense, dim, heads, hidden, encoder)
    return user, item
