"""The in-memory backplane: one process, history in a bounded deque per stream."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.lowlevel

from ..errors import HubClosed
from ..positions import Position, Publication, Replay
from .base import Backplane, Receiver


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    history: deque[tuple[float, Publication]] = field(default_factory=deque)
    touched: float = 0.0


class MemoryBackplane(Backplane):
    """Events, positions and history for hubs of one process (the default, ``memory://``).

    History keeps at most `history_size` events per stream, none older than `history_ttl`
    seconds. A stream idle for longer than `history_ttl` is forgotten; when it is used again it
    gets a new epoch, so clients resync rather than trust offsets that restarted.
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history_size < 1 or history_ttl <= 0:
            raise ValueError("history_size must be >= 1 and history_ttl > 0")
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._receivers: list[Receiver] = []
        self._last_sweep = clock()

    async def start(self, receiver: Receiver) -> None:
        self._receivers.append(receiver)

    async def aclose(self) -> None:
        self._receivers.clear()

    async def listen(self, stream: str) -> None:
        pass  # every publication is delivered; the hub ignores streams it has no interest in

    async def unlisten(self, stream: str) -> None:
        pass

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if not self._receivers:
            raise HubClosed("the backplane is not started")
        now = self._clock()
        state = self._stream(stream, now)
        state.offset += 1
        publication = Publication(stream, state.epoch, state.offset, body, slot, time.time())
        history = state.history
        history.append((now, publication))
        if len(history) > self.history_size:
            history.popleft()
        self._trim(state, now)
        for receiver in self._receivers:
            receiver.deliver(publication)
        await anyio.lowlevel.checkpoint_if_cancelled()  # the hub decides when writers get a turn
        return publication

    async def replay(self, stream: str, since: Position | None) -> Replay:
        now = self._clock()
        state = self._stream(stream, now)
        self._trim(state, now)
        head = Position(state.epoch, state.offset)
        if since is None or since == head:
            return Replay(head, [], True)
        history = state.history
        oldest = history[0][1].offset if history else state.offset + 1
        if since.epoch != state.epoch or since.offset > state.offset or since.offset < oldest - 1:
            return Replay(head, [], False)
        missed = [pub for _, pub in history if pub.offset > since.offset]
        return Replay(head, missed, True)

    def _stream(self, name: str, now: float) -> _Stream:
        if now - self._last_sweep > self.history_ttl:
            self._sweep(now)
        state = self._streams.get(name)
        if state is None:
            state = self._streams[name] = _Stream(epoch=secrets.token_hex(6))
        state.touched = now
        return state

    def _trim(self, state: _Stream, now: float) -> None:
        history, horizon = state.history, now - self.history_ttl
        while history and history[0][0] < horizon:
            history.popleft()

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        horizon = now - self.history_ttl
        for name in [n for n, s in self._streams.items() if s.touched < horizon]:
            del self._streams[name]
