from pathlib import Path

import pandas as pd

from nightrec.upscale import copy_suffix, new_user_id, upscale
from tests.conftest import raw_tmall


def test_upscale_replicates_users_and_keeps_their_behaviour(tmp_path: Path, tmall):
    out = upscale(tmall, 3, tmp_path / "x3.csv")
    big = pd.read_csv(out, dtype=str, keep_default_na=False)
    raw = raw_tmall()
    assert len(big) == 3 * len(raw)
    assert big["user_id"].nunique() == 3 * raw["user_id"].nunique()
    for k in range(3):
        copy = big[big["user_id"].str.endswith(f"x{k}")] if k else big[~big["user_id"].str.contains("x")]
        restored = copy.assign(user_id=copy["user_id"].str.replace(f"x{k}", "", regex=False)) if k else copy
        pd.testing.assert_frame_equal(restored.reset_index(drop=True), raw)


def test_new_user_id():
    assert new_user_id("10944750", 0) == "10944750"
    assert new_user_id("10944750", 7) == "10944750x7"
    # the benchmarks append the suffix to ids inside built tables: the same ids as the up-scaled history's
    assert [copy_suffix(k) for k in range(3)] == ["", "x1", "x2"]


def test_the_benchmarks_copy_a_built_table_as_the_up_scaler_copies_the_log():
    import pyarrow as pa

    from benchmarks._scratch import copied_users  # (a namespace package: benchmarks/ has no __init__)

    raw = raw_tmall().head(500)
    copied = copied_users(pa.Table.from_pandas(raw, preserve_index=False), 3).to_pandas()
    assert len(copied) == 3 * len(raw) and list(copied.columns) == list(raw.columns)
    expected = [new_user_id(u, k) for k in range(3) for u in raw["user_id"]]
    assert copied["user_id"].tolist() == expected
    rest = [c for c in raw.columns if c != "user_id"]
    pd.testing.assert_frame_equal(copied[rest].iloc[1000:].reset_index(drop=True), raw[rest])
