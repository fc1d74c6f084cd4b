"""A connection's pending output: bounded, merging, collapsing into `resync` when full.

Pending messages keep their order, with three kinds of merges (each moves the merged message to
the newest position, which is always safe: a later refetch sees a later state):

- invalidations of one stream merge into one, with the union of their keys;
- events of one stream with the same latest-value-wins slot keep only the newest;
- past `max_messages` or `max_bytes`, everything pending for a stream collapses into one
  `resync` of that stream, which then absorbs that stream's later events until it is sent.

Messages without a stream (control messages: `welcome`, `error`, `pong`...) are never merged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

import msgspec

from ..events import INVALIDATE_SLOT, Invalidate, QueryKey, encode_json
from ..protocol import Resync, ServerMessage, encode_message


class Message:
    """One message ready for the wire. Event messages are shared by every receiving connection."""

    __slots__ = ("_frame", "body", "epoch", "offset", "size", "slot", "stream", "text", "ts")

    def __init__(
        self,
        text: str,
        stream: str | None = None,
        epoch: str = "",
        offset: int = 0,
        slot: str | None = None,
        body: bytes = b"",
        ts: float = 0.0,
    ) -> None:
        self.text = text
        self.size = len(text)
        self.stream, self.epoch, self.offset = stream, epoch, offset
        self.slot, self.body, self.ts = slot, body, ts
        self._frame: str | None = None

    @property
    def frame(self) -> str:
        """This message alone as a frame; built once, however many connections send it."""
        if self._frame is None:
            self._frame = "[" + self.text + "]"
        return self._frame


def control_message(message: ServerMessage) -> Message:
    """A server message that belongs to no stream (never merged)."""
    return Message(encode_message(message))


def position_prefix(stream: str, epoch: str) -> str:
    """The start of every event message of a stream epoch, up to the offset value."""
    return '{"stream":' + encode_json(stream).decode() + ',"epoch":' + encode_json(epoch).decode()


def event_message(
    prefix: str, stream: str, epoch: str, offset: int, body: bytes, slot: str | None, ts: float
) -> Message:
    """Splice the position in front of an encoded event body: no re-encoding per receiver."""
    text = prefix + ',"offset":' + str(offset) + "," + body[1:].decode()
    return Message(text, stream, epoch, offset, slot, body, ts)


_invalidate_decoder: Final = msgspec.json.Decoder(Invalidate)


class _PendingInvalidate:
    """Invalidations of one stream merged while pending: keys accumulate, rendered once."""

    __slots__ = ("epoch", "keys", "offset", "size", "stream", "ts")

    def __init__(self, first: Message) -> None:
        self.stream = first.stream
        self.keys: dict[bytes, QueryKey] = {}
        self.size = len(first.text) - len(first.body)  # the position fields
        self.epoch, self.offset, self.ts = first.epoch, first.offset, first.ts
        self.add(first)

    def add(self, message: Message) -> None:
        self.epoch, self.offset, self.ts = message.epoch, message.offset, message.ts
        for key in _invalidate_decoder.decode(message.body).keys:
            encoded = encode_json(key)
            if encoded not in self.keys:
                self.keys[encoded] = key
                self.size += len(encoded) + 1

    def render(self) -> str:
        stream = self.stream or ""
        body = encode_json(Invalidate(list(self.keys.values())))
        prefix = position_prefix(stream, self.epoch)
        return event_message(
            prefix, stream, self.epoch, self.offset, body, INVALIDATE_SLOT, self.ts
        ).text


class _PendingResync:
    __slots__ = ("epoch", "offset", "reason", "size", "stream")

    def __init__(self, stream: str, epoch: str, offset: int, reason: str) -> None:
        self.stream, self.epoch, self.offset, self.reason = stream, epoch, offset, reason
        self.size = 100 + len(stream)

    def render(self) -> str:
        return encode_message(Resync(self.stream, self.epoch, self.offset, self.reason))


class OrderGuard:
    """Shared by the outboxes of one hub: while `active`, anything queued calls `settle` first.

    The flusher activates it while a broadcast is in progress (its message not yet in the
    outboxes of the connections it has yet to reach); `settle` queues that message there, so
    that whatever comes next is queued after it.
    """

    __slots__ = ("active", "settle")

    def __init__(self, settle: Callable[[], None]) -> None:
        self.active = False
        self.settle = settle


_Key = tuple[str, str] | int
_Item = Message | _PendingInvalidate | _PendingResync


class Outbox:
    """Bounded pending output of one connection, drained into one frame at a time.

    `on_pending` is called whenever the outbox stops being empty (the hub's flusher then
    schedules a send).
    """

    __slots__ = (
        "_bytes", "_first_ts", "_resyncs", "_seq", "drained_ts", "guard", "items", "max_bytes",
        "max_messages", "merged", "on_pending", "overflow_resyncs", "overflows",
    )  # fmt: skip

    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        on_pending: Callable[[], None] | None = None,
        guard: OrderGuard | None = None,
    ) -> None:
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.on_pending, self.guard = on_pending, guard
        # what is pending, in order (the flusher checks it for emptiness)
        self.items: dict[_Key, _Item] = {}
        self._resyncs: dict[str, _PendingResync] = {}
        self._seq = itertools.count()
        self._bytes = 0
        self.merged = 0  # messages absorbed by a merge, a replacement or a pending resync
        self.overflows = 0  # times the bounds were exceeded and output collapsed
        self.overflow_resyncs = 0  # streams resynced by those collapses
        self._first_ts = 0.0  # publish time of the oldest pending event
        self.drained_ts = 0.0  # ...of the oldest event in the last drained frame (0: none)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def push(self, message: Message) -> bool:
        """Queue a message without waiting; merge it or collapse the outbox when needed.

        Returns True when the outbox is at least half full: the publisher should let the
        flusher run before it queues more.
        """
        guard = self.guard
        if guard is not None and guard.active:
            guard.settle()
        items = self.items
        if not items and message.size <= self.max_bytes:  # nothing pending: the usual case
            slot, stream = message.slot, message.stream
            items[next(self._seq) if stream is None or slot is None else (stream, slot)] = message
            self._bytes, self._first_ts = message.size, message.ts
            if self.on_pending is not None:
                self.on_pending()
            return self.max_messages <= 2 or 2 * message.size >= self.max_bytes
        stream = message.stream
        if stream is not None and self._resyncs:
            resync = self._resyncs.get(stream)
            if resync is not None:
                resync.epoch, resync.offset = message.epoch, max(resync.offset, message.offset)
                self.merged += 1
                return False
        slot = message.slot
        key: _Key = next(self._seq) if stream is None or slot is None else (stream, slot)
        was_empty = not items
        if message.ts and not self._first_ts:
            self._first_ts = message.ts
        item: _Item = message
        if isinstance(key, tuple):
            old = items.pop(key, None)
            if old is not None:
                self.merged += 1
                self._bytes -= old.size
                if slot == INVALIDATE_SLOT and not isinstance(old, _PendingResync):
                    pending = (
                        old if isinstance(old, _PendingInvalidate) else _PendingInvalidate(old)
                    )
                    pending.add(message)
                    item = pending
        items[key] = item
        self._bytes += item.size
        count = len(items)
        if count > self.max_messages or self._bytes > self.max_bytes:
            self._collapse()
        if was_empty and self.on_pending is not None:
            self.on_pending()
        return 2 * count >= self.max_messages or 2 * self._bytes >= self.max_bytes

    def resync(self, stream: str, epoch: str, offset: int, reason: str) -> None:
        """Replace everything pending for `stream` by one `resync`, which absorbs later events.

        The `resync` takes the place of the oldest message it replaces: what was queued after
        that (a `pong`, another stream's events) still comes after it.
        """
        self.settle()
        items = self.items
        was_empty = not items
        pending = self._resyncs.get(stream)
        if pending is None:
            pending = self._resyncs[stream] = _PendingResync(stream, epoch, offset, reason)
            self._bytes += pending.size
        else:
            pending.epoch, pending.offset = epoch, max(pending.offset, offset)
        key: _Key = (stream, "\x00resync")
        kept: dict[_Key, _Item] = {}
        for k, item in items.items():
            if item.stream != stream:
                kept[k] = item
            else:
                if item is not pending:
                    self._bytes -= item.size
                    self.merged += 1
                kept.setdefault(key, pending)
        kept.setdefault(key, pending)
        self.items = kept
        if was_empty and self.on_pending is not None:
            self.on_pending()

    def settle(self) -> None:
        """Let a broadcast in progress queue its message here first (see `OrderGuard`)."""
        guard = self.guard
        if guard is not None and guard.active:
            guard.settle()

    def _collapse(self) -> None:
        newest: dict[str, _Item] = {}
        for item in self.items.values():
            if item.stream is not None and not isinstance(item, _PendingResync):
                newest[item.stream] = item
        if not newest:
            return  # only control messages: bounded by the client's own message rate
        self.overflows += 1
        for stream, item in newest.items():
            self.resync(stream, item.epoch, item.offset, "overflow")
        self.overflow_resyncs += len(newest)

    def drain(self) -> str | None:
        """Everything pending as one frame (a JSON array), or None when nothing is pending."""
        items = self.items
        if not items:
            return None
        if len(items) == 1:
            (only,) = items.values()
            frame = only.frame if isinstance(only, Message) else "[" + only.render() + "]"
        else:
            texts = [m.text if isinstance(m, Message) else m.render() for m in items.values()]
            frame = "[" + ",".join(texts) + "]"
        items.clear()
        self._resyncs.clear()
        self._bytes = 0
        self.drained_ts, self._first_ts = self._first_ts, 0.0
        return frame
