"""Per-key throttling with a leading and a trailing edge.

A rule gives a window to events of a type and/or a topic. For each key (stream plus the
event's latest-value-wins identity) the first event goes out at once (leading edge); events
within the window are held, newest wins, and the newest goes out when the window ends
(trailing edge), which opens the next window. So the last state always arrives within one
window, and no key sends more than two events per window.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from .errors import BackplaneError, HubClosed
from .events import INVALIDATE_SLOT, Event

_Held = tuple[str, bytes, str | None]  # stream, body, slot
logger = logging.getLogger("liveupdates")
Publish = Callable[[str, bytes, str | None], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """Throttle events of `type` (an event tag) and/or on `topic` to one per `window` seconds.

    A rule without `type` and `topic` applies to every event. The first matching rule wins.
    """

    window: float
    type: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError("a throttle window is a positive number of seconds")

    def matches(self, stream: str, event_type: str) -> bool:
        return (self.type is None or self.type == event_type) and (
            self.topic is None or stream == "topic:" + self.topic
        )


class _Window:
    __slots__ = ("deadline", "held", "length")

    def __init__(self, length: float, deadline: float) -> None:
        self.length, self.deadline = length, deadline
        self.held: _Held | None = None


class Throttle:
    """The windows of every throttled key; `admit` decides, `due` releases trailing edges."""

    def __init__(self, rules: list[ThrottleRule], clock: Callable[[], float]) -> None:
        self.rules = rules
        self._clock = clock
        self._windows: dict[tuple[str, bytes | str], _Window] = {}
        self._deadlines: list[tuple[float, int, tuple[str, bytes | str]]] = []
        self._seq = itertools.count()  # ties on a deadline never compare keys
        self._wake: anyio.Event | None = None
        self.held = 0  # events superseded or delayed by a window

    def admit(self, stream: str, event: Event, body: bytes, slot: str | None) -> bool:
        """True to publish now; False when held for the trailing edge of its window."""
        if not self.rules:
            return True
        tag = type(event).__struct_config__.tag
        rule = next((r for r in self.rules if r.matches(stream, str(tag))), None)
        if rule is None:
            return True
        key = (stream, slot if slot is not None and slot != INVALIDATE_SLOT else body)
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(rule.window, now + rule.window)
            heapq.heappush(self._deadlines, (window.deadline, next(self._seq), key))
            if self._wake is not None:
                self._wake.set()
            return True
        window.held = (stream, body, slot)
        self.held += 1
        return False

    def due(self, now: float) -> list[_Held]:
        """Close every window that ended by `now`; return the held events to publish."""
        out: list[_Held] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, key = heapq.heappop(deadlines)
            window = self._windows[key]
            if window.held is None:
                del self._windows[key]
                continue
            out.append(window.held)
            window.held = None
            window.deadline = now + window.length  # the trailing edge opens the next window
            heapq.heappush(deadlines, (window.deadline, next(self._seq), key))
        return out

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    async def run(self, publish: Publish) -> None:
        """Publish trailing edges as their windows end (runs in the hub's task group)."""
        while True:
            deadline = self.next_deadline()
            self._wake = anyio.Event()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                continue
            for stream, body, slot in self.due(self._clock()):
                try:
                    await publish(stream, body, slot)
                except (BackplaneError, HubClosed) as exc:
                    logger.warning("trailing-edge publish on %s failed: %s", stream, exc)
