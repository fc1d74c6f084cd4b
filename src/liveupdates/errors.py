"""Exceptions and the codes that reach clients.

Exception tree::

    LiveUpdatesError
    ├── ProtocolError          a client frame is malformed or not allowed (close 4400)
    │   └── FrameTooLarge      a client frame exceeds the frame limit (close 1009)
    ├── Unauthorized           the authentication hook rejected a connection (close 4401)
    │   └── TokenExpired       the credential has expired (close 4440)
    ├── HookFailed             an application hook raised: a server error (close 1011)
    ├── BackplaneError         the backplane cannot publish or read history
    │   └── BackplaneUnavailable  the backplane is not connected (for example Redis is down)
    ├── HubClosed              the hub is not running (not started, or shut down)
    │   └── ProducerClosed     a publish-only producer is not running
    └── TransactionClosed      the transaction was already committed or rolled back

    PeerGone                   (internal) a transport's send found its peer gone

Third-party errors (redis-py, the ASGI server) are mapped to these at the boundary.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """WebSocket close codes sent by the server (see docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    FRAME_TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    HANDSHAKE_TIMEOUT = 4408
    DISCONNECTED = 4403
    RATE_LIMITED = 4429
    TOKEN_EXPIRED = 4440
    SLOW_CONSUMER = 4503
    HEARTBEAT_TIMEOUT = 4504


_CODES = frozenset(CloseCode)


def close_code_name(code: int | None, unknown: str | None = None) -> str:
    """The documented name of a close code (``"try_again_later"``); for any other code,
    `unknown`, or the number when `unknown` is None."""
    if code in _CODES:
        return CloseCode(code).name.lower()
    return str(code) if unknown is None else unknown


class ErrorCode(enum.StrEnum):
    """Codes of non-fatal `error` messages; the connection stays open."""

    FORBIDDEN = "forbidden"
    INVALID_TOPIC = "invalid_topic"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"


class LiveUpdatesError(Exception):
    """Base class of every error raised by liveupdates."""


class ProtocolError(LiveUpdatesError):
    """A client frame is malformed, of an unknown type, or not allowed now."""

    close_code = CloseCode.BAD_REQUEST


class FrameTooLarge(ProtocolError):
    """A client frame exceeds `Limits.max_frame_bytes`."""

    close_code = CloseCode.FRAME_TOO_LARGE


class Unauthorized(LiveUpdatesError):
    """Raised by (or on behalf of) the authentication hook to refuse a connection."""

    close_code = CloseCode.UNAUTHORIZED


class TokenExpired(Unauthorized):
    """The credential has expired (its `Principal.expires_at` is past): the client should get
    a new one and reconnect."""

    close_code = CloseCode.TOKEN_EXPIRED


class HookFailed(LiveUpdatesError):
    """An application hook raised (a database blip, a bug): a server error, not a refusal.

    The connection is closed with 1011, which clients retry with backoff; on SSE the request
    is answered with 503 before the stream starts.
    """

    close_code = CloseCode.INTERNAL_ERROR


class BackplaneError(LiveUpdatesError):
    """The backplane failed to publish or to read history."""


class BackplaneUnavailable(BackplaneError):
    """The backplane is not connected; the operation was not performed."""


class HubClosed(LiveUpdatesError):
    """The hub is not running."""


class ProducerClosed(HubClosed):
    """A producer is not running (not started, or closed)."""


class TransactionClosed(LiveUpdatesError):
    """The transaction was already committed or rolled back."""


class PeerGone(Exception):
    """Raised by a transport's frame sender once its peer is gone (it ends the session).

    Not a `LiveUpdatesError`: it never reaches an application."""
