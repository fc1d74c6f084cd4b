"""Writers for SQLAlchemy sessions (sync and async) and connections.

::

    job.status = "done"
    write_event(session, Invalidate(["jobs"]), to=User(job.owner))
    session.commit()  # the change and the event commit together

The rows go through the session's connection (``session.connection()``), so they belong to the
transaction the session flushes the change in.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from ..events import Event
from ..targets import Target
from .schema import DEFAULT_TABLE, insert_sql, rows_of


def _params(event: Event, to: Target | Iterable[Target]) -> list[dict[str, object]]:
    return [{"stream": s, "body": b, "slot": slot} for s, b, slot in rows_of(event, to)]


def write_event(
    session: Session | Connection,
    event: Event,
    to: Target | Iterable[Target],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """Write `event` for `to` into the outbox, in the session's (or connection's) transaction."""
    params = _params(event, to)
    connection = session.connection() if isinstance(session, Session) else session
    connection.execute(text(insert_sql("named", table)), params)


async def async_write_event(
    session: AsyncSession | AsyncConnection,
    event: Event,
    to: Target | Iterable[Target],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """`write_event` for an `AsyncSession` or `AsyncConnection`."""
    params = _params(event, to)
    await session.execute(text(insert_sql("named", table)), params)
