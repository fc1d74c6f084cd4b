"""Where an event goes: a topic, one user (all their connections), or everyone.

Each target is one stream. Stream names are what positions, history and the wire use:
``all``, ``user:<id>`` and ``topic:<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

EVERYONE_STREAM: Final = "all"
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9_.:/@-]{1,200}")


def is_valid_topic(name: str) -> bool:
    """Whether `name` is a valid topic name (1-200 of ``A-Z a-z 0-9 _ . : / @ -``)."""
    return _TOPIC_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Topic:
    """Every connection subscribed (and authorised) to topic `name`."""

    name: str

    def __post_init__(self) -> None:
        if not is_valid_topic(self.name):
            raise ValueError(f"invalid topic name {self.name!r}")

    @property
    def stream(self) -> str:
        return "topic:" + self.name


@dataclass(frozen=True, slots=True)
class User:
    """Every connection authenticated as user `id`: all their tabs and devices."""

    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("a user id is a non-empty string")

    @property
    def stream(self) -> str:
        return "user:" + self.id


@dataclass(frozen=True, slots=True)
class _Everyone:
    """Every connection."""

    @property
    def stream(self) -> str:
        return EVERYONE_STREAM

    def __repr__(self) -> str:
        return "Everyone"


Everyone: Final = _Everyone()
"""Every connection: the target of the ``all`` stream, which each connection joins."""
Target: TypeAlias = Topic | User | _Everyone
"""What `Hub.publish` takes in ``to=`` (one, or an iterable of several)."""


def streams_of(to: Target | Iterable[Target]) -> list[str]:
    """The distinct stream names of one target or several, in the order given."""
    if isinstance(to, Topic | User | _Everyone):
        return [to.stream]
    streams = list(dict.fromkeys(t.stream for t in to))
    if not streams:
        raise ValueError("publish needs at least one target")
    return streams
