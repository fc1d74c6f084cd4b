"""Positions in a stream, and the record a backplane carries for every published event."""

from __future__ import annotations

import msgspec


class Position(msgspec.Struct, frozen=True):
    """Where a stream is: its `epoch` (changes when history may be lost) and `offset`."""

    epoch: str
    offset: int


class Publication(msgspec.Struct, frozen=True, array_like=True):
    """One event published on one stream, as the backplane stores and delivers it.

    `body` is the event's JSON (``{"type": ..., ...}``), encoded once by the publisher.
    `slot` says how pending copies merge in a slow client's outbox (see `event_slot`).
    `ts` is the publisher's wall-clock time (seconds), for lag metrics.
    """

    stream: str
    epoch: str
    offset: int
    body: bytes
    slot: str | None = None
    ts: float = 0.0

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)


class Replay(msgspec.Struct, frozen=True):
    """What a backplane holds of a stream after some position.

    `head` is the stream's current position. `publications` are the events after the asked
    position, oldest first, up to `head`. `complete` is False when the asked position is not
    in the retained history (too old, or another epoch): then `publications` is empty and the
    client must resync.
    """

    head: Position
    publications: list[Publication]
    complete: bool
