from pathlib import Path

import pytest
import yaml

from nightrec.adapters import load_adapter
from nightrec.config import SOURCES_DIR
from nightrec.errors import ConfigError


def test_tmall_levels_are_click_collect_cart_buy():
    a = load_adapter("tmall_brand")
    assert [a.level_of(code) for code in ("0", "2", "3", "1")] == [
        ("click", 1),
        ("collect", 2),
        ("cart", 3),
        ("buy", 4),
    ]
    assert a.level_of("7") == ("7", None)  # unknown codes are kept as words and have no level -> quarantine
    assert a.item_attributes is None and a.user_attributes is None
    assert a.time.day_grain and a.time.year == 2014
    assert a.bundled_events.is_file()


def test_hm_is_one_behaviour_with_attributes():
    a = load_adapter("hm")
    assert a.level_of(None) == ("purchase", 1)
    assert a.max_level == 1
    assert a.item_attributes is not None and a.item_attributes.path.is_file()
    assert a.item_attributes.key == "article_id"
    assert a.user_attributes is not None and a.user_attributes.path.is_file()


@pytest.mark.parametrize(
    ("stars", "level"),
    [("0.5", 1), ("2.0", 1), ("2.5", 2), ("3.0", 2), ("3.5", 3), ("4.0", 3), ("4.5", 4), ("5.0", 4)],
)
def test_movielens_stars_map_to_four_ordinal_levels(stars, level):
    assert load_adapter("movielens").level_of(stars) == (stars, level)


def _write(tmp_path: Path, name: str, mutate) -> Path:
    doc = yaml.safe_load((SOURCES_DIR / "tmall_brand.yaml").read_text())
    doc["name"] = name
    mutate(doc)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["events"]["columns"].pop("user_id"), "must map 'user_id'"),
        (lambda d: d["events"].update(levels={"click": 1, "buy": 3}), "must use every level 1..max"),
        (lambda d: d["events"]["time"].update(format="dd/mm"), "is not one of"),
        (lambda d: d["events"].update(event_type_constant="buy"), "exactly one of"),
        (
            lambda d: d["events"]["event_type_names"].update({"9": "wishlist"}),
            r"\['wishlist'\] .* no entry in events.levels",
        ),
        (lambda d: d.update(nightly_start="2015-01-01"), "must lie inside history"),
        (lambda d: d.update(colour="blue"), r"Unknown key\(s\) \['colour'\]"),
        (lambda d: d.update(has_availability=True), "declares has_availability but .* no 'available' column"),
    ],
)
def test_invalid_adapters_fail_with_the_field_named(tmp_path: Path, mutate, message):
    sources = _write(tmp_path, "custom", mutate)
    with pytest.raises(ConfigError, match=message):
        load_adapter("custom", sources)


def test_a_new_source_needs_only_a_yaml_file(tmp_path: Path):
    """A RetailRocket-style export: epoch millis, view < addtocart < transaction."""

    def retailrocket(d):
        d["events"]["columns"] = {
            "user_id": "visitorid",
            "item_id": "itemid",
            "event_type": "event",
            "event_time": "timestamp",
            "event_id": "event_uuid",
        }
        d["events"]["event_type_names"] = {}
        d["events"]["levels"] = {"view": 1, "addtocart": 2, "transaction": 3}
        d["events"]["time"] = {"format": "epoch-millis"}

    a = load_adapter("custom", _write(tmp_path, "custom", retailrocket))
    assert a.level_of("addtocart") == ("addtocart", 2)
    assert sorted(a.source_columns) == ["event", "event_uuid", "itemid", "timestamp", "visitorid"]


def test_missing_adapter_lists_known_ones():
    with pytest.raises(ConfigError, match=r"known: \['hm', 'movielens', 'tmall_brand'\]"):
        load_adapter("nope")
