"""The ranker's reads of one anchor's candidates: a column at a time, only the rows of the users asked for, and the
training set built from them (keys decide rows and order, features taken as float32)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.anchors import Window
from training.ranker import Behaviour, Candidates, training_set

DAY = date(2014, 7, 16)
NAMES = ["score__history", "pair__days_total"]


def _candidates(tmp_path) -> Candidates:
    """Two files of an anchor, users interleaved, NaN features and a list column, as the candidate job writes."""
    anchor = tmp_path / f"anchor={DAY.isoformat()}"
    anchor.mkdir()
    rows = [
        ("u2", "b", ["history"], 1.0, 3.0),
        ("u1", "a", ["history", "popular_30d"], float("nan"), 1.0),
        ("u3", "c", ["popular_30d"], 0.5, float("nan")),
        ("u1", "c", ["covisitation"], 0.25, 2.0),
        ("u2", "a", ["popular_30d"], float("nan"), float("nan")),
        ("u4", "d", ["history"], 2.0, 5.0),
    ]
    for part, chunk in enumerate((rows[:3], rows[3:])):
        users, items, sources, history, days = zip(*chunk, strict=True)
        table = pa.table(
            {
                "user_id": list(users),
                "item_id": list(items),
                "sources": pa.array(list(sources), pa.list_(pa.string())),
                "score__history": pa.array(history, pa.float64()),
                "pair__days_total": pa.array(days, pa.float64()),
            }
        )
        pq.write_table(table, anchor / f"part-{part:05d}.parquet")
    return Candidates(tmp_path)


def test_a_read_for_some_users_equals_the_whole_table_filtered(tmp_path):
    candidates = _candidates(tmp_path)
    whole = candidates.table(DAY)
    users = {"u1", "u3", "nobody"}
    filtered = whole.filter(pa.array([u in users for u in whole.column("user_id").to_pylist()]))
    # the same rows (NaN too) in user order, a user's rows in file order: u1's a (first file) before c (second)
    expected = filtered.to_pandas().sort_values("user_id", kind="stable").reset_index(drop=True)
    read = candidates.table(DAY, users)
    assert read.schema == whole.schema and read.num_rows == 3
    pairs = list(zip(read.column("user_id").to_pylist(), read.column("item_id").to_pylist(), strict=True))
    assert pairs == [("u1", "a"), ("u1", "c"), ("u3", "c")]
    pd.testing.assert_frame_equal(read.to_pandas(), expected)
    some = candidates.table(DAY, users, ["user_id", "score__history"])
    pd.testing.assert_frame_equal(some.to_pandas(), expected[["user_id", "score__history"]])
    assert candidates.table(DAY, set()).num_rows == 0
    assert candidates.table(DAY, set()).schema == whole.schema


def test_the_training_set_keeps_buyers_with_a_purchase_among_their_candidates_sorted(tmp_path):
    candidates = _candidates(tmp_path)
    # u1 bought c (and clicked a), u2 bought an item that is not among their candidates, u4 only clicked d
    pairs = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u4"],
            "item_id": ["c", "a", "z", "d"],
            "ds": [DAY, DAY, DAY, DAY],
            "max_level_reached": [4, 1, 4, 1],
        }
    )
    data = training_set(candidates, Behaviour(pairs, top_level=4), (Window(DAY, 7),), NAMES)
    # only u1 has a purchase among their candidates; rows sorted by item, labels from the window
    assert data.labels.tolist() == [1, 4]
    assert data.groups.tolist() == [2]
    assert data.features.dtype == np.float32
    expected = np.array([[np.nan, 1.0], [0.25, 2.0]], np.float32)
    assert np.array_equal(data.features, expected, equal_nan=True)
    assert data.anchors == [DAY.isoformat()] and data.positives == 1
