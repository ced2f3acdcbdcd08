"""Segment ids kept across nights, stability (ARI), k by silhouette and labels: known inputs, known answers."""

from __future__ import annotations

import numpy as np
import pytest

from nightrec import segments


def test_k_is_the_best_silhouette_and_a_tie_goes_to_fewer_segments() -> None:
    assert segments.choose_k({3: 0.21, 4: 0.35, 5: 0.30}) == 4
    assert segments.choose_k({6: 0.4, 4: 0.4, 5: 0.1}) == 4
    with pytest.raises(ValueError):
        segments.choose_k({})


def test_the_first_night_numbers_its_segments_from_zero() -> None:
    assert segments.match_segments(np.eye(3), None) == [0, 1, 2]


def test_a_segment_keeps_its_id_when_the_clustering_reorders_it() -> None:
    previous = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    ids = [7, 2, 4]
    # tonight's clusters: the same places in another order, slightly moved
    tonight = previous[[2, 0, 1]] + 0.05
    assert segments.match_segments(tonight, previous, ids, next_id=8) == [4, 7, 2]


def test_a_new_segment_gets_an_id_never_used_before() -> None:
    previous = np.array([[1.0, 0.0], [0.0, 1.0]])
    tonight = np.array([[0.0, 1.1], [5.0, 5.0], [1.1, 0.0]])
    # id 9 was used on an earlier night (next_id 10): the new segment is 10, not 9
    ids = segments.match_segments(tonight, previous, [3, 9], next_id=10)
    assert ids[0] == 9 and ids[2] == 3
    assert ids[1] == 10
    # fewer segments tonight: each keeps the nearest id, none is invented
    assert segments.match_segments(np.array([[0.0, 0.9]]), previous, [3, 9], next_id=10) == [9]


def test_ari_is_one_for_the_same_partition_under_other_names() -> None:
    before = [0, 0, 1, 1, 2, 2, 2]
    after = [5, 5, 3, 3, 9, 9, 9]
    assert segments.adjusted_rand_index(segments.contingency(before, after)) == pytest.approx(1.0)


def test_ari_of_a_split_cluster_matches_the_pair_counting_formula() -> None:
    # pairs together in both: 1; in `before`: 2; in `after`: 1; of 6 pairs -> (1 - 1/3) / (1.5 - 1/3) = 4/7
    table = segments.contingency([0, 0, 1, 1], [0, 0, 1, 2])
    assert table.tolist() == [[2, 0, 0], [0, 1, 1]]
    assert segments.adjusted_rand_index(table) == pytest.approx(4 / 7)


def test_ari_of_unrelated_partitions_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    before, after = rng.integers(0, 5, 20_000), rng.integers(0, 5, 20_000)
    assert abs(segments.adjusted_rand_index(segments.contingency(before, after))) < 0.01


def test_behaviour_words_name_what_differs_from_everyone() -> None:
    everyone = segments.Behaviour(events=20.0, top_level_share=0.2, recency_days=30.0)
    heavy_recent_buyers = segments.Behaviour(events=45.0, top_level_share=0.5, recency_days=10.0)
    assert segments.behaviour_tags(heavy_recent_buyers, everyone) == ["heavy", "buyers", "recent"]
    light_lapsed = segments.Behaviour(events=5.0, top_level_share=0.2, recency_days=70.0)
    assert segments.behaviour_tags(light_lapsed, everyone) == ["light", "lapsed"]
    assert segments.behaviour_tags(segments.Behaviour(22.0, 0.25, 28.0), everyone) == []


def test_a_label_joins_distinct_top_names_and_the_behaviour_words() -> None:
    assert segments.label(["Trousers", "Trousers", "Jeans", "Shorts", "Skirt"], ["heavy", "buyers"]) == (
        "Trousers, Jeans, Shorts · heavy buyers"
    )
    assert segments.label([], []) == "no distinctive items"


def test_only_complete_nights_count_and_the_lists_read_the_segments_of_two_nights_before(tmp_path) -> None:
    from datetime import date

    from nightrec.warehouse import complete_nights

    for night, done in [("2014-08-12", True), ("2014-08-13", True), ("2014-08-14", False), ("2014-08-15", True)]:
        folder = tmp_path / f"ds={night}"
        folder.mkdir()
        (folder / "part-0.parquet").write_bytes(b"")
        if done:
            (folder / "_SUCCESS").write_text("{}")
    (tmp_path / ".tmp-ds=2014-08-16-abc").mkdir()  # a night still being written
    (tmp_path / ".tmp-ds=2014-08-16-abc" / "_SUCCESS").write_text("{}")
    nights = complete_nights(tmp_path)
    assert nights == [date(2014, 8, 12), date(2014, 8, 13), date(2014, 8, 15)]
    assert complete_nights(tmp_path, before=date(2014, 8, 15)) == [date(2014, 8, 12), date(2014, 8, 13)]
    # the lists for 08-16 are made by night 08-15, before that night's own segments: night 08-14 at the latest,
    # which is incomplete here, so 08-13
    assert segments.membership_night(nights, date(2014, 8, 16)) == date(2014, 8, 13)
    assert segments.membership_night(nights, date(2014, 8, 17)) == date(2014, 8, 15)
    assert segments.membership_night(nights, date(2014, 8, 13)) is None
