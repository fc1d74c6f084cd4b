"""The typed event schema: what the server says about the data a client shows.

Events are msgspec structs tagged by their ``type`` field. Two are built in:

- `Invalidate`: the data under these query keys changed, refetch it. Keys are JSON arrays
  matched by prefix, as in TanStack Query (``["jobs"]`` covers ``["jobs", 7]``).
- `Set`: latest-value-wins data for exactly one key (progress); newer replaces older.

Applications define their own events by subclassing `Event` with a tag::

    class JobFailed(Event, tag="job.failed"):
        job_id: int
        error: str

Payload fields may be msgspec structs, pydantic models, dataclasses or plain JSON values.
An event is encoded once, when it is published, whatever the number of receivers.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

QueryKey: TypeAlias = list[Any]

RESERVED_TYPES: Final = frozenset(
    {
        "hello", "subscribe", "unsubscribe", "welcome", "subscribed", "unsubscribed",
        "resync", "error", "ping", "pong", "refresh", "refreshed", "expiring", "goodbye",
    }
)  # fmt: skip
INVALIDATE_SLOT: Final = "inv"
# The position fields, which the server puts in front of every event's body on the wire: an
# event's own field of that name would come after it and win in the client's JSON.parse.
POSITION_FIELDS: Final = frozenset({"stream", "epoch", "offset"})


class Event(msgspec.Struct, tag_field="type"):
    """Base class of every event. Subclass it with ``tag="your.type"``."""

    def coalesce_key(self) -> str | None:
        """The latest-value-wins identity of this event, or None to keep every one.

        Two pending events of one stream with the same non-None key are merged: only the newer
        is delivered. Override it in an application event to make it latest-value-wins.
        """
        return None


class Invalidate(Event, tag="invalidate"):
    """The data under `keys` changed: clients refetch every query whose key starts with one.

    `keys` is one query key (``["jobs"]``) or a list of them (``[["jobs"], ["stats"]]``).
    """

    keys: list[Any]

    def __post_init__(self) -> None:
        keys: Any = self.keys
        if not isinstance(keys, list) or not keys:
            raise ValueError("Invalidate needs a query key or a non-empty list of query keys")
        if not all(isinstance(k, list) for k in keys):
            keys = [keys]
        for key in keys:
            _check_key(key)
        self.keys = merge_keys(keys)


class Set(Event, tag="set"):
    """Latest-value-wins `data` for exactly the query `key` (for example a job's progress)."""

    key: QueryKey
    data: Any

    def __post_init__(self) -> None:
        _check_key(self.key)

    def coalesce_key(self) -> str | None:
        return "set:" + _encoder.encode(self.key).decode()


def _check_key(key: object) -> None:
    if not isinstance(key, list) or not key:
        raise ValueError(f"a query key is a non-empty JSON array, not {key!r}")


def merge_keys(keys: list[QueryKey]) -> list[QueryKey]:
    """The keys in first-seen order, without duplicates or covered keys.

    A key is covered when a shorter key of the list is a prefix of it (TanStack Query's
    partial match: ``["jobs"]`` covers ``["jobs", 7]``). Linear in the total length of the keys.
    """
    prefixes = [[encode_json(key[:n]) for n in range(1, len(key) + 1)] for key in keys]
    present = {p[-1] for p in prefixes}
    merged: list[QueryKey] = []
    seen: set[bytes] = set()
    for key, key_prefixes in zip(keys, prefixes, strict=True):
        if key_prefixes[-1] in seen or any(p in present for p in key_prefixes[:-1]):
            continue
        seen.add(key_prefixes[-1])
        merged.append(key)
    return merged


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_encoder: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
_checked_types: set[type[Event]] = set()


def _check_type(cls: type[Event]) -> None:
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{cls.__name__} needs a string tag: class {cls.__name__}(Event, tag=...)")
    if cls not in (Invalidate, Set) and (
        tag in RESERVED_TYPES or tag in ("invalidate", "set") or tag.startswith("lu.")
    ):
        raise TypeError(f"event type {tag!r} is reserved by the protocol")
    clash = POSITION_FIELDS.intersection(cls.__struct_encode_fields__)
    if clash:
        raise TypeError(
            f"{cls.__name__}: the field names {sorted(clash)} are reserved (the position)"
        )
    _checked_types.add(cls)


def encode_event(event: Event) -> bytes:
    """The event's JSON body, ``{"type": ..., ...fields}``. Raises TypeError or ValueError."""
    cls = type(event)
    if cls not in _checked_types:
        _check_type(cls)
    try:
        return _encoder.encode(event)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"cannot encode {cls.__name__}: {exc}") from exc


def event_slot(event: Event) -> str | None:
    """The outbox slot of an event: how pending copies of it merge (see `Outbox`)."""
    if isinstance(event, Invalidate):
        return INVALIDATE_SLOT
    return event.coalesce_key()


def encode_json(value: Any) -> bytes:
    """Encode any JSON value (used for query keys and control messages)."""
    return _encoder.encode(value)
