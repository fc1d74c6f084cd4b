"""Publish after commit: events held until the database transaction commits.

An invalidation sent before the commit makes clients refetch stale data and then stop. So::

    async with hub.transaction() as tx:
        with db:                                   # sqlite3: commits here, or rolls back
            db.execute("UPDATE jobs SET ...")
            tx.publish(Invalidate(["jobs"]), to=User(owner))
    # published here, after the commit; dropped if anything above raised

`commit` and `rollback` can also be called explicitly, or from ORM session events
(`schedule_commit` is safe to call from sync code and other threads).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from ._pipeline.publisher import Prepared, prepare
from .errors import BackplaneError, HubClosed, TransactionClosed
from .events import Event
from .targets import Target

PublishAll = Callable[[list[Prepared]], Awaitable[object]]
CallSoon = Callable[[Callable[[], Awaitable[Any]]], None]

logger = logging.getLogger("liveupdates")


class Transaction:
    """Events published inside are held; sent in order on `commit`, dropped on `rollback`.

    Created by `Hub.transaction()`: `publish` is the hub's publish path for a batch, in
    order (throttle included),
    `call_soon` runs a coroutine function in the hub's tasks from any thread.
    """

    def __init__(self, publish: PublishAll, call_soon: CallSoon) -> None:
        self._publish, self._call_soon = publish, call_soon
        self._held: list[Prepared] = []
        self._open = True

    def publish(self, event: Event, to: Target | Iterable[Target]) -> None:
        """Hold `event` until commit. Encoding errors are raised now, at the call site."""
        if not self._open:
            raise TransactionClosed("this transaction is already committed or rolled back")
        self._held.append(prepare(event, to))

    def __len__(self) -> int:
        return len(self._held)

    async def commit(self) -> None:
        """Publish every held event, in order. Raises like `Hub.publish`."""
        self._open = False
        held, self._held = self._held, []
        await self._publish(held)  # (a failure resyncs the streams of every event not sent)

    def rollback(self) -> None:
        """Drop every held event."""
        self._open = False
        self._held.clear()

    def schedule_commit(self) -> None:
        """Commit in the hub's background tasks; callable from sync code or another thread.

        Failures are logged (they cannot reach a caller that has moved on).
        """
        self._open = False
        self._call_soon(self._commit_logged)

    async def _commit_logged(self) -> None:
        try:
            await self.commit()
        except (BackplaneError, HubClosed):
            logger.exception("publishing after commit failed")

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._open:
            await self.commit()
        elif self._open:
            self.rollback()
