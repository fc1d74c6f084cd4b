"""Refusals before a connection is accepted: why, said once in a while in the log.

A misconfigured app (a hub whose lifespan never runs, an Origin missing from
``allowed_origins``) refuses every client, and browsers reconnect: one WARNING per kind of
refusal and endpoint every `WARN_INTERVAL` seconds names the fix, and how many refusals of that
kind it did not log meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..hub import Hub
from ._origin import own_origin

logger = logging.getLogger("liveupdates")

WARN_INTERVAL: Final = 60.0  # seconds between two warnings of one kind, per endpoint
NOT_RUNNING: Final = "the hub is not running"
SHUTTING_DOWN: Final = "server shutting down"


class RefusalLog:
    """Log a refusal as a WARNING at most once per `interval` seconds per kind."""

    def __init__(self, clock: Callable[[], float], interval: float = WARN_INTERVAL) -> None:
        self.clock, self.interval = clock, interval
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: Any, **extra: Any) -> None:
        now, last = self.clock(), self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        self._last[kind] = now
        unlogged = self._unlogged.pop(kind, 0)
        if unlogged:
            message += " (%d more refused since the last warning)"
            args += (unlogged,)
        logger.warning(message, *args, extra=extra)

    def origin(self, origin: str, scope: Mapping[str, Any], transport: str) -> None:
        self.warn(
            "origin",
            "Origin %s not allowed: see allowed_origins (the request came to %s)",
            origin,
            own_origin(scope),
            transport=transport,
        )

    def not_running(self, transport: str) -> None:
        self.warn(
            "not_running",
            NOT_RUNNING + ": pass lifespan=hub.lifespan to the ASGI app that the server runs "
            "(the lifespan of a mounted sub-app never runs), or run it in `async with hub:`",
            transport=transport,
        )


def hub_refusal(hub: Hub) -> str | None:
    """Why `hub` takes no connection now: `NOT_RUNNING` (never started), `SHUTTING_DOWN`
    (draining or stopped), or None when it accepts them."""
    if hub.accepting:
        return None
    return SHUTTING_DOWN if hub.started else NOT_RUNNING
