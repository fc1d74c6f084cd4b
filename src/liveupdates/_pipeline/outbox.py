"""A connection's pending output: bounded, merging, collapsing into `resync` when full.

Pending messages keep their order, with three kinds of merges (each moves the merged message to
the newest position, which is always safe: a later refetch sees a later state):

- invalidations of one stream merge into one, with the union of their keys;
- events of one stream with the same latest-value-wins slot keep only the newest;
- past `max_messages` or `max_bytes`, everything pending for a stream collapses into one
  `resync` of that stream, which then absorbs that stream's later events until it is sent.

Messages without a stream (control messages: `welcome`, `error`, `pong`...) are never merged.

Merging is done once per stream, not once per connection: in a burst, every connection of a
stream has the same invalidations pending. Each invalidation's keys are decoded once, on its
shared message; merged keys live in a shared, append-only `_Run`, and each outbox holds an
immutable `_Merged` view of its first keys. The first outbox to merge a message into a view
keeps the result on that view, and the others holding it take the same one (`_merge`), whose
text is rendered once. An outbox whose pending keys went another way merges into a copy.
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

    __slots__ = (
        "_frame", "body", "epoch", "keys", "merged", "offset", "size", "slot", "stream", "text",
        "ts",
    )  # fmt: skip

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
        # an invalidation's keys, decoded once (`_keys_of`), and its first merge (`_merge`)
        self.keys: list[tuple[bytes, QueryKey]] | None = None
        self.merged: tuple[Message, _Merged] | None = None

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


def _keys_of(message: Message) -> list[tuple[bytes, QueryKey]]:
    """The keys of an invalidation message, encoded each: decoded once per message."""
    keys = message.keys
    if keys is None:
        decoded = _invalidate_decoder.decode(message.body).keys
        keys = message.keys = [(encode_json(key), key) for key in decoded]
    return keys


class _Run:
    """The keys of a run of invalidations of one stream, in first-seen order: append-only.

    Outboxes that merged the same invalidations share a run, each through a `_Merged` view of
    its first keys; only the view of all its keys (its tail) extends it.
    """

    __slots__ = ("keys",)

    def __init__(self, keys: dict[bytes, QueryKey]) -> None:
        self.keys = keys


class _Merged:
    """Invalidations of one stream merged while pending: the first `count` keys of a `_Run`, at
    the position of the newest. Never changes once made: the outboxes of every connection
    that merged the same invalidations hold the same one, and its text is rendered once."""

    __slots__ = (
        "_frame", "_text", "count", "epoch", "merged", "offset", "run", "size", "stream", "ts",
    )  # fmt: skip

    def __init__(self, run: _Run, size: int, last: Message) -> None:
        self.run, self.count, self.size = run, len(run.keys), size
        self.stream, self.epoch, self.offset = last.stream, last.epoch, last.offset
        self.ts = last.ts
        self.merged: tuple[Message, _Merged] | None = None  # its next merge (`_merge`)
        self._text: str | None = None
        self._frame: str | None = None

    @property
    def text(self) -> str:
        text = self._text
        if text is None:
            stream = self.stream or ""
            keys = list(itertools.islice(self.run.keys.values(), self.count))
            body = encode_json(Invalidate(keys))
            prefix = position_prefix(stream, self.epoch)
            text = self._text = event_message(
                prefix, stream, self.epoch, self.offset, body, INVALIDATE_SLOT, self.ts
            ).text
        return text

    @property
    def frame(self) -> str:
        if self._frame is None:
            self._frame = "[" + self.text + "]"
        return self._frame


def _merge(old: Message | _Merged, message: Message) -> _Merged:
    """`old` (pending) and the invalidation `message` merged: the union of their keys, at the
    position of `message`.

    Done once per stream, not per connection: the first merge of `old` with `message` is kept
    on `old`, and every other outbox holding `old` that gets `message` takes the same result.
    A merge extends the run of `old` in place when `old` holds all its keys (the usual case:
    each message is merged once, by the first connection); an outbox whose pending keys went
    another way (it fell behind, or joined) copies them into a run of its own.
    """
    memo = old.merged
    if memo is not None and memo[0] is message:
        return memo[1]
    if isinstance(old, _Merged) and old.count == len(old.run.keys):
        run, size = old.run, old.size  # the run holds exactly the keys of `old`: extend it
    elif isinstance(old, _Merged):
        run = _Run(dict(itertools.islice(old.run.keys.items(), old.count)))
        size = old.size
    else:
        run = _Run({})
        size = len(old.text) - len(old.body)  # the position fields
        size += _add(run.keys, _keys_of(old))
    size += _add(run.keys, _keys_of(message))
    merged = _Merged(run, size, message)
    if memo is None:
        old.merged = message, merged
    return merged


def _add(keys: dict[bytes, QueryKey], new: list[tuple[bytes, QueryKey]]) -> int:
    """Add `new` keys to `keys`; the bytes they add."""
    added = 0
    for encoded, key in new:
        if encoded not in keys:
            keys[encoded] = key
            added += len(encoded) + 1
    return added


class _PendingResync:
    __slots__ = ("epoch", "offset", "reason", "size", "stream")

    def __init__(self, stream: str, epoch: str, offset: int, reason: str) -> None:
        self.stream, self.epoch, self.offset, self.reason = stream, epoch, offset, reason
        self.size = 100 + len(stream)

    @property
    def text(self) -> str:
        return encode_message(Resync(self.stream, self.epoch, self.offset, self.reason))

    @property
    def frame(self) -> str:
        return "[" + self.text + "]"


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
_Item = Message | _Merged | _PendingResync


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
                    item = _merge(old, message)
        items[key] = item
        self._bytes += item.size
        count = len(items)
        if count > self.max_messages or self._bytes > self.max_bytes:
            self._collapse()
        if was_empty and self.on_pending is not None:
            self.on_pending()
        return 2 * count >= self.max_messages or 2 * self._bytes >= self.max_bytes

    def push_unordered(self, message: Message) -> bool:
        """`push` a control message whose place among events does not matter (a ping): a
        broadcast in progress is not settled first, so it goes on straight to the sockets
        (a ping pushed while it reaches this connection leaves in one frame with its event)."""
        guard = self.guard
        if guard is None or not guard.active:
            return self.push(message)
        guard.active = False
        try:
            return self.push(message)
        finally:
            guard.active = True

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
            frame = only.frame  # (a message's, or merged invalidations': shared)
        else:
            frame = "[" + ",".join([m.text for m in items.values()]) + "]"
        items.clear()
        self._resyncs.clear()
        self._bytes = 0
        self.drained_ts, self._first_ts = self._first_ts, 0.0
        return frame
