"""Item attributes in the item tower: vocabularies from the dim_items export, indices per item, and the tower."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nightrec.config import load_settings
from nightrec.errors import InputError
from training.data import ITEM_ATTRIBUTES, ItemAttributes, Vocabulary
from training.towers import Tower

DIM_ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "category": ["Shoes", "Dress", None, "Shoes", "Hats"],
        "subcategory": [None, None, None, None, None],
        "colour": ["Black", "Red", "Black", None, "Blue"],
        "n_users": [3, 2, 1, 1, 1],  # behaviour columns of the mart are never read
    }
)


@pytest.fixture
def settings(tmp_path):
    settings = load_settings("local", env={}).with_overrides(warehouse_root=tmp_path / "warehouse")
    export = settings.warehouse_root / "marts" / "parquet" / "dim_items"
    export.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(DIM_ITEMS, preserve_index=False), export / "part-0.parquet")
    return settings


def test_values_come_from_training_items_and_every_item_with_a_known_value_is_indexed(settings):
    attributes = ItemAttributes.load(settings, Vocabulary(("a", "b", "c")))
    # "Hats" and "Blue" belong to item e only, which training never saw: their embeddings would never be trained
    assert attributes.values == {"category": ("Dress", "Shoes"), "subcategory": (), "colour": ("Black", "Red")}
    assert attributes.cardinalities() == [3, 1, 3]
    got = attributes.index(pd.Series(["a", "b", "c", "d", "e", "unknown"]))
    assert got.shape == (6, len(ITEM_ATTRIBUTES)) and got.dtype == np.int32
    assert got.tolist() == [
        [2, 0, 1],  # a: Shoes, -, Black
        [1, 0, 2],  # b: Dress, -, Red
        [0, 0, 1],  # c: null category, Black
        [2, 0, 0],  # d: not a training item, but its category is known
        [0, 0, 0],  # e: values no training item has
        [0, 0, 0],  # not in dim_items
    ]


def test_a_models_own_vocabularies_are_kept_and_remapped_to(settings):
    champion = {"category": ("Hats", "Shoes"), "subcategory": (), "colour": ("Black",)}
    old = ItemAttributes.load(settings, Vocabulary(("a",)), champion)
    assert old.index(pd.Series(["a", "e", "b"])).tolist() == [[2, 0, 1], [1, 0, 0], [0, 0, 0]]
    new = ItemAttributes.load(settings, Vocabulary(("a", "b", "c")))
    category, subcategory, colour = new.remap_to(champion)
    assert category.tolist() == [0, 0, 2]  # new 1 = Dress (unknown to the champion), new 2 = Shoes
    assert subcategory.tolist() == [0] and colour.tolist() == [0, 1, 0]


def test_a_missing_export_is_a_clear_error(tmp_path):
    settings = load_settings("local", env={}).with_overrides(warehouse_root=tmp_path / "empty")
    with pytest.raises(InputError, match="dim_items"):
        ItemAttributes.load(settings, Vocabulary(("a",)))


def test_attributes_give_items_unseen_in_training_a_place_of_their_own_and_are_learned():
    torch.manual_seed(0)
    tower = Tower(n_ids=5, n_dense=0, dim=4, heads=2, hidden=8, attribute_values=[3, 1, 3])
    unseen = torch.zeros(3, dtype=torch.long)  # three items the model never saw: id 0
    attrs = torch.as_tensor([[1, 0, 2], [1, 0, 2], [2, 0, 1]])
    vectors = tower(unseen, None, attributes=attrs)
    assert vectors.shape == (3, 2, 4)
    assert torch.allclose(vectors[0], vectors[1])  # same attributes, same place
    assert not torch.allclose(vectors[0], vectors[2], atol=1e-3)  # other attributes, another place
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(3, 2))  # sub-embeddings stay unit vectors
    vectors.sum().backward()
    category = tower.attributes[0].weight.grad
    assert category[1].abs().sum() > 0 and category[2].abs().sum() > 0
    assert category[0].abs().sum() == 0  # "unknown" is padding: never learned, adds nothing
    assert tower.attributes[1].weight.abs().sum() == 0  # an attribute without values adds nothing
