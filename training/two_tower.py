"""Two-tower retrieval: a sequence-encoder user tower and an item tower, trained with an in-batch sampled softmax and
the popularity (logQ) correction.

Positives are the real exposures (every level). For a batch of B (user, item) positives the logits are
s_ij = <u_i, v_j> / temperature - log Q(j), with Q(j) the share of item j among the training positives (the
probability of meeting j as an in-batch negative: without the correction popular items are over-penalised, Yi et
al., RecSys 2019); another row's copy of the same item is masked (it is no negative). The loss is the cross-entropy
of the diagonal. Sampled untouched items (category 0) in the shared training files are not used here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.towers import Inputs, user_and_item_towers


class RetrievalTwoTower(nn.Module):
    kind = "two_tower"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_user_dense: int,
        n_item_dense: int,
        levels: int,
        item_counts: np.ndarray,
        dim: int = 32,
        hidden: int = 64,
        temperature: float = 0.05,
        sequence_length: int = 0,
        item_attribute_values: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.boundaries = levels
        self.user, self.item = user_and_item_towers(
            n_users, n_items, n_user_dense, n_item_dense, levels, sequence_length, dim, 1, hidden, item_attribute_values
        )
        counts = np.asarray(item_counts, dtype=np.float64) + 1.0  # every item at least once: log Q is finite
        self.register_buffer("log_q", torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32))

    def user_vectors(self, x: Inputs) -> torch.Tensor:
        return self.user(x.user, x.user_dense, (x.seq_items, x.seq_levels, x.seq_gaps))

    def item_vectors(self, x: Inputs) -> torch.Tensor:
        return self.item(x.item, x.item_dense, attributes=x.item_attrs)

    @staticmethod
    def unified(sub_embeddings: torch.Tensor) -> torch.Tensor:
        return sub_embeddings.flatten(1)

    def forward(self, x: Inputs) -> torch.Tensor:
        """A score per boundary (B x T) so that ordinal metrics can rank with it: the same cosine everywhere."""
        score = (self.unified(self.user_vectors(x)) * self.unified(self.item_vectors(x))).sum(1, keepdim=True)
        return torch.sigmoid(score / self.temperature).expand(-1, self.boundaries)

    def batch_loss(self, x: Inputs) -> torch.Tensor:
        real = x.category > 0
        if int(real.sum()) < 2:
            return torch.zeros((), device=x.category.device, requires_grad=True)
        x = Inputs(*(t[real] for t in x))
        users = self.unified(self.user_vectors(x))
        items = self.unified(self.item_vectors(x))
        logits = users @ items.T / self.temperature - self.log_q[x.item].unsqueeze(0)
        same_item = x.item.unsqueeze(0) == x.item.unsqueeze(1)
        diagonal = torch.eye(len(x.item), dtype=torch.bool, device=logits.device)
        logits = logits.float().masked_fill(same_item & ~diagonal, -1e4)
        return F.cross_entropy(logits, torch.arange(len(x.item), device=logits.device))
