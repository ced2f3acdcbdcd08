"""The consumer encoder on small synthetic sequences: tokens, views, the three objectives, and the epoch it keeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nightrec.errors import InputError
from training.consumer_encoder import (
    MASK,
    UNKNOWN,
    ConsumerEncoder,
    EncoderSettings,
    Tokens,
    _view,
    _without_last,
    contrastive_loss,
    embed,
    encode,
    future_item_loss,
    masked_item_loss,
    model_for,
    train,
)


def frame(rows: list[tuple[str, list[str], list[int]]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "seq_item_ids": [r[1] for r in rows],
            "seq_levels": [r[2] for r in rows],
            "seq_gap_seconds": [[None] + [3600] * (len(r[1]) - 1) if r[1] else [] for r in rows],
        }
    )


def test_sequences_become_right_aligned_tokens_with_rare_items_unknown():
    data = encode(frame([("u1", ["a", "b", "a"], [1, 2, 4]), ("u2", ["b", "c"], [1, 1]), ("u3", [], [])]), length=4)
    assert data.vocabulary == ["a", "b"]  # c is seen once: below min_item_count
    a, b = 3, 4
    assert data.items.tolist() == [[0, a, b, a], [0, 0, b, UNKNOWN], [0, 0, 0, 0]]
    assert data.levels.tolist() == [[0, 1, 2, 4], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert data.gaps[0, 1] == 1 and data.gaps[0, 2] > 1 and data.gaps[2].sum() == 0  # first event: bucket 1
    short = encode(frame([("u1", ["a", "b", "a"], [1, 2, 4]), ("u2", ["a", "b"], [1, 1])]), length=2)
    assert short.items[0].tolist() == [b, a]  # the most recent tokens are kept
    with pytest.raises(InputError):
        encode(frame([]), length=4)


def test_the_embedding_is_unit_length_finite_for_an_empty_history_and_blind_to_padding():
    torch.manual_seed(0)
    model = ConsumerEncoder(n_items=6, levels=4, length=5, dim=8, layers=1, heads=2).eval()
    items = torch.tensor([[0, 0, 3, 4, 5], [0, 0, 0, 0, 0]])
    levels = torch.tensor([[0, 0, 1, 2, 4], [0, 0, 0, 0, 0]])
    gaps = torch.tensor([[0, 0, 1, 3, 2], [0, 0, 0, 0, 0]])
    out = model(Tokens.of(items, levels, gaps))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    # what sits in padded positions does not matter
    noisy = items.clone()
    noisy[0, :2] = 5
    assert torch.allclose(model(Tokens.of(noisy, levels, gaps))[0], out[0], atol=1e-5)


def test_a_view_is_a_non_empty_ordered_subsequence_realigned_right():
    torch.manual_seed(1)
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9]])
    levels = (items > 0).long()
    for _ in range(20):
        v_items, v_levels = _view(Tokens.of(items, levels, levels))[:2]
        for row in range(2):
            kept = v_items[row][v_levels[row] > 0].tolist()
            assert kept and kept == sorted(kept)  # order kept (the ids increase along the sequence)
            assert set(kept) <= set(items[row].tolist()) - {0}
            n = len(kept)
            assert (v_levels[row, -n:] > 0).all() and (v_levels[row, :-n] == 0).all()


def _fit(loss_of, n_items: int, length: int, future: bool = False) -> tuple[float, float]:
    torch.manual_seed(0)
    model = ConsumerEncoder(n_items=n_items, levels=4, length=length, dim=16, layers=1, heads=2, future=future)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = loss_of(model).detach().item()
    for _ in range(60):
        loss = loss_of(model)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return first, loss_of(model).detach().item()


def test_the_masked_objective_learns_a_planted_pattern():
    """Consumers of two kinds: item 3 always next to item 4, item 5 next to item 6; the masked item is predictable
    from its neighbours, and the mask and padding ids are never the answer."""
    rng = np.random.default_rng(0)
    items = torch.tensor(np.array([rng.choice([[3, 4] * 3, [5, 6] * 3]) for _ in range(64)]))
    levels, gaps = torch.ones_like(items), torch.full_like(items, 2)
    first, last = _fit(lambda m: masked_item_loss(m, Tokens.of(items, levels, gaps), 0.3), n_items=7, length=6)
    assert last < 0.5 * first and MASK == 1


def test_the_contrastive_objective_learns_to_tell_consumers_apart():
    """64 consumers with their own random histories: two views of one consumer find each other among the batch."""
    rng = np.random.default_rng(0)
    items = torch.tensor(rng.integers(3, 40, size=(64, 8)))
    levels, gaps = torch.ones_like(items), torch.full_like(items, 2)
    first, last = _fit(lambda m: contrastive_loss(m, Tokens.of(items, levels, gaps), 0.2), n_items=40, length=8)
    assert first > 0.8 * np.log(64) and last < 0.6 * first  # from chance towards matching


def test_cutting_the_last_tokens_keeps_the_rest_in_order_right_aligned():
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 7, 8], [0, 0, 0, 0, 0, 9]])
    levels = (items > 0).long()
    t = Tokens(items, levels, levels * 2, items.unsqueeze(-1).repeat(1, 1, 3), torch.tensor([[1, 2], [3, 4], [5, 6]]))
    cut = _without_last(t, torch.tensor([2, 1, 0]))
    assert cut.items.tolist() == [[0, 0, 0, 0, 3, 4], [0, 0, 0, 0, 0, 7], [0, 0, 0, 0, 0, 9]]
    assert torch.equal(cut.levels, (cut.items > 0).long()) and torch.equal(cut.gaps, cut.levels * 2)
    assert torch.equal(cut.attributes[..., 1], cut.items)  # each token's attributes move with it
    assert torch.equal(cut.consumer, t.consumer)


def test_the_future_objective_learns_what_comes_after_from_what_came_before():
    """Consumers of two kinds: items 3 and 4 early are followed by 5 later, items 6 and 7 by 8. Each consumer's
    later tokens are predictable only from their earlier ones (mixed order within each part)."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(64):
        early, later = ([3, 4], 5) if rng.random() < 0.5 else ([6, 7], 8)
        rows.append(list(rng.choice(early, 6)) + [later] * 4)
    items = torch.tensor(np.array(rows))
    levels, gaps = torch.ones_like(items), torch.full_like(items, 2)
    first, last = _fit(lambda m: future_item_loss(m, Tokens.of(items, levels, gaps)), n_items=9, length=10, future=True)
    assert first > 0.8 * np.log(9 - 2) and last < 0.3 * first  # from chance over the items towards certain
    with pytest.raises(InputError, match="future"):  # a model built without the head cannot train on it
        future_item_loss(ConsumerEncoder(9, 4, 10, 16, 1, 2), Tokens.of(items, levels, gaps))
    one_token = Tokens.of(items[:, -1:], levels[:, -1:], gaps[:, -1:])
    model = ConsumerEncoder(9, 4, 1, 16, 1, 2, future=True)
    assert future_item_loss(model, one_token).item() == 0.0  # no before and after: nothing to learn


def test_training_keeps_the_epoch_with_the_best_validation_not_the_last():
    data = encode(
        frame([(f"u{i}", ["a", "b", "c", "a"][: 1 + i % 4], [1, 2, 4, 1][: 1 + i % 4]) for i in range(40)]), 4
    )
    scores = iter([0.2, 0.6, 0.3])
    seen: list[np.ndarray] = []

    def validate(embeddings: np.ndarray) -> float:
        seen.append(embeddings.copy())
        return next(scores)

    settings = EncoderSettings(dim=8, layers=1, heads=2, epochs=3, batch_size=16, objective="both", min_item_count=1)
    trained = train(data, levels=4, settings=settings, device=torch.device("cpu"), validate=validate)
    assert trained.best_epoch == 2 and [h["validation"] for h in trained.history] == [0.2, 0.6, 0.3]
    assert np.array_equal(trained.embeddings, seen[1])
    assert np.allclose(embed(trained.model, data, torch.device("cpu")), seen[1], atol=1e-5)  # the model is epoch 2's
    with pytest.raises(InputError, match="objective"):
        train(data, 4, EncoderSettings(objective="nope"), torch.device("cpu"), validate)
    # the head of the future objective exists only where the objective asks for it (it would move the others' draws)
    assert model_for(data, 4, EncoderSettings(objective="both")).future is None
    summed = EncoderSettings(dim=8, layers=1, heads=2, epochs=1, batch_size=16, objective="both+future")
    assert model_for(data, 4, summed).future is not None
    assert np.isfinite(train(data, 4, summed, torch.device("cpu"), lambda e: 0.5).embeddings).all()
    # a batch with nothing to learn from (one token each: no before and after) is passed over, not an error
    single = encode(frame([(f"u{i}", ["a"], [1]) for i in range(20)]), 4)
    alone = EncoderSettings(dim=8, layers=1, heads=2, epochs=1, batch_size=16, objective="future", min_item_count=1)
    assert train(single, 4, alone, torch.device("cpu"), lambda e: 0.5).history[0]["loss"] == 0.0


def test_a_night_continues_from_the_last_nights_weights_item_by_item():
    from training.consumer_encoder import compatible, warm_start

    torch.manual_seed(0)
    before = ConsumerEncoder(n_items=3 + 3, levels=4, length=5, dim=8, layers=1, heads=2)
    record = {
        "state_dict": before.state_dict(),
        "vocabulary": ["a", "b", "c"],
        "levels": 4,
        "length": 5,
        "settings": {"dim": 8, "layers": 1, "heads": 2},
    }
    settings = EncoderSettings(dim=8, layers=1, heads=2)
    assert compatible(record, settings, levels=4, length=5)
    assert not compatible(record, EncoderSettings(dim=16, layers=1, heads=2), levels=4, length=5)
    assert not compatible(record, settings, levels=4, length=7)
    torch.manual_seed(1)
    tonight = ConsumerEncoder(n_items=3 + 3, levels=4, length=5, dim=8, layers=1, heads=2)
    fresh_row = tonight.items.weight[5].detach().clone()
    assert warm_start(tonight, ["c", "a", "d"], record) == 2  # "b" is gone, "d" is new
    rows = before.items.weight.detach()
    assert torch.equal(tonight.items.weight[3], rows[5]) and torch.equal(tonight.items.weight[4], rows[3])
    assert torch.equal(tonight.items.weight[5], fresh_row)  # a new item keeps its random row
    assert torch.equal(tonight.out.weight, before.out.weight)  # every other layer as it was
    assert torch.equal(tonight.levels.weight, before.levels.weight)


def test_tonights_vectors_are_rotated_onto_last_nights_frame():
    from training.consumer_embeddings import align

    rng = np.random.default_rng(0)
    before = rng.normal(size=(40, 6))
    before /= np.linalg.norm(before, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    tonight = np.vstack([before[5:] @ rotation.T, rng.normal(size=(3, 6))])  # 35 known consumers, 3 new
    users = np.array([f"u{i}" for i in range(5, 40)] + ["n1", "n2", "n3"])
    previous = pd.DataFrame({"user_id": [f"u{i}" for i in range(40)], "embedding": list(before)})
    aligned, info = align(tonight.astype(np.float32), users, previous)
    assert info["aligned"] and info["common_consumers"] == 35
    assert np.allclose(aligned[:35], before[5:], atol=1e-5)  # the same consumers land where they were
    assert info["mean_cosine_to_previous"] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(np.linalg.norm(aligned, axis=1), np.linalg.norm(tonight, axis=1), atol=1e-5)  # a rotation
    few = previous.head(8)  # too few consumers in common to fix a 6-d rotation: left as it is
    unchanged, info = align(tonight.astype(np.float32), users, few)
    assert not info["aligned"] and np.array_equal(unchanged, tonight.astype(np.float32))


def test_validation_seeds_are_the_consumers_of_the_items_ranked_fourth_to_eighth():
    from training.consumer_embeddings import validation_seeds

    # item i (0..9) touched by 30 - i consumers at level 1, bought (level 2) by nobody: the seeds fall back to level 1
    rows = []
    for user in range(40):
        items = [f"i{i}" for i in range(10) if user < 30 - i]
        rows.append((f"u{user:02d}", items, [1] * len(items)))
    data = encode(frame(rows), length=12)
    level, seeds = validation_seeds(data, top_level=2)
    assert level == 1
    assert [len(s) for s in seeds] == [27, 26, 25, 24, 23]  # items i3..i7
    assert seeds[0].tolist() == list(range(27))


def test_a_rerun_of_a_night_from_the_same_weights_gives_the_same_embeddings_bit_for_bit():
    """A night rerun (a retry, a resumed backfill) continues from the same earlier night's weights with the same seed:
    its embedding table must be the same, or tonight's segment ids and audiences would move on a retry."""
    data = encode(
        frame([(f"u{i}", ["a", "b", "c", "d"][: 1 + i % 4], [1, 2, 4, 1][: 1 + i % 4]) for i in range(40)]), 4
    )
    settings = EncoderSettings(dim=8, layers=1, heads=2, epochs=2, batch_size=16, objective="both", min_item_count=1)
    earlier = train(data, 4, settings, torch.device("cpu"), lambda e: float(e.sum()))
    record = {
        "state_dict": earlier.model.state_dict(),
        "vocabulary": list(data.vocabulary),
        "levels": 4,
        "length": data.items.shape[1],
        "settings": {"dim": 8, "layers": 1, "heads": 2},
    }
    runs = [train(data, 4, settings, torch.device("cpu"), lambda e: 0.0, start_from=record) for _ in range(2)]
    assert runs[0].embeddings.tobytes() == runs[1].embeddings.tobytes()
    assert not np.array_equal(runs[0].embeddings, earlier.embeddings)  # it did train on from the earlier weights


def test_tokens_carry_their_items_attributes_and_consumers_their_own():
    """A rare item (the shared unknown row) still tells its category; an item without attributes and a consumer
    nobody described carry zeros; ages fall in their bands at the edges."""
    from training.consumer_encoder import age_band

    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "z"],  # z is in no sequence: its value stays out of the vocabulary
            "category": ["Shoes", "Shirts", "Shoes", "Hats"],
            "subcategory": ["Boot", None, "Sneaker", "Cap"],
            "colour": [None, None, None, None],
        }
    )
    consumers = pd.DataFrame({"user_id": ["u1", "u2"], "age": [24, 65], "membership": ["ACTIVE", None]})
    rows = [("u1", ["a", "b", "a"], [1, 1, 1]), ("u2", ["b", "c", "d"], [1, 1, 1]), ("u3", ["a"], [1])]
    data = encode(frame(rows), length=4, item_attributes=items, consumer_attributes=consumers)
    assert data.vocabulary == ["a", "b"]  # c and d are seen once
    assert data.attribute_values["category"] == ["Shirts", "Shoes"]
    assert data.attribute_values["subcategory"] == ["Boot", "Sneaker"]
    assert data.attribute_values["colour"] == []
    shirts, shoes, boot, sneaker = 1, 2, 1, 2
    assert data.attributes[0, :, :2].tolist() == [[0, 0], [shoes, boot], [shirts, 0], [shoes, boot]]
    assert data.items[1].tolist() == [0, 4, UNKNOWN, UNKNOWN]
    assert data.attributes[1, :, :2].tolist() == [[0, 0], [shirts, 0], [shoes, sneaker], [0, 0]]  # d: none
    assert data.attribute_values["age_band"] == ["65+", "<25"]
    assert data.attribute_values["membership"] == ["ACTIVE"]
    assert data.consumer.tolist() == [[2, 1], [1, 0], [0, 0]]
    assert data.sizes(("category", "colour")) == [3, 1]
    bands = age_band(pd.Series([0, 24, 25, 34, 35, 64, 65, 99, None]))
    assert bands.tolist() == ["<25", "<25", "25-34", "25-34", "35-44", "55-64", "65+", "65+", None]


def test_attributes_reach_the_embedding_move_with_their_token_and_are_hidden_when_it_is_masked():
    from training.consumer_encoder import masked_item_loss, model_for

    torch.manual_seed(0)
    items = torch.tensor([[0, 3, 4, 5, 6], [0, 3, 4, 5, 6]])
    levels = (items > 0).long()
    t = Tokens.of(items, levels, levels)
    t = t._replace(attributes=(items * 10).unsqueeze(-1).expand(-1, -1, 3).clone())
    for _ in range(10):  # each kept token brings its own attributes along
        view = _view(t)
        real = view.levels > 0
        assert torch.equal(view.attributes[..., 0][real], view.items[real] * 10)
        assert (view.attributes[~real] == 0).all()
    data = encode(frame([("u1", ["a", "b"], [1, 1]), ("u2", ["a", "b"], [1, 1])]), 3, min_item_count=1)
    data.attribute_values["membership"] = ["ACTIVE", "PRE-CREATE"]
    data.consumer[:, 1] = [1, 2]  # the same behaviour, two different memberships
    data.attribute_values["category"] = ["Hats", "Shoes"]
    data.attributes[:, 1:, 0] = [1, 2]  # a: Hats, b: Shoes
    model = model_for(data, 4, EncoderSettings(dim=8, layers=1, heads=2)).eval()
    out = model(Tokens(*(torch.from_numpy(a) for a in data.arrays())))
    assert not torch.allclose(out[0], out[1])
    data.consumer[:, 1] = [1, 1]
    same = model(Tokens(*(torch.from_numpy(a) for a in data.arrays())))
    assert torch.allclose(same[0], same[1], atol=1e-6)
    # a masked token tells neither its item nor its attributes to the model
    seen: list[Tokens] = []
    original = model.tokens
    model.tokens = lambda tokens: seen.append(tokens) or original(tokens)  # type: ignore[method-assign]
    masked_item_loss(model, Tokens(*(torch.from_numpy(a) for a in data.arrays())), share=1.0)
    masked = seen[0].items == MASK
    assert masked.sum() == 4 and (seen[0].attributes[masked] == 0).all()


def test_a_night_continues_each_attribute_value_from_last_nights_row():
    from training.consumer_encoder import model_for, warm_start

    def data_with(categories: list[str]) -> object:
        data = encode(frame([("u1", ["a"], [1]), ("u2", ["a"], [1])]), 2, min_item_count=1)
        data.attribute_values["category"] = categories
        return data

    torch.manual_seed(0)
    settings = EncoderSettings(dim=8, layers=1, heads=2)
    before = model_for(data_with(["Hats", "Shoes"]), 4, settings)
    record = {
        "state_dict": before.state_dict(),
        "vocabulary": ["a"],
        "attribute_values": {"category": ["Hats", "Shoes"]},
    }
    tonight_data = data_with(["Bags", "Shoes"])  # Hats gone, Bags new: a table of the same size, other values
    tonight = model_for(tonight_data, 4, settings)
    fresh = tonight.item_attributes[0].weight[1].detach().clone()
    warm_start(tonight, ["a"], record, tonight_data.attribute_values)
    old = before.item_attributes[0].weight.detach()
    assert torch.equal(tonight.item_attributes[0].weight[2], old[2])  # Shoes by value
    assert torch.equal(tonight.item_attributes[0].weight[1], fresh)  # Bags keeps its random row, not Hats'
    assert torch.equal(tonight.item_attributes[0].weight[0], torch.zeros(8))


def test_without_validation_seeds_the_last_epoch_is_kept_not_the_untrained_start():
    data = encode(frame([(f"u{i}", ["a", "b", "c"][: 1 + i % 3], [1, 2, 4][: 1 + i % 3]) for i in range(30)]), 3)
    settings = EncoderSettings(dim=8, layers=1, heads=2, epochs=2, batch_size=16, min_item_count=1)
    trained = train(data, 4, settings, torch.device("cpu"), lambda e: float("nan"))
    assert trained.best_epoch == 2
    assert np.allclose(embed(trained.model, data, torch.device("cpu")), trained.embeddings, atol=1e-5)


def test_attributes_come_from_the_bronze_snapshot_only_where_the_source_declares_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nightrec.warehouse import Warehouse
    from training.consumer_encoder import consumer_attribute_frame, item_attribute_frame

    wh = Warehouse(tmp_path, "hm")
    assert item_attribute_frame(wh, declared=False) is None  # Tmall: no file, nothing to read
    with pytest.raises(InputError, match="ingest_attributes"):
        item_attribute_frame(wh, declared=True)  # declared but never ingested: said, not skipped
    wh.bronze_user_attributes().mkdir(parents=True)
    users = pa.table(
        {
            "user_id": ["1", "2", "3"],
            "age": pa.array([30, None, None], pa.int32()),
            "membership": ["ACTIVE", "PRE-CREATE", None],
        }
    )
    pq.write_table(users, wh.bronze_user_attributes() / "part-00000.parquet")
    read = consumer_attribute_frame(wh, declared=True)
    assert read["user_id"].tolist() == ["1", "2"]  # a consumer with neither value describes nothing
