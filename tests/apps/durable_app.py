"""``apps.redis_app`` with an outbox relay in its lifespan: ``apps.durable_app:app``.

``LIVEUPDATES_OUTBOX_DB`` is the database URL and ``LIVEUPDATES_OUTBOX_TABLE`` the table (default
``liveupdates_outbox``); the relay publishes through the hub's backplane, as a web process of a
real deployment does.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from apps.redis_app import app, hub
from liveupdates.durable import DEFAULT_TABLE, OutboxRelay

relay = OutboxRelay(
    os.environ["LIVEUPDATES_OUTBOX_DB"],
    hub.backplane,
    table=os.environ.get("LIVEUPDATES_OUTBOX_TABLE", DEFAULT_TABLE),
    poll_interval=0.2,
)


@asynccontextmanager
async def lifespan(_: object) -> AsyncIterator[None]:
    async with hub.lifespan(), relay:  # the relay stops first, the hub last
        yield


app.router.lifespan_context = lifespan
