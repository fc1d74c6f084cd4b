"""The backplane contract: how hubs in one or many processes share events and history.

A backplane assigns every published event a position in its stream, keeps a bounded history
per stream, and delivers every publication to every hub that listens to the stream. The hub
does everything else (registry, fan-out, outboxes, recovery), so a backplane stays small.

Rules every implementation follows (and `liveupdates.testing` checks):

1. `publish` returns only once the event is in the stream's history and on its way to every
   listening hub; when it cannot, it raises `BackplaneError` (never a silent drop).
2. Offsets of one stream grow by exactly one per publication within an epoch. The epoch
   changes whenever history may have been lost; offsets then start again from any value.
3. Publications of a stream reach `Receiver.deliver` in offset order, at most once each. A
   backplane that may have missed some (a lost connection) calls `Receiver.reset` once it is
   connected again; the hub then reads `replay` to recover or to resync its clients. After
   raising `BackplaneUnavailable`, a backplane calls `Receiver.reset` once it is usable again.
4. `replay` is exact: either every publication after the asked position, or `complete=False`.
5. A stream's epoch does not change while nothing was lost (otherwise every client that joins
   would be told to resync).
6. `listen` returns once live delivery of the stream is active, and does not raise while the
   backplane is disconnected (the stream is listened to once it reconnects).

A process that only publishes (a `Producer`) starts its backplane with `start_publishing`
instead of `start`: it never calls `listen`, so a backplane may hold less for it (the Redis
one keeps no pub/sub connection). Rules 1 to 4 hold as after `start`, including the
`Receiver.reset` that follows a `BackplaneUnavailable`; `listen` may refuse.
"""

from __future__ import annotations

import abc
from typing import Protocol

from ..positions import Position, Publication, Replay


class Receiver(Protocol):
    """What a backplane delivers to (the hub implements it). Both methods must not block."""

    def deliver(self, publication: Publication) -> None:
        """A publication on a stream this process listens to."""

    def reset(self) -> None:
        """The backplane reconnected and may have missed publications on any stream."""


class Backplane(abc.ABC):
    """Base class of backplanes. Use it as ``async with`` or call `start` and `aclose`."""

    @abc.abstractmethod
    async def start(self, receiver: Receiver) -> None:
        """Connect, and from now on deliver publications of listened streams to `receiver`."""

    async def start_publishing(self, receiver: Receiver) -> None:
        """Connect for a process that publishes (and may replay) but never listens.

        `receiver` gets no deliveries that matter, but its `reset` is called as after `start`
        (rule 3), so the process can announce publishes that failed while it was cut off.
        A backplane may then hold fewer resources and refuse `listen` (``RuntimeError``).
        The default is `start`.
        """
        await self.start(receiver)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop delivering and release every resource. Idempotent."""

    @abc.abstractmethod
    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        """Append an event to `stream`'s history and deliver it to every listener.

        Returns the publication with its position. Raises `BackplaneError` when it cannot.
        """

    @abc.abstractmethod
    async def listen(self, stream: str) -> None:
        """This process has local interest in `stream`: deliver its publications."""

    @abc.abstractmethod
    async def unlisten(self, stream: str) -> None:
        """This process no longer has local interest in `stream`."""

    @abc.abstractmethod
    async def replay(self, stream: str, since: Position | None) -> Replay:
        """The stream's head and, when `since` is given, every publication after it.

        With `since=None` only the head is read. When `since` is of another epoch, older than
        the retained history, or ahead of the head, the replay is not `complete`.
        """

    async def __aenter__(self) -> Backplane:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
