"""The writer for the Django ORM: the rows go through ``django.db.connections[using]``.

::

    with transaction.atomic():
        job.status = "done"
        job.save()
        write_event(Invalidate(["jobs"]), to=User(job.owner))

Outside ``transaction.atomic()`` each statement would commit on its own, so the change and the
event would not be atomic: `write_event` refuses with a `RuntimeError` there.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections

from ..events import Event
from ..targets import Target
from .schema import DEFAULT_TABLE, insert_sql, rows_of


def write_event(
    event: Event,
    to: Target | Iterable[Target],
    *,
    using: str = "default",
    table: str = DEFAULT_TABLE,
) -> None:
    """Write `event` for `to` into the outbox of database `using`, in its current atomic block."""
    rows = rows_of(event, to)
    connection = connections[using]
    if not connection.in_atomic_block:
        raise RuntimeError(
            "liveupdates.durable.django.write_event needs a transaction: "
            "call it inside transaction.atomic()"
        )
    with connection.cursor() as cursor:  # Django's cursors take %s on every backend
        cursor.executemany(insert_sql("format", table), rows)
