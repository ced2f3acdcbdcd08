"""The one-pass Redis store's encodings against Feast's own: entity keys (the Redis key of every lookup) and the
protobuf length prefixes its responses are assembled from."""

from __future__ import annotations

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from nightrec import feast_redis


@pytest.mark.parametrize(
    "value",
    [
        Value(string_val="1079284"),
        Value(string_val=""),
        Value(string_val="ünïcödé-客户"),
        Value(int64_val=0),
        Value(int64_val=-7),
        Value(int64_val=2**62),
    ],
)
def test_entity_keys_match_feasts_serialization(value):
    ours = feast_redis._entity_key_prefix("user_id") + feast_redis._value_suffix(value)
    assert ours == serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[value]), 3)


def test_other_key_kinds_are_left_to_feast():
    assert feast_redis._value_suffix(Value(int32_val=3)) is None
    assert feast_redis._value_suffix(Value()) is None


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 300_000])
def test_length_prefixed_values_parse_back(length):
    """A FeatureVector assembled from stored value bytes parses to the values, on both sides of the 2-byte and the
    precomputed-varint limits (long list features exceed 16 KiB)."""
    values = [Value(string_val="x" * length), Value(), Value(int64_list_val={"val": list(range(length % 1000))})]
    wire = b"".join(feast_redis._length_prefixed(b"\x0a", v.SerializeToString()) for v in values)
    vector = GetOnlineFeaturesResponse.FeatureVector.FromString(wire)
    assert list(vector.values) == values
