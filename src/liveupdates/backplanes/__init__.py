"""Backplanes: chosen by URL (``memory://``, ``redis://``), imported lazily.

The tier for backplane authors: the contract (`Backplane`, `Receiver`), what a backplane
carries (`Publication`, its `Position`, a `Replay` of history) and the in-memory backplane.
`liveupdates.testing` holds the conformance kit every backplane passes.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from ..positions import Position, Publication, Replay
from .base import Backplane, Receiver
from .memory import MemoryBackplane

__all__ = (
    "Backplane",
    "MemoryBackplane",
    "Position",
    "Publication",
    "Receiver",
    "Replay",
    "backplane_from_url",
)

_REDIS_SCHEMES = (
    "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
    "rediss+cluster",
)  # fmt: skip


def backplane_from_url(url: str) -> Backplane:
    """A backplane for `url`: ``memory://[?history_size=N&history_ttl=S]``, ``redis://...``,
    ``rediss://...``, ``unix://...``, ``redis+sentinel://...`` or ``redis+cluster://...``
    (docs/scaling-out.md)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"history_size", "history_ttl"}
        if unknown:
            raise ValueError(f"unknown memory:// options: {', '.join(sorted(unknown))}")
        return MemoryBackplane(
            history_size=int(options.get("history_size", 1000)),
            history_ttl=float(options.get("history_ttl", 600.0)),
        )
    if parts.scheme in _REDIS_SCHEMES:
        from .redis import RedisBackplane  # needs the [redis] extra

        backplane: Backplane = RedisBackplane.from_url(url)
        return backplane
    raise ValueError(
        f"unknown backplane URL scheme {parts.scheme!r} (memory://, redis://, redis+sentinel://, redis+cluster://)"
    )
