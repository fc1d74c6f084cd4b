"""redis-py's errors as liveupdates errors whose messages say what went wrong and what to do.

Every message keeps Redis' or redis-py's own words (``ExceptionType: message``), and adds a
hint where the cause is recognisable: a missing ACL permission names the rule to add, a TLS
problem says "certificate" or "TLS", a refused password names the URL's credentials.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Final

from redis import exceptions as rx

from ..errors import BackplaneError, BackplaneUnavailable

__all__ = ("REDIS_ERRORS", "acl_rule", "describe", "to_backplane_error")

# Commands the backplane runs (in its scripts, and around them), by topology.
_COMMANDS: Final = (
    "+evalsha +eval +script|load +ping +info +time +hmget +hset +hget +del +pexpire "
    "+xadd +xtrim +xrevrange"
)
_PUBSUB: Final = "+publish +subscribe +unsubscribe"
_SHARDED: Final = (
    "+spublish +ssubscribe +sunsubscribe +cluster|slots +cluster|shards +readonly +command"
)


# A cluster between two states (a slot migrating, a master failing over): try again later.
_MOVING: Final = (
    rx.AskError,  # (and MovedError) once redis-py gave up following redirections
    rx.TryAgainError,
    rx.ClusterError,  # (and ClusterDownError) CLUSTERDOWN, or redis-py's redirections ran out
    rx.SlotNotCoveredError,
)
# What redis-py raises: its errors, and its cluster client's (not all of them RedisErrors).
REDIS_ERRORS: Final = (rx.RedisError, rx.RedisClusterException, OSError, TimeoutError)


def acl_rule(prefix: str, *, cluster: bool = False, user: str = "<user>") -> str:
    """The minimal ``ACL SETUSER`` rule for a backplane with this key prefix."""
    pubsub = _SHARDED if cluster else _PUBSUB
    return (
        f"ACL SETUSER {user} on >password resetkeys ~{{{prefix}:* resetchannels "
        f"&{{{prefix}:* -@all {_COMMANDS} {pubsub}"
    )


# Error codes that redis-py takes off the start of Redis' message (it maps them to classes).
_CODES: Final = (
    (rx.NoPermissionError, "NOPERM"),
    (rx.NoScriptError, "NOSCRIPT"),
    (rx.ReadOnlyError, "READONLY"),
    (rx.OutOfMemoryError, "OOM"),
    (rx.ExecAbortError, "EXECABORT"),
    (rx.BusyLoadingError, "LOADING"),
)


def describe(exc: BaseException) -> str:
    """``Type: message`` of `exc` (its message is never lost to a bare repr), with the error
    code of Redis' reply that redis-py took off (``NOPERM``, ``READONLY``, ...)."""
    message = str(exc).strip()
    for cls, code in _CODES:
        if isinstance(exc, cls) and not message.startswith(code):
            message = f"{code} {message}"
            break
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _hint(exc: BaseException, prefix: str, cluster: bool) -> str:
    """What to do about `exc`, or ''."""
    text = " ".join(describe(cause) for cause in _causes(exc))
    if isinstance(exc, rx.NoPermissionError) or "NOPERM" in text or "no permissions" in text:
        return (
            " The Redis ACL user lacks a permission the backplane needs; give it at least: "
            + acl_rule(prefix, cluster=cluster)
            + " (docs: Scaling out, ACL)."
        )
    if isinstance(exc, rx.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return " Check the user name and password of the Redis URL (redis://user:password@...)."
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE" in text.upper():
            return (
                " The TLS certificate of Redis could not be verified: give the CA that signed it"
                " (ssl_ca_certs=/path/ca.pem in the URL), or check the host name it was issued"
                " for."
            )
        if isinstance(cause, ssl.SSLError):
            return (
                " The TLS handshake failed: use rediss:// only for a port that speaks TLS, and"
                " check ssl_ca_certs, ssl_certfile and ssl_keyfile."
            )
    if "Connection closed by server" in text or "Connection reset" in text:
        return " If this Redis port expects TLS, use rediss:// instead of redis://."
    return ""


def to_backplane_error(
    exc: BaseException, action: str, prefix: str = "lu", *, cluster: bool = False
) -> BackplaneError:
    """The `BackplaneError` (or `BackplaneUnavailable`) that `exc` means for `action`."""
    hint = _hint(exc, prefix, cluster)
    if isinstance(exc, rx.AuthenticationError | rx.NoPermissionError) or (hint and "ACL" in hint):
        return BackplaneError(f"Redis refused to {action}: {describe(exc)}.{hint}")
    if isinstance(exc, _MOVING):
        return BackplaneUnavailable(
            f"the Redis Cluster is moving slots or failing over ({action}): {describe(exc)}"
        )
    if type(exc) is TimeoutError:  # a deadline of ours (anyio.fail_after)
        return BackplaneUnavailable(f"Redis did not answer in time ({action}).{hint}")
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | rx.ReadOnlyError | OSError):
        return BackplaneUnavailable(f"Redis is unavailable ({action}): {describe(exc)}.{hint}")
    return BackplaneError(f"Redis failed to {action}: {describe(exc)}.{hint}")
