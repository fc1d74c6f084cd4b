"""The flusher's send engine on event loops other than asyncio (trio): a task per send.

A coroutine of trio cannot be started outside the task that runs it (what it waits on is
registered for the current task), so each send runs in a task of its own from its start
(`Flusher.write`, in the hub's task group, under a cancel scope that `Connection.close`
cancels). That task also sends what its connection queues meanwhile, then ends. A quiet
process's broadcast goes through the outboxes too: there is no direct path to the sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .connection import Connection, SendFrame
from .outbox import Message

if TYPE_CHECKING:
    from .flusher import Flusher


class TaskSends:
    """Every send in a task of its own."""

    direct = False

    def __init__(self, flusher: Flusher) -> None:
        self.flusher = flusher

    def send(
        self, conns: Iterator[Connection], message: Message, now: float, deadline: float
    ) -> tuple[bool, bool]:
        """No direct path here: `message` goes through the outboxes of `conns`, all of them."""
        filling = False
        for conn in conns:
            filling |= conn.push(message)
        return filling, True

    def start(self, conn: Connection, sender: SendFrame, frame: str, now: float) -> bool:
        """Start a task that sends `frame`; never completed here."""
        scope = anyio.CancelScope()
        conn.writing(scope)
        self.flusher.spawn(self._write_in_scope, conn, sender, scope, frame)
        return False

    async def give_way(self) -> None:
        """Three checkpoints, as asyncio's engine gives three turns of its loop."""
        for _ in range(3):
            await anyio.lowlevel.checkpoint()

    async def _write_in_scope(
        self, conn: Connection, sender: SendFrame, scope: anyio.CancelScope, frame: str
    ) -> None:
        with scope:
            if not scope.cancel_called:  # (the connection closed before this task started)
                await self.flusher.write(conn, sender, frame)
