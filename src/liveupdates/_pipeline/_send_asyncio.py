"""The flusher's send engine on asyncio: each send starts eagerly, inside the flusher.

The send runs up to its first suspension. A send into a socket that takes the bytes at once
(the usual case) completes right there: a broadcast to N clients costs N calls, not N task
wake-ups, and an idle connection has no task waiting to write. A send that has to wait goes on
in a task of its own (`Flusher.write`), which takes over exactly where the eager start stopped.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator, Iterator
from typing import TYPE_CHECKING, Any

from .connection import Connection, SendFrame
from .outbox import Message

if TYPE_CHECKING:
    from .flusher import Flusher


class EagerSends:
    """Sends started eagerly, through a driver generator (`_drive`)."""

    direct = True

    def __init__(self, flusher: Flusher, loop: asyncio.AbstractEventLoop) -> None:
        self.flusher, self.loop = flusher, loop
        self._driver = _driver()

    def send(
        self, conns: Iterator[Connection], message: Message, now: float, deadline: float
    ) -> tuple[bool, bool]:
        """Send `message` straight to `conns` until `deadline` (by the flusher's clock).

        Returns (an outbox is at least half full, `conns` are exhausted).
        """
        flusher, frame, stream = self.flusher, message.frame, message.stream
        clock = flusher.clock
        filling, done, sent = False, True, 0
        drive = self._driver.send  # (`start`, inlined: this loop is the fan-out's hot path)
        for count, conn in enumerate(conns, 1):
            sender, gates = conn.sender, conn.gates
            if (
                sender is None
                or conn.writer is not None
                or (gates and stream in gates)  # (a gate on another stream is no matter)
                or conn.outbox.items
            ):
                filling |= conn.push(message)  # the outbox keeps its order, the gate its rules
                flusher.flush_one(conn, now)  # (nothing, if not attached or a task sends)
            else:
                try:
                    step = drive(sender(frame))
                except BaseException as exc:
                    self._failed(conn, exc)
                    drive = self._driver.send
                else:
                    if step is _DONE:
                        sent += 1  # (`conn.last_sent` is the stream's: `Streams.sent_at`)
                    else:
                        self._suspended(conn, sender, frame, step, now)
                        drive = self._driver.send
            if not count & 15 and clock() > deadline:
                done = False
                break
        flusher.count(sent, frame, message.ts)
        return filling, done

    def start(self, conn: Connection, sender: SendFrame, frame: str, now: float) -> bool:
        """Start sending `frame` eagerly; True when the send completed right here.

        A send that must wait goes on in a task of its own (`conn.writer`), which also sends
        what `conn` queues meanwhile.
        """
        try:
            step = self._driver.send(sender(frame))
        except BaseException as exc:
            self._failed(conn, exc)
            return False
        if step is _DONE:
            return True
        self._suspended(conn, sender, frame, step, now)
        return False

    async def give_way(self) -> None:
        """Three turns of the event loop.

        One checkpoint is not enough: this task's next step is queued before the callbacks of
        the I/O that the loop polls next. Those wake their task at once on uvloop, one turn
        later on asyncio's own loop (I/O callback, then the task); three turns let both go
        first. Otherwise a publisher waiting for Redis waits one or two slices more per event,
        and a burst through Redis leaves in many more, smaller frames. (asyncio's own turn:
        anyio's adds 5-10 us to each.)
        """
        for _ in range(3):
            await asyncio.sleep(0)

    def _suspended(
        self, conn: Connection, sender: SendFrame, frame: str, step: Any, now: float
    ) -> None:
        """The send of `frame`, started eagerly, waits (at `step`): a task finishes it."""
        driver, self._driver = self._driver, _driver()  # the old one is inside the send
        conn.send_started(now)
        resume = _resume(driver, step)
        conn.writing(self.loop.create_task(self.flusher.write(conn, sender, frame, resume)))

    def _failed(self, conn: Connection, exc: BaseException) -> None:
        """A send started eagerly raised `exc` (which ends the driver)."""
        self._driver = _driver()
        if not isinstance(exc, Exception):
            raise exc
        self.flusher.lost(conn, exc)


_DONE = object()  # what a driver yields once the send it was given completed
_Driver = Generator[Any, Coroutine[Any, Any, None] | None, None]


def _driver() -> _Driver:
    """A new driver, ready for its first send (`_drive`)."""
    driver = _drive()
    driver.send(None)
    return driver


@types.coroutine
def _drive() -> _Driver:
    """A driver of eager sends: ``driver.send(coroutine)`` runs the coroutine up to its first
    suspension and returns what it yielded to the event loop, or `_DONE` once it completed.

    Calling ``coroutine.send(None)`` directly would do the same, but a coroutine that completes
    raises StopIteration; here it returns inside ``yield from``, and the send of a broadcast
    costs no exception (about 0.5 us of a 30 us send). An exception from the coroutine ends the
    driver; so must a suspension, the driver being inside the coroutine (`_resume` finishes it).
    """
    coroutine = yield None  # (`_driver` primes it)
    while True:
        assert coroutine is not None
        yield from coroutine
        coroutine = yield _DONE


@types.coroutine
def _resume(driver: _Driver, step: Any) -> Generator[Any, Any, None]:
    """Drive the send in `driver`, started eagerly and suspended at `step`, from the task
    awaiting this, until it completes.

    The event loop sees what the send yields and sends or throws back what it would have: the
    task that runs this takes over exactly where the eager start stopped.
    """
    try:
        while step is not _DONE:
            try:
                sent = yield step
            except BaseException as exc:
                step = driver.throw(exc)
            else:
                step = driver.send(sent)
    finally:
        driver.close()
