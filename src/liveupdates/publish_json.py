"""Publish requests as JSON, for producers outside Python (the HTTP API, the command line).

One request names its targets and its event, as `Hub.publish` takes them::

    {"to": {"user": "alice"}, "event": {"type": "invalidate", "keys": [["jobs"]]}}
    {"to": [{"topic": "jobs"}, {"everyone": true}],
     "event": {"type": "set", "key": ["jobs", 7, "progress"], "data": {"done": 9}}}
    {"to": {"topic": "jobs"}, "event": {"type": "job.failed", "job_id": 7, "error": "disk full"}}

An event of any other type is an application event: its fields are sent as given. `parse`
validates a request completely (or raises `InvalidRequest` saying where and why) and returns it
`prepare`d: encoded once, as `Hub.publish` would, ready for `Hub.publish_prepared` or
`Producer.publish_prepared`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ._pipeline.publisher import Prepared as Prepared  # (what a request becomes)
from .errors import LiveUpdatesError
from .events import (
    POSITION_FIELDS,
    RESERVED_TYPES,
    Event,
    Invalidate,
    Set,
    encode_event,
    encode_json,
    event_slot,
)
from .targets import Everyone, Target, Topic, User

EVENT_TYPE_PATTERN: Final = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}"
_EVENT_TYPE_RE: Final = re.compile(EVENT_TYPE_PATTERN)
MAX_USER_ID: Final = 200


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Bounds of one request: targets, query keys per invalidation, and the event's JSON."""

    max_targets: int = 100
    max_keys: int = 100
    max_event_bytes: int = 65_536


class InvalidRequest(LiveUpdatesError):
    """A publish request that cannot be published: `path` says where (``$.event.keys``)."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{message} - at `{path}`" if path != "$" else message)
        self.message, self.path = message, path


class _TargetIn(msgspec.Struct, forbid_unknown_fields=True):
    user: str | msgspec.UnsetType = msgspec.UNSET  # (null is refused, as a wrong type)
    topic: str | msgspec.UnsetType = msgspec.UNSET
    everyone: bool | msgspec.UnsetType = msgspec.UNSET


class PublishIn(msgspec.Struct, forbid_unknown_fields=True):
    """One publish request (the JSON shape above)."""

    to: _TargetIn | list[_TargetIn]
    event: dict[str, Any]


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Several publish requests, published in order."""

    requests: list[PublishIn]


def decode(body: bytes, shape: type[Any]) -> Any:
    """Decode JSON `body` as `shape` (`PublishIn` or `BatchIn`); raises `InvalidRequest`."""
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `")
        raise InvalidRequest(message, path.rstrip("`") or "$") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None


def parse(request: PublishIn, limits: RequestLimits, path: str = "$") -> Prepared:
    """Validate `request` and encode its event once; raises `InvalidRequest`."""
    streams = _streams(request.to, limits, path + ".to")
    event, body = _event(request.event, limits, path + ".event")
    if len(body) > limits.max_event_bytes:
        raise InvalidRequest(f"the event is larger than {limits.max_event_bytes} bytes", path)
    return Prepared(event, body, event_slot(event), streams)


def _streams(to: _TargetIn | list[_TargetIn], limits: RequestLimits, path: str) -> list[str]:
    many = isinstance(to, list)
    targets = to if isinstance(to, list) else [to]
    if not targets:
        raise InvalidRequest("give at least one target", path)
    if len(targets) > limits.max_targets:
        raise InvalidRequest(f"at most {limits.max_targets} targets", path)
    streams = [_target(t, f"{path}[{n}]" if many else path).stream for n, t in enumerate(targets)]
    return list(dict.fromkeys(streams))


def _target(target: _TargetIn, path: str) -> Target:
    given = [n for n in ("user", "topic", "everyone") if getattr(target, n) is not msgspec.UNSET]
    if len(given) != 1:
        raise InvalidRequest('a target is one of {"user": id}, {"topic": name}, '
                             '{"everyone": true}', path)  # fmt: skip
    if isinstance(target.user, str):
        if not 0 < len(target.user) <= MAX_USER_ID:
            raise InvalidRequest(f"a user id has 1 to {MAX_USER_ID} characters", path + ".user")
        return User(target.user)
    if isinstance(target.topic, str):
        try:
            return Topic(target.topic)
        except ValueError as exc:
            raise InvalidRequest(str(exc), path + ".topic") from None
    if target.everyone is not True:
        raise InvalidRequest('"everyone" must be true', path + ".everyone")
    return Everyone


def _event(fields: dict[str, Any], limits: RequestLimits, path: str) -> tuple[Event, bytes]:
    kind = fields.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest("an event needs a string `type`", path)
    if kind == "invalidate":
        _only(fields, {"type", "keys"}, path)
        keys = fields.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, list) for k in keys):
            raise InvalidRequest("`keys` is a non-empty list of query keys", path + ".keys")
        if len(keys) > limits.max_keys:
            raise InvalidRequest(f"at most {limits.max_keys} query keys", path + ".keys")
        return _checked(lambda: Invalidate(keys), path + ".keys")
    if kind == "set":
        _only(fields, {"type", "key", "data"}, path)
        if "key" not in fields or "data" not in fields:
            raise InvalidRequest("a set event has `key` and `data`", path)
        return _checked(lambda: Set(fields["key"], fields["data"]), path + ".key")
    if not _EVENT_TYPE_RE.fullmatch(kind):
        raise InvalidRequest(f"an event type matches {EVENT_TYPE_PATTERN}", path + ".type")
    if kind in RESERVED_TYPES or kind.startswith("lu."):
        raise InvalidRequest(f"event type {kind!r} is reserved by the protocol", path + ".type")
    clash = POSITION_FIELDS.intersection(fields)
    if clash:
        raise InvalidRequest(f"fields {sorted(clash)} are reserved (the position)", path)
    body = encode_json({"type": kind, **fields})  # (the type first, as events are encoded)
    return application_event(kind)(), body


def _only(fields: dict[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field `{unknown[0]}`", path)


def _checked(make: Any, path: str) -> tuple[Event, bytes]:
    try:
        event: Event = make()
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc), path) from None
    return event, encode_event(event)


@functools.lru_cache(maxsize=1024)
def application_event(name: str) -> type[Event]:
    """An `Event` class of tag `name` without fields: stands for a JSON application event
    (the hub's throttle rules match it by type); its body is the request's JSON."""
    cls: type[Event] = msgspec.defstruct(name, [], bases=(Event,), tag=name)  # type: ignore[assignment]
    return cls
