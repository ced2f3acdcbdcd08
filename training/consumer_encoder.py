"""The consumer encoder (UNICON's representation): a transformer over a consumer's behaviour sequence -> one vector.

Each token of ``silver/sequences`` (a consumer's latest state as of day D, oldest first, right-aligned here) is the
sum of its item, its attributes (category, subcategory, colour where the source has them), behaviour level, time-gap
bucket and recency-position embeddings; a small transformer encoder reads the real tokens, their mean plus the
consumer's attributes (age band, membership where the source has them) is projected and L2-normalised into the
consumer's embedding. An attribute belongs to the raw item, not to its row in the item table, so a rare item (one
shared unknown row) still tells its category. Three self-supervised objectives, chosen by ``objective``:

- ``masked``: a share of the tokens' items (and their attributes) is replaced by a mask id and the item is predicted
  back from the token's output (a softmax over the item vocabulary, the item table tied as the output layer);
- ``contrastive``: two views of a consumer (a random contiguous crop, some tokens dropped) must find each other among
  the batch's other consumers (InfoNCE on the embeddings);
- ``future``: each consumer's sequence is cut before its last 20-50% of tokens; the embedding of what comes before
  must predict the items that come after (a softmax over the item table per later token). A lookalike audience is
  for the consumers who will take a behaviour up, so this asks the embedding for what a consumer will do next, where
  the other two ask only what they did;
- ``both``: masked + contrastive; any of the three can be summed with ``+`` (``masked+future``).

The embedding's use is lookalike expansion, so the epoch kept is the one with the best validation lookalike recall
(``nightrec.lookalike``) on seeds given by the caller, not the lowest loss. Runs on CUDA when present.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.nn import functional as F

from nightrec.config import ENCODER_OBJECTIVES, encoder_objectives
from nightrec.errors import InputError
from nightrec.warehouse import Warehouse
from training.data import ITEM_ATTRIBUTES
from training.towers import GAP_BUCKETS, gap_buckets

log = logging.getLogger(__name__)

PAD, MASK, UNKNOWN = 0, 1, 2  # reserved item ids; real items start at 3
# The consumer's own attributes (canonical names, nightrec/contract.py; age as a band): 0 = unknown or absent
CONSUMER_ATTRIBUTES = ("age_band", "membership")
AGE_BAND_EDGES = (25, 35, 45, 55, 65)  # bands: under 25, 25-34, ..., 65 and over


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
    """Every consumer's tokens as right-aligned int64 arrays (N = the sequences' length), the item vocabulary, and
    the attributes' vocabularies (index i + 1 = value i; 0 = unknown, absent or padding)."""

    user_ids: np.ndarray  # (U,) str, sorted
    items: np.ndarray  # (U, N) item index, PAD on the left
    levels: np.ndarray  # (U, N) level, 0 = padding
    gaps: np.ndarray  # (U, N) gap bucket, 0 = padding
    vocabulary: list[str]  # item id of each index >= 3
    attributes: np.ndarray | None = None  # (U, N, len(ITEM_ATTRIBUTES)) the token's item's attribute values
    consumer: np.ndarray | None = None  # (U, len(CONSUMER_ATTRIBUTES))
    attribute_values: dict[str, list[str]] = field(default_factory=dict)  # every attribute -> its values

    def __post_init__(self) -> None:
        n, length = self.items.shape
        if self.attributes is None:
            self.attributes = np.zeros((n, length, len(ITEM_ATTRIBUTES)), dtype=np.int64)
        if self.consumer is None:
            self.consumer = np.zeros((n, len(CONSUMER_ATTRIBUTES)), dtype=np.int64)
        for name in (*ITEM_ATTRIBUTES, *CONSUMER_ATTRIBUTES):
            self.attribute_values.setdefault(name, [])

    def sizes(self, names: tuple[str, ...]) -> list[int]:
        """Embedding rows per attribute (the unknown row included)."""
        return [len(self.attribute_values[name]) + 1 for name in names]

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The model's inputs in :class:`Tokens` order."""
        assert self.attributes is not None and self.consumer is not None
        return self.items, self.levels, self.gaps, self.attributes, self.consumer


class Tokens(NamedTuple):
    """A batch of the model's inputs: (B, N) items, levels, gaps; (B, N, A) item attributes; (B, C) consumer's."""

    items: torch.Tensor
    levels: torch.Tensor
    gaps: torch.Tensor
    attributes: torch.Tensor
    consumer: torch.Tensor

    @classmethod
    def of(cls, items: torch.Tensor, levels: torch.Tensor, gaps: torch.Tensor) -> Tokens:
        """Tokens without any attribute (every attribute unknown)."""
        b, n = items.shape
        return cls(
            items,
            levels,
            gaps,
            items.new_zeros((b, n, len(ITEM_ATTRIBUTES))),
            items.new_zeros((b, len(CONSUMER_ATTRIBUTES))),
        )


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


def item_attribute_frame(wh: Warehouse, declared: bool) -> pd.DataFrame | None:
    """item_id and ITEM_ATTRIBUTES of every item the bronze snapshot describes; None where the source delivers no
    item attributes (Tmall). Bronze, not the marts: the encoder needs nothing a dbt run makes.

    :param declared: the source's adapter declares an item attribute file (then a missing snapshot is an error)."""
    return _snapshot(wh.bronze_item_attributes(), ["item_id", *ITEM_ATTRIBUTES], declared, "item")


def consumer_attribute_frame(wh: Warehouse, declared: bool) -> pd.DataFrame | None:
    """user_id, age and membership from the bronze snapshot; None where the source delivers no user attributes."""
    return _snapshot(wh.bronze_user_attributes(), ["user_id", "age", "membership"], declared, "user")


def _snapshot(path: Path, columns: list[str], declared: bool, kind: str) -> pd.DataFrame | None:
    if not declared:
        return None
    if not any(path.glob("*.parquet")):
        raise InputError(
            f"The source declares {kind} attributes but {path} holds no snapshot: run ingest_attributes first "
            "(`nightrec nightly` does)"
        )
    frame = pq.read_table(path, columns=columns).to_pandas()
    frame = frame[frame[columns[1:]].notna().any(axis=1)]
    key = columns[0]
    return None if frame.empty else frame.assign(**{key: frame[key].astype(str)})


def age_band(age: pd.Series) -> pd.Series:
    """'<25', '25-34', ..., '65+' (None where the age is unknown): the band a consumer's age falls in."""
    names = [f"<{AGE_BAND_EDGES[0]}"] + [f"{a}-{b - 1}" for a, b in pairwise(AGE_BAND_EDGES)]
    names.append(f"{AGE_BAND_EDGES[-1]}+")
    values = pd.to_numeric(age, errors="coerce")
    bands = np.searchsorted(np.asarray(AGE_BAND_EDGES), values.fillna(-1).to_numpy(), side="right")
    return pd.Series([names[b] if pd.notna(v) else None for b, v in zip(bands, values, strict=True)], index=age.index)


def _indexed(values: pd.Series) -> tuple[list[str], dict[str, int]]:
    """A vocabulary of the non-null values (sorted) and value -> index (1-based)."""
    vocabulary = sorted(values.dropna().astype(str).unique())
    return vocabulary, {v: i + 1 for i, v in enumerate(vocabulary)}


def encode(
    frame: pd.DataFrame,
    length: int,
    min_item_count: int = 2,
    item_attributes: pd.DataFrame | None = None,
    consumer_attributes: pd.DataFrame | None = None,
) -> Sequences:
    """Tokens of ``latest_sequences`` rows, the most recent ``length`` per consumer, right-aligned.

    :param item_attributes: item_id and ITEM_ATTRIBUTES (:func:`item_attribute_frame`); each token carries its
        item's values, the vocabularies are the values of the items in the sequences.
    :param consumer_attributes: user_id, age and membership (:func:`consumer_attribute_frame`)."""
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
    user_ids = frame["user_id"].astype(str).to_numpy()
    data = Sequences(user_ids, items, levels, gaps, vocabulary)
    if item_attributes is not None:
        _attach_item_attributes(data, frame, length, item_attributes)
    if consumer_attributes is not None:
        described = consumer_attributes.set_index("user_id").reindex(user_ids)
        columns = {"age_band": age_band(described["age"]), "membership": described["membership"]}
        assert data.consumer is not None
        for c, name in enumerate(CONSUMER_ATTRIBUTES):
            data.attribute_values[name], index = _indexed(columns[name])
            data.consumer[:, c] = columns[name].map(lambda v, index=index: index.get(str(v), 0) if pd.notna(v) else 0)
    return data


def _attach_item_attributes(data: Sequences, frame: pd.DataFrame, length: int, described: pd.DataFrame) -> None:
    """Give every token its item's attribute indices (vocabularies: the values of the items in the sequences)."""
    seen = {i for row in frame["seq_item_ids"] for i in row}
    described = described[described["item_id"].isin(seen)].drop_duplicates("item_id").set_index("item_id")
    by_item: dict[str, np.ndarray] = {}
    columns = []
    for name in ITEM_ATTRIBUTES:
        data.attribute_values[name], index = _indexed(described[name])
        columns.append(described[name].map(lambda v, index=index: index.get(str(v), 0) if pd.notna(v) else 0))
    if columns:
        table = np.stack([c.to_numpy(np.int64) for c in columns], axis=1)
        by_item = dict(zip(described.index, table, strict=True))
    unknown = np.zeros(len(ITEM_ATTRIBUTES), dtype=np.int64)
    assert data.attributes is not None
    for r, seq in enumerate(frame["seq_item_ids"]):
        seq = list(seq)[-length:]
        if seq:
            data.attributes[r, -len(seq) :] = [by_item.get(i, unknown) for i in seq]


def _gaps_or_first(gap: Iterable[float | None]) -> np.ndarray:
    """Seconds since the previous event, -1 for a consumer's first (NULL; DuckDB hands such a list as a masked
    array, a plain list holds None)."""
    if isinstance(gap, np.ma.MaskedArray):
        return np.ma.filled(np.ma.asarray(gap, dtype=np.float64), -1.0)
    values = np.asarray([np.nan if g is None else g for g in gap], dtype=np.float64)
    return np.where(np.isnan(values), -1.0, values)


class ConsumerEncoder(nn.Module):
    """Tokens -> transformer -> mean over real tokens + the consumer's attributes -> projection -> L2-normalised
    consumer embedding.

    :param attribute_sizes: embedding rows of each of ITEM_ATTRIBUTES (1 = the source has none: the table holds only
        the zero unknown row and adds nothing); :param consumer_sizes: the same for CONSUMER_ATTRIBUTES;
    :param future: with the head the future objective needs (only then: a layer drawn at initialisation would move
        the random draws, and so the results, of the other objectives)."""

    def __init__(
        self,
        n_items: int,
        levels: int,
        length: int,
        dim: int,
        layers: int,
        heads: int,
        attribute_sizes: list[int] | None = None,
        consumer_sizes: list[int] | None = None,
        future: bool = False,
    ) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items, dim, padding_idx=PAD)
        self.levels = nn.Embedding(levels + 1, dim, padding_idx=0)
        self.gaps = nn.Embedding(GAP_BUCKETS, dim, padding_idx=0)
        self.positions = nn.Embedding(length, dim)
        self.item_attributes = nn.ModuleList(
            nn.Embedding(n, dim, padding_idx=0) for n in attribute_sizes or [1] * len(ITEM_ATTRIBUTES)
        )
        self.consumer_attributes = nn.ModuleList(
            nn.Embedding(n, dim, padding_idx=0) for n in consumer_sizes or [1] * len(CONSUMER_ATTRIBUTES)
        )
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)
        self.future = nn.Linear(dim, dim) if future else None  # the embedding -> an item query

    def tokens(self, t: Tokens) -> torch.Tensor:
        """Every token's contextual output (B, N, dim); padding positions are masked out of attention."""
        n = t.items.shape[1]
        positions = torch.arange(
            self.positions.num_embeddings - n, self.positions.num_embeddings, device=t.items.device
        )
        x = self.items(t.items) + self.levels(t.levels) + self.gaps(t.gaps) + self.positions(positions)
        for a, table in enumerate(self.item_attributes):
            x = x + table(t.attributes[..., a])
        padding = t.levels == 0
        # a consumer without any token would make attention all -inf: let such rows attend to their padding
        empty = padding.all(dim=1, keepdim=True)
        return self.transformer(x, src_key_padding_mask=padding & ~empty)

    def forward(self, t: Tokens) -> torch.Tensor:
        h = self.tokens(t)
        real = (t.levels > 0).unsqueeze(-1).to(h.dtype)
        pooled = (h * real).sum(1) / real.sum(1).clamp(min=1.0)
        for c, table in enumerate(self.consumer_attributes):
            pooled = pooled + table(t.consumer[:, c])
        return F.normalize(self.out(pooled), dim=-1)


def model_for(data: Sequences, levels: int, settings: EncoderSettings) -> ConsumerEncoder:
    """A fresh encoder shaped for ``data`` (its items, sequence length and attribute vocabularies)."""
    return ConsumerEncoder(
        len(data.vocabulary) + 3,
        levels,
        data.items.shape[1],
        settings.dim,
        settings.layers,
        settings.heads,
        data.sizes(ITEM_ATTRIBUTES),
        data.sizes(CONSUMER_ATTRIBUTES),
        future="future" in objective_parts(settings.objective),
    )


def masked_item_loss(model: ConsumerEncoder, t: Tokens, share: float) -> torch.Tensor:
    """Cross-entropy of the masked tokens' items, predicted from their outputs against the whole item table. A
    masked token hides its attributes too: what is left to tell the item is the consumer's other tokens."""
    real = t.levels > 0
    chosen = real & (torch.rand(t.items.shape, device=t.items.device) < share)
    if not chosen.any():
        return t.items.new_zeros((), dtype=torch.float32)
    hidden = t._replace(
        items=t.items.masked_fill(chosen, MASK), attributes=t.attributes.masked_fill(chosen.unsqueeze(-1), 0)
    )
    h = model.tokens(hidden)
    logits = h[chosen] @ model.items.weight[MASK + 1 :].T  # PAD and MASK are never the answer
    return F.cross_entropy(logits, t.items[chosen] - (MASK + 1))


def _view(t: Tokens) -> Tokens:
    """A random view: keep a contiguous crop of 60-100% of the real tokens and drop 15% of the rest (re-aligned)."""
    items, levels = t.items, t.levels
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
    return _moved(t, order, torch.gather(keep, 1, order))


def _moved(t: Tokens, index: torch.Tensor, kept: torch.Tensor) -> Tokens:
    """Each consumer's tokens re-laid: position j takes the token at ``index[:, j]`` where ``kept[:, j]``, padding
    elsewhere; a token's attributes move with it, the consumer's own stay."""

    def moved(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # per-token attributes: move every column with its token
            gathered = torch.gather(x, 1, index.unsqueeze(-1).expand_as(x))
            return torch.where(kept.unsqueeze(-1), gathered, torch.zeros_like(x))
        return torch.where(kept, torch.gather(x, 1, index), torch.zeros_like(x))

    return Tokens(moved(t.items), moved(t.levels), moved(t.gaps), moved(t.attributes), t.consumer)


def contrastive_loss(model: ConsumerEncoder, t: Tokens, temperature: float) -> torch.Tensor:
    """InfoNCE between two views of each consumer, the batch's other consumers as negatives (both directions)."""
    a = model(_view(t))
    b = model(_view(t))
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _without_last(t: Tokens, drop: torch.Tensor) -> Tokens:
    """Each consumer's tokens without its last ``drop`` real ones, the rest moved right (still right-aligned)."""
    source = torch.arange(t.items.shape[1], device=t.items.device).unsqueeze(0) - drop.unsqueeze(1)
    return _moved(t, source.clamp(min=0), source >= 0)


def future_item_loss(model: ConsumerEncoder, t: Tokens) -> torch.Tensor:
    """Cross-entropy of the items of each consumer's last 20-50% of tokens, predicted from the embedding of the
    tokens before them. Consumers with one token have no before and after; later tokens of the shared unknown item
    are not targets (they name no item)."""
    if model.future is None:
        raise InputError("this consumer encoder was built without the future objective's head")
    n = t.items.shape[1]
    lengths = (t.levels > 0).sum(1)
    share = 0.2 + 0.3 * torch.rand(lengths.shape, device=t.items.device)
    drop = torch.minimum((lengths.float() * share).ceil().long(), lengths - 1).clamp(min=0)
    later = (torch.arange(n, device=t.items.device).unsqueeze(0) >= (n - drop).unsqueeze(1)) & (t.items > UNKNOWN)
    if not later.any():
        return t.items.new_zeros((), dtype=torch.float32)
    query = model.future(model(_without_last(t, drop)))  # (B, dim)
    logits = query @ model.items.weight[MASK + 1 :].T  # (B, items + unknown)
    log_p = F.log_softmax(logits, dim=-1)
    target = (t.items - (MASK + 1)).clamp(min=0)
    picked = torch.gather(log_p, 1, target) * later
    return -picked.sum() / later.sum()


def objective_parts(objective: str) -> frozenset[str]:
    """The objectives ``objective`` sums ("both" = masked + contrastive); an unknown one is an InputError."""
    parts = encoder_objectives(objective)
    if not parts:
        raise InputError(
            f"Unknown consumer encoder objective {objective!r}: one of {ENCODER_OBJECTIVES} or 'both', joined by '+'"
        )
    return parts


def compatible(record: dict[str, Any], settings: EncoderSettings, levels: int, length: int) -> bool:
    """Whether an earlier night's weights record has this model's shape (then :func:`warm_start` can use it)."""
    old = record.get("settings", {})
    return (
        record.get("levels") == levels
        and record.get("length") == length
        and all(old.get(key) == getattr(settings, key) for key in ("dim", "layers", "heads"))
    )


@torch.no_grad()
def warm_start(
    model: ConsumerEncoder,
    vocabulary: list[str],
    record: dict[str, Any],
    attribute_values: dict[str, list[str]] | None = None,
) -> int:
    """Load an earlier night's weights into ``model``: every layer as it was, each item's row by its id and each
    attribute value's row by its value (items and values new tonight keep their random rows). Returns how many
    items were carried over."""
    state = record["state_dict"]
    own = model.state_dict()
    by_value = {"items.weight"} | {
        f"{table}.{i}.weight" for table, names in _ATTRIBUTE_TABLES.items() for i in range(len(names))
    }
    for name, value in state.items():
        if name not in by_value and name in own and own[name].shape == value.shape:
            own[name].copy_(value)
    carried = _rows_by_value(own["items.weight"], state["items.weight"], vocabulary, record["vocabulary"], first=3)
    own["items.weight"][: MASK + 2] = state["items.weight"][: MASK + 2]  # PAD, MASK, UNKNOWN
    old_values = record.get("attribute_values", {})
    for table, names in _ATTRIBUTE_TABLES.items():
        for i, name in enumerate(names):
            key = f"{table}.{i}.weight"
            if key in state and name in old_values:
                _rows_by_value(own[key], state[key], (attribute_values or {}).get(name, []), old_values[name], first=1)
    return carried


# the attribute tables of ConsumerEncoder, in the order of their columns
_ATTRIBUTE_TABLES = {"item_attributes": ITEM_ATTRIBUTES, "consumer_attributes": CONSUMER_ATTRIBUTES}


def _rows_by_value(table: torch.Tensor, old: torch.Tensor, values: list[str], old_values: list[str], first: int) -> int:
    """Copy each value's row of an earlier table (rows ``first``.. in ``old_values`` order) into ``table`` (rows
    ``first``.. in ``values`` order); returns how many values were found."""
    old_rows = {v: i + first for i, v in enumerate(old_values)}
    carried = 0
    for i, value in enumerate(values):
        row = old_rows.get(value)
        if row is not None:
            table[i + first] = old[row]
            carried += 1
    return carried


@torch.no_grad()
def embed(model: ConsumerEncoder, data: Sequences, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Every consumer's embedding (U, dim), float32."""
    model.eval()
    out = []
    for lo in range(0, len(data.user_ids), batch_size):
        batch = Tokens(*(torch.from_numpy(a[lo : lo + batch_size]).to(device) for a in data.arrays()))
        out.append(model(batch).float().cpu().numpy())
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
    parts = objective_parts(settings.objective)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = model_for(data, levels, settings)
    if start_from is not None:
        warm_start(model, data.vocabulary, start_from, data.attribute_values)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    tensors = [torch.from_numpy(a) for a in data.arrays()]
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
            batch = Tokens(*(t[idx].to(device) for t in tensors))
            loss = batch.items.new_zeros((), dtype=torch.float32)
            if "masked" in parts:
                loss = loss + masked_item_loss(model, batch, settings.mask_share)
            if "contrastive" in parts:
                loss = loss + contrastive_loss(model, batch, settings.temperature)
            if "future" in parts:
                loss = loss + future_item_loss(model, batch)
            if loss.requires_grad:  # else no part had anything to learn from in this batch (nothing to step)
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
        # no validation seed (NaN): each epoch replaces the one before, rather than the untrained start staying
        if score > best[0] or np.isnan(score):
            best = (score if not np.isnan(score) else -np.inf, epoch, embeddings)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return TrainedEncoder(model, best[2], best[1], history, round(time.time() - t0, 1))
