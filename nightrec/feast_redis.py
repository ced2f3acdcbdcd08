"""A Redis online store for Feast that serves a multi-view lookup in one pass (select it with
``online_store: type: nightrec.feast_redis.OnePassRedisOnlineStore`` in feature_store.yaml).

Feast's own Redis store (0.67) already sends one pipeline per lookup; what a 100-entity `serving` lookup spends is
Python work per (entity, view, feature): a protobuf entity key and its serialization per entity and view, one HMGET
per entity and view, every stored value parsed into a ValueProto and then copied, one by one, into the response.
This store reads and writes the same keys and fields (it is Feast's store for materialization, deletion and
teardown) and builds the same response, but for reads:

- views keyed by the same entity share one Redis hash (``user_features`` and ``user_sequence`` both live under the
  user's key), so it sends one HMGET per entity for all of them, and (on a single Redis server) sends them as one
  server-side script call per entity key type, whose one reply hiredis parses in C (a server whose ACL refuses
  scripts gets the HMGETs as one pipeline instead, after one warning);
- a single-column entity key (string or int64, what this project's entities are) is serialized directly;
- each FeatureVector of the response is assembled as protobuf wire bytes from the stored value bytes and parsed once,
  in C, instead of being parsed value by value and copied;
- the response's ``to_dict`` (and so ``to_df``, ``to_arrow``) converts plain scalars and lists without Feast's
  per-value type dispatch, and hands every other kind of value to Feast's converter.

Requests it does not handle this way (versioned views, view-version metadata, join-key aliases, composite or other
key types) go through Feast's path unchanged. tests/integration/test_feature_store.py compares its responses with
Feast's store on a real Redis server, value for value.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from feast import FeatureView, RepoConfig, utils
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisClient,
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.online_response import TIMESTAMP_POSTFIX, OnlineResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType  # the int enum Feast's key encoding packs
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType as FeatureType
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import ResponseError

logger = logging.getLogger(__name__)

STORE_TYPE = "nightrec.feast_redis.OnePassRedisOnlineStore"

# protobuf wire tags (field number << 3 | 2, length-delimited) of the messages the response is made of
_RESULTS_TAG = b"\x12"  # GetOnlineFeaturesResponse.results = 2
_VALUES_TAG = b"\x0a"  # FeatureVector.values = 1
_STATUSES_TAG = b"\x12"  # FeatureVector.statuses = 2 (packed enum)
_TIMESTAMPS_TAG = b"\x1a"  # FeatureVector.event_timestamps = 3
_PRESENT = 1  # FieldStatus.PRESENT: what Feast's Redis store reports for every requested row
_TS_CACHE_LIMIT = 65_536
# HMGET of the same fields (ARGV) from every key (KEYS), as one reply per key: one command instead of one per key
_HMGET_ALL = """
local out = {}
for i, key in ipairs(KEYS) do
    out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
"""
# Value kinds that Feast's converter returns as they are (scalars) or as a plain list of their elements
_AS_IS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val", "bytes_val"})
_AS_LIST = frozenset({f"{kind[:-4]}_list_val" for kind in _AS_IS})
# feature types whose string values Feast turns into uuid.UUID: left to its converter
_UUID_TYPES = frozenset(
    {
        FeatureType.UUID,
        FeatureType.TIME_UUID,
        FeatureType.UUID_LIST,
        FeatureType.TIME_UUID_LIST,
        FeatureType.UUID_SET,
        FeatureType.TIME_UUID_SET,
    }
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SHORT_VARINTS = [_varint(n) for n in range(1 << 14)]  # lengths below 16 KiB: a list lookup


def _length_prefixed(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SHORT_VARINTS[n] if n < 16384 else _varint(n)) + payload


def _entity_key_prefix(join_key: str) -> bytes:
    """Feast's serialization (version 3) of a one-column entity key up to its value: count, key type, key."""
    encoded = join_key.encode("utf8")
    return struct.pack("<III", 1, ValueType.STRING, len(encoded)) + encoded


def _value_suffix(value: ValueProto) -> bytes | None:
    """The value part of a version-3 entity key for the kinds this store serializes itself; None for the rest."""
    kind = value.WhichOneof("val")
    if kind == "string_val":
        raw = value.string_val.encode("utf8")
        return struct.pack("<II", ValueType.STRING, len(raw)) + raw
    if kind == "int64_val":
        return struct.pack("<IIq", ValueType.INT64, 8, value.int64_val)
    return None


class OnePassRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis settings (connection_string, key_ttl_seconds, client, ...), under this store's type name."""

    type: Literal["nightrec.feast_redis.OnePassRedisOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


class PlainOnlineResponse(OnlineResponse):
    """Feast's OnlineResponse with a ``to_dict`` that skips the per-value type dispatch for plain values."""

    def to_dict(self, include_event_timestamps: bool = False) -> dict[str, list]:
        response: dict[str, list] = {}
        for ref, vector in zip(self.proto.metadata.feature_names.val, self.proto.results, strict=True):
            feature_type = self._feature_types.get(ref)
            if feature_type in _UUID_TYPES:
                response[ref] = [feast_value_type_to_python_type(v, feature_type) for v in vector.values]
            else:
                response[ref] = [_python_value(v, feature_type) for v in vector.values]
            if include_event_timestamps:
                response[ref + TIMESTAMP_POSTFIX] = [ts.seconds for ts in vector.event_timestamps]
        return response


def _python_value(value: ValueProto, feature_type: FeatureType | None) -> object:
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _AS_IS:
        return getattr(value, kind)
    if kind in _AS_LIST:
        return list(getattr(value, kind).val)
    return feast_value_type_to_python_type(value, feature_type)


class _ReadRequest(NamedTuple):
    """The arguments Feast's OnlineStore.get_online_features passes to the per-view read, in its order."""

    config: RepoConfig
    grouped_refs: list
    join_key_values: dict
    entity_name_to_join_key_map: dict
    online_features_response: object
    full_feature_names: bool
    include_feature_view_version_metadata: bool


class _Group:
    """The requested views that share one entity key: one HMGET per unique entity for all their fields."""

    def __init__(self, tables: list[tuple[int, FeatureView, list[str]]], redis_keys: list[bytes], idxs, n_rows: int):
        self.tables = tables  # (position in the request, view, requested feature names)
        self.redis_keys = redis_keys
        self.idxs = idxs  # per unique entity, the request rows it answers
        self.n_rows = n_rows
        self.fields: list[bytes | str] = []
        for _, view, features in tables:
            self.fields.extend(_mmh3(f"{view.name}:{f}") for f in features)
            self.fields.append(f"_ts:{view.name}")


class OnePassRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store with a one-pass read path for feature-service lookups (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._normalised_ts: dict[bytes | None, bytes] = {}
        self._hmget_script = None  # registered on first use (redis-py's Script: EVALSHA, loaded when missing)
        self._scripts_refused = False

    # -- reads -------------------------------------------------------------------------------------------------------

    def get_online_features(self, *args, **kwargs) -> OnlineResponse:
        response = super().get_online_features(*args, **kwargs)
        return PlainOnlineResponse(response.proto, response._feature_types)

    async def get_online_features_async(self, *args, **kwargs) -> OnlineResponse:
        response = await super().get_online_features_async(*args, **kwargs)
        return PlainOnlineResponse(response.proto, response._feature_types)

    def _read_features_per_fv(self, *args, **kwargs) -> None:
        request = _ReadRequest(*args, **kwargs)
        groups = self._plan(request)
        if groups is None:
            super()._read_features_per_fv(*request)
            return
        self._fill(groups, self._hmget_groups(request.config, groups), request)

    def _hmget_groups(self, config: RepoConfig, groups: list[_Group]) -> list:
        """Every group's HMGETs. On a single Redis server (not a cluster, whose keys live on several nodes; not the
        GLIDE client) one server-side script per group runs them: redis-py would otherwise pack and parse each of the
        hundreds of replies in Python, which was the largest cost left in a 100-entity lookup."""
        cfg = config.online_store
        if self._scripts_refused or not self._scripts_allowed(cfg):
            return self._read_hash_fields(config, [(k, g.fields) for g in groups for k in g.redis_keys])
        client = self._get_client(cfg)
        if self._hmget_script is None:
            self._hmget_script = client.register_script(_HMGET_ALL)
        try:
            with client.pipeline(transaction=False) as pipe:
                for group in groups:
                    self._hmget_script(keys=group.redis_keys, args=group.fields, client=pipe)
                return [reply for group_replies in pipe.execute() for reply in group_replies]
        except ResponseError as exc:  # e.g. NOPERM: an ACL that denies scripting; the pipeline needs only HMGET
            self._scripts_refused = True
            logger.warning("Redis refused the lookup script (%s); reading with one pipeline of HMGETs from now on", exc)
            return self._hmget_groups(config, groups)

    @staticmethod
    def _scripts_allowed(cfg: RedisOnlineStoreConfig) -> bool:
        return cfg.redis_type != RedisType.redis_cluster and cfg.client == RedisClient.redis

    async def _read_features_per_fv_async(self, *args, **kwargs) -> None:
        request = _ReadRequest(*args, **kwargs)
        groups = self._plan(request)
        if groups is None:
            await super()._read_features_per_fv_async(*request)
            return
        client = await self._get_client_async(request.config.online_store)
        async with client.pipeline(transaction=False) as pipe:
            for group in groups:
                for key in group.redis_keys:
                    pipe.hmget(key, group.fields)
            replies = await pipe.execute()
        self._fill(groups, replies, request)

    def _plan(self, request: _ReadRequest) -> list[_Group] | None:
        """The HMGETs to send, grouped by entity key; None where Feast's own path must answer."""
        if request.include_feature_view_version_metadata:
            return None
        config = request.config
        by_key: dict[tuple[str, ...], list[tuple[int, FeatureView, list[str]]]] = {}
        for position, (table, requested) in enumerate(request.grouped_refs):
            if table.projection.join_key_map:
                return None
            if _versioned_fv_name(table, config) != table.name:
                return None
            join_keys = tuple(sorted(c.name for c in table.entity_columns))
            by_key.setdefault(join_keys, []).append((position, table, list(requested)))
        project = config.project.encode("utf8")
        groups = []
        for join_keys, tables in by_key.items():
            entities, idxs, n_rows = utils._get_unique_entities(
                tables[0][1], request.join_key_values, request.entity_name_to_join_key_map
            )
            keys = self._redis_keys(join_keys, entities, project, config.entity_key_serialization_version)
            if keys is None:
                return None
            groups.append(_Group(tables, keys, idxs, n_rows))
        return groups

    @staticmethod
    def _redis_keys(
        join_keys: tuple[str, ...], entities: Sequence[dict[str, ValueProto]], project: bytes, version: int
    ) -> list[bytes] | None:
        if len(join_keys) != 1 or version != 3:
            return None
        (join_key,) = join_keys
        prefix = _entity_key_prefix(join_key)
        keys = []
        for entity in entities:
            suffix = _value_suffix(entity[join_key])
            if suffix is None:
                return None
            keys.append(prefix + suffix + project)
        return keys

    def _fill(self, groups: list[_Group], replies: Sequence[Sequence[bytes | None]], request: _ReadRequest) -> None:
        """Append one FeatureVector per requested feature, in request order, as Feast's Redis store would."""
        response, full_feature_names = request.online_features_response, request.full_feature_names
        per_view: dict[int, tuple[list[str], list[bytes]]] = {}  # by position in the request: Feast's order
        offset = 0
        for group in groups:
            n_entities = len(group.redis_keys)
            group_replies = replies[offset : offset + n_entities]
            offset += n_entities
            row_entity = [0] * group.n_rows  # the unique entity that answers each request row
            for entity, rows in enumerate(group.idxs):
                for row in rows:
                    row_entity[row] = entity
            field = 0
            for position, table, features in group.tables:
                names, blobs = per_view[position] = [], []
                ts_field = field + len(features)
                stamps = [_length_prefixed(_TIMESTAMPS_TAG, self._timestamp(r[ts_field])) for r in group_replies]
                tail = _length_prefixed(_STATUSES_TAG, bytes([_PRESENT]) * group.n_rows) + b"".join(
                    stamps[e] for e in row_entity
                )
                view = table.projection.name_to_use()
                for f, feature in enumerate(features):
                    encoded = [_length_prefixed(_VALUES_TAG, r[field + f] or b"") for r in group_replies]
                    vector = b"".join(encoded[e] for e in row_entity) + tail
                    blobs.append(_length_prefixed(_RESULTS_TAG, vector))
                    names.append(f"{view}__{feature}" if full_feature_names else feature)
                _track(table.name, len(features) * group.n_rows)
                field = ts_field + 1
        for position in sorted(per_view):
            response.metadata.feature_names.val.extend(per_view[position][0])
        response.MergeFromString(b"".join(b"".join(per_view[p][1]) for p in sorted(per_view)))

    def _timestamp(self, stored: bytes | None) -> bytes:
        """The event timestamp as Feast's store returns it: parsed, through a float and a datetime, and back (so
        sub-microsecond parts round the same way). Memoised: a night's rows share a handful of timestamps."""
        cached = self._normalised_ts.get(stored)
        if cached is not None:
            return cached
        ts = Timestamp()
        if stored:
            ts.ParseFromString(stored)
        out = Timestamp()
        out.FromDatetime(datetime.fromtimestamp(ts.seconds + ts.nanos / 1_000_000_000.0, tz=UTC))
        if len(self._normalised_ts) >= _TS_CACHE_LIMIT:
            self._normalised_ts.clear()
        self._normalised_ts[stored] = encoded = out.SerializeToString()
        return encoded


def _track(view: str, present: int) -> None:
    """Feast's per-view status counters (a no-op unless its metrics are on), as its own read path keeps them."""
    try:
        from feast.metrics import track_feature_statuses

        track_feature_statuses(view, present, 0)
    except Exception:  # as in Feast's own read path: a metrics failure never fails a lookup
        pass
