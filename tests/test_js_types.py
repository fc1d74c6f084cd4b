"""The browser client's TypeScript declarations against the Python wire schema.

Each message interface of ``static/client.d.ts`` is compared with its msgspec struct in
`liveupdates.protocol` (or, for events, with what the hub puts on the wire), both ways: the
same field names, the same ``type`` tags, literal unions with the same members, and every value
the server can send accepted by the declared type (a ``null`` needs ``| null``). Every server
message type is either declared or listed as untyped, so a new message on either side fails.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

import msgspec
import pytest

from liveupdates import Invalidate, Limits, Set
from liveupdates._pipeline.outbox import event_message, position_prefix
from liveupdates.events import encode_event
from liveupdates.protocol import (
    Cursor,
    Error,
    Resync,
    ServerMessage,
    Subscribed,
    Unsubscribed,
    Welcome,
)

# TypeScript interface -> (struct, the tags its `type` field must list exactly)
DECLARED: dict[str, tuple[type[msgspec.Struct], set[str]]] = {
    "Welcome": (Welcome, {"welcome"}),
    "Subscribed": (Subscribed, {"subscribed"}),
    # what the `resync` listener gets: a resync message, or a subscribed with outcome resync
    "Resync": (Resync, {"resync", "subscribed"}),
    "Unsubscribed": (Unsubscribed, {"unsubscribed"}),
    "ServerError": (Error, {"error"}),
    "Position": (Cursor, set()),
}
# Server messages the client handles without a declared interface (they reach the page as
# `ServerMessage` through the `message` listener only).
UNTYPED = {"ping", "pong", "expiring", "refreshed", "goodbye"}
# Fields where the server sends `null` and client.d.ts declares `field?: T` without `| null`.
# Reported; remove an entry once the declaration says `| null` (the test fails until then).
KNOWN_NULL_GAPS: set[tuple[str, str]] = set()

_INTERFACE = re.compile(
    r"^export interface (\w+)(?:<[^>]*>)?(?: extends ([\w, ]+))? \{\n(.*?)^\}", re.M | re.S
)
_FIELD = re.compile(r"^\s*(?:readonly )?(\w+)(\??): (.+?)\s*$")


class Field(msgspec.Struct, frozen=True):
    optional: bool
    type: str


def declarations() -> dict[str, dict[str, Field]]:
    """Every interface of client.d.ts: its own fields plus those it extends."""
    text = (files("liveupdates") / "static" / "client.d.ts").read_text()
    found: dict[str, dict[str, Field]] = {}
    for name, extends, body in _INTERFACE.findall(text):
        fields: dict[str, Field] = {}
        for base in filter(None, (b.strip() for b in extends.split(","))):
            fields.update(found[base])
        for line in body.splitlines():
            match = _FIELD.match(line)
            if match and "(" not in match[1]:
                fields[match[1]] = Field(match[2] == "?", match[3])
        found[name] = fields
    return found


def split_union(ts: str) -> list[str]:
    """The members of a TypeScript union, split at the top level."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(ts):
        depth += char in "({[<"
        depth -= char in ")}]>"
        if char == "|" and depth == 0:
            parts.append(ts[start:i].strip())
            start = i + 1
    parts.append(ts[start:].strip())
    return parts


def ts_kinds(ts: str) -> set[str]:
    """What a TypeScript type accepts, as JSON kinds: string, number, boolean, null, array,
    object, "'literal'", or "unknown" (anything)."""
    kinds: set[str] = set()
    for member in split_union(ts):
        if member.startswith("'"):
            kinds.add(member)
        elif member in ("string", "(string & {})"):
            kinds.add("string")
        elif member in ("number", "boolean", "null", "unknown"):
            kinds.add(member)
        elif member.endswith("[]") or member == "QueryKey":  # QueryKey = readonly unknown[]
            kinds.add("array")
        elif member.startswith(("{", "Record<")):
            kinds.add("object")
        else:
            raise AssertionError(f"teach ts_kinds the TypeScript type {member!r}")
    return kinds


def py_kinds(info: msgspec.inspect.Type) -> set[str]:
    """The JSON kinds a msgspec type encodes to."""
    match info:
        case msgspec.inspect.UnionType(types=types):
            return set().union(*(py_kinds(t) for t in types))
        case msgspec.inspect.LiteralType(values=values):
            return {f"'{v}'" for v in values}
        case msgspec.inspect.StrType():
            return {"string"}
        case msgspec.inspect.IntType() | msgspec.inspect.FloatType():
            return {"number"}
        case msgspec.inspect.BoolType():
            return {"boolean"}
        case msgspec.inspect.NoneType():
            return {"null"}
        case msgspec.inspect.ListType() | msgspec.inspect.TupleType():
            return {"array"}
        case msgspec.inspect.DictType() | msgspec.inspect.StructType():
            return {"object"}
        case msgspec.inspect.AnyType():
            return {"unknown"}
    raise AssertionError(f"teach py_kinds the msgspec type {info!r}")


def accepts(ts: set[str], kind: str) -> bool:
    if "unknown" in ts or kind in ts:
        return True
    return kind.startswith("'") and "string" in ts


def struct_fields(cls: type[msgspec.Struct]) -> dict[str, tuple[bool, set[str]]]:
    """Each wire field of a struct: (may be absent, the kinds of the values it carries)."""
    config = cls.__struct_config__
    out: dict[str, tuple[bool, set[str]]] = {}
    for field in msgspec.structs.fields(cls):
        kinds = py_kinds(msgspec.inspect.type_info(field.type))
        may_be_absent = config.omit_defaults and not field.required
        if may_be_absent and field.default is None:
            kinds.discard("null")  # omitted rather than sent as null
        out[field.encode_name] = (may_be_absent, kinds)
    return out


def mismatches(interface: str, ts: dict[str, Field], py: dict[str, Any]) -> dict[str, str]:
    """What differs, by "Interface.field" (or "Interface.field null": a null not declared)."""
    problems = {}
    for name in ts.keys() - py.keys() - {"type"}:
        problems[f"{interface}.{name}"] = "declared, but the server never sends it"
    for name in py.keys() - ts.keys():
        problems[f"{interface}.{name}"] = "sent by the server, but not declared"
    for name in ts.keys() & py.keys():
        may_be_absent, sent = py[name]
        declared = ts_kinds(ts[name].type)
        where = f"{interface}.{name}"
        if may_be_absent and not ts[name].optional:
            problems[where] = f"may be absent: declare it `{name}?`"
        elif any(k.startswith("'") for k in sent) and declared != sent:
            problems[where] = f"literals {sorted(sent)} declared as {sorted(declared)}"
        elif missing := sorted(k for k in sent if not accepts(declared, k)):
            problems[where + (" null" if missing == ["null"] else "")] = f"{missing} undeclared"
    return problems


def tags(ts: Field) -> set[str]:
    return {k.strip("'") for k in ts_kinds(ts.type) if k.startswith("'")}


def test_every_server_message_is_declared_or_listed_as_untyped() -> None:
    sent = {cls.__struct_config__.tag for cls in ServerMessage.__args__}
    declared = {tag for _, wanted in DECLARED.values() for tag in wanted}
    assert sent == declared | UNTYPED
    assert not declared & UNTYPED
    in_ts = {name for name, fields in declarations().items() if "type" in fields}
    in_ts -= {"ServerMessage", "LiveEvent"}  # any message; events (below)
    assert in_ts == DECLARED.keys() - {"Position"}


@pytest.mark.parametrize("interface", sorted(DECLARED))
def test_message_interface_matches_its_struct(interface: str) -> None:
    cls, wanted_tags = DECLARED[interface]
    ts = declarations()[interface]
    if wanted_tags:
        assert tags(ts["type"]) == wanted_tags
        assert cls.__struct_config__.tag in wanted_tags
    problems = mismatches(interface, ts, struct_fields(cls))
    known = {f"{i}.{name} null" for i, name in KNOWN_NULL_GAPS if i == interface}
    assert problems.keys() == known, problems  # a fixed gap fails too: update KNOWN_NULL_GAPS


def test_welcome_limits_match_the_public_limits() -> None:
    declared = declarations()["Welcome"]["limits"].type
    names = set(re.findall(r"(\w+): number", declared))
    assert names == Limits().public().keys()
    assert all(isinstance(v, int | float) for v in Limits().public().values())


def test_live_event_matches_what_the_hub_sends() -> None:
    ts = declarations()["LiveEvent"]
    assert {"invalidate", "set"} <= tags(ts["type"]) and "string" in ts_kinds(ts["type"].type)
    # the position fields are spliced in front of the event body: take them from a real one
    body = encode_event(Invalidate(["jobs"]))
    message = event_message(position_prefix("topic:jobs", "e1"), "topic:jobs", "e1", 7, body,
                            None, 0.0)  # fmt: skip
    position = {k for k in json.loads(message.text) if k not in json.loads(body)}
    assert position == {"stream", "epoch", "offset"}
    py: dict[str, tuple[bool, set[str]]] = {
        "stream": (False, {"string"}),
        "epoch": (False, {"string"}),
        "offset": (False, {"number"}),
    }
    for event in (Invalidate, Set):  # each also may be absent: the other kind lacks it
        for name, (_, kinds) in struct_fields(event).items():
            py[name] = (True, kinds)
    assert mismatches("LiveEvent", ts, py) == {}
