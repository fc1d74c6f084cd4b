"""The publish side: the one path every producer's events take to the backplane.

An event is encoded once (`prepare`: its body, its outbox slot and its target streams), then
appended to each stream through the backplane (`Publisher.publish_stream`). When the backplane
refuses, the caller gets `BackplaneError` and the stream is marked *unannounced*: the change
the application committed was never sent. `Publisher.announce` then publishes a `ResyncStream`
command on each such stream once the backplane takes publications again (the hub calls it when
its backplane resets; any publisher tries before its next publish), so every client of the
stream refetches: at once if it is connected, or when it resumes across the announcement.

Producers: `Hub.publish` (with its throttle and the flusher's pacing around each stream),
`Transaction` (prepared events held until commit), and publish-only clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from ..backplanes import Backplane
from ..errors import BackplaneError
from ..events import Event, encode_event, event_slot
from ..positions import Publication
from ..targets import Target, streams_of
from .control import CONTROL_SLOT, Command, ResyncStream, encode_control


@dataclass(frozen=True, slots=True)
class Prepared:
    """An event encoded once, with the streams it goes to."""

    event: Event
    body: bytes
    slot: str | None
    streams: list[str]


def prepare(event: Event, to: Target | Iterable[Target]) -> Prepared:
    """Encode `event` for `to`. Raises TypeError or ValueError at the call site."""
    return Prepared(event, encode_event(event), event_slot(event), streams_of(to))


SendStream = Callable[[str, Prepared], Awaitable["Publication | None"]]


class Publisher:
    """Publishes prepared events and commands, and announces the publishes that failed."""

    def __init__(self, backplane: Backplane) -> None:
        self.backplane = backplane
        self.unannounced: set[str] = set()  # streams with a failed publish not yet announced
        self._announcing = False

    async def publish_all(
        self, batch: Sequence[Prepared], send: SendStream | None = None
    ) -> list[list[Publication | None]]:
        """Publish prepared events in order: each event's position in each of its streams.

        `send(stream, prepared)` appends one (default: `publish_stream`); the hub's adds its
        throttle, which may hold an event (None), and its flusher's pacing. At a refusal,
        every stream not reached (the failed one, the event's later targets, the batch's
        later events) is marked to be announced, and `BackplaneError` raised.
        """
        send = send or self._send
        results: list[list[Publication | None]] = []
        for n, prepared in enumerate(batch):
            positions: list[Publication | None] = []
            for i, stream in enumerate(prepared.streams):
                try:
                    positions.append(await send(stream, prepared))
                except BackplaneError:
                    self.missed(prepared.streams[i + 1 :], *(p.streams for p in batch[n + 1 :]))
                    raise
            results.append(positions)
        return results

    async def _send(self, stream: str, prepared: Prepared) -> Publication:
        return await self.publish_stream(stream, prepared.body, prepared.slot)

    async def publish_stream(self, stream: str, body: bytes, slot: str | None) -> Publication:
        try:
            if self.unannounced and not self._announcing:
                await self._announce()  # the backplane may be back: older failures go first
            return await self.backplane.publish(stream, body, slot)
        except BackplaneError:
            self.unannounced.add(stream)  # resynced everywhere once the backplane is back
            raise

    def missed(self, *streams: Iterable[str]) -> None:
        """Streams a failed publish never reached (not tried): resynced like a failed one."""
        for names in streams:
            self.unannounced.update(names)

    async def command(self, stream: str, command: Command) -> Publication:
        """Publish a control command (see control.py) on `stream`; raises `BackplaneError`."""
        return await self.backplane.publish(stream, encode_control(command), CONTROL_SLOT)

    async def announce(self) -> bool:
        """Tell every process to resync the streams whose publish failed; False while the
        backplane still refuses (the next reset or publish tries again)."""
        if self._announcing:
            return False
        try:
            await self._announce()
        except BackplaneError:
            return False
        return True

    async def _announce(self) -> None:
        self._announcing = True
        try:
            for stream in sorted(self.unannounced):
                await self.command(stream, ResyncStream())
                self.unannounced.discard(stream)
        finally:
            self._announcing = False
