"""RESP2, Redis' wire protocol: commands packed, replies parsed as the bytes arrive.

The Redis backplane reads its two connections with `Parser` (in `asyncio.Protocol` callbacks,
`_redis_link`) rather than through redis-py's stream reader: a reply is handled in the event
loop callback that received its bytes, without a task wake-up or a parser coroutine per reply.

Replies come out as redis-py's do with ``decode_responses=False``: bulk strings as bytes,
simple strings as str, integers as int, arrays as lists, nulls as None, and error replies as the
exception redis-py would raise (``NoScriptError``, ``ReadOnlyError``, ``ResponseError``, ...),
returned, not raised: an error reply fails its own command, not the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from redis import exceptions as rx
from redis._parsers.base import BaseParser

__all__ = ("Arg", "Parser", "ProtocolError", "bulk", "bulks", "pack")

Arg = bytes | str | int
MAX_BULK = 512 * 1024 * 1024  # Redis' own limit on a string (proto-max-bulk-len)
MAX_LINE = 64 * 1024  # a header or simple reply longer than this is not Redis speaking


# redis-py's mapping of error replies to its exceptions (what its own parsers raise)
_error: Final[Callable[[str], rx.RedisError]] = BaseParser.parse_error


class ProtocolError(Exception):
    """What arrived is not RESP2: the connection cannot be trusted any more."""


def bulk(arg: Arg) -> bytes:
    """One bulk string (str as UTF-8, int in decimal)."""
    data = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def bulks(args: Iterable[Arg]) -> bytes:
    """Bulk strings one after the other: (part of) the body of a command."""
    return b"".join(map(bulk, args))


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + bulks(args)


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


_INCOMPLETE = _Incomplete()


class Parser:
    """Replies out of a byte stream fed in chunks of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Every reply completed by `data`, in order; raises `ProtocolError` on garbage."""
        buffer = self._buffer
        buffer += data
        replies: list[Any] = []
        pos, end = 0, len(buffer)
        try:
            while pos < end:
                reply, pos = _parse(buffer, pos)
                replies.append(reply)
        except _Incomplete:
            if end - pos > MAX_LINE and buffer.find(b"\r\n", pos, pos + MAX_LINE) < 0:
                raise ProtocolError("a reply header longer than 64 KiB") from None
        except RecursionError:
            raise ProtocolError("arrays nested too deep") from None
        del buffer[:pos]
        return replies


def _line(buffer: bytearray, pos: int) -> tuple[bytes, int]:
    """The line at `pos`, without its CRLF, and the position after it."""
    crlf = buffer.find(b"\r\n", pos)
    if crlf < 0:
        raise _INCOMPLETE
    return bytes(buffer[pos:crlf]), crlf + 2


def _length(line: bytes, limit: int) -> int:
    try:
        value = int(line[1:])
    except ValueError:
        raise ProtocolError(f"not a length: {line[:40]!r}") from None
    if not -1 <= value <= limit:
        raise ProtocolError(f"length out of range: {value}")
    return value


def _parse(buffer: bytearray, pos: int) -> tuple[Any, int]:
    """The reply starting at `pos` and the position after it (or `_Incomplete`)."""
    line, pos = _line(buffer, pos)
    kind = line[:1]
    if kind == b"$":
        length = _length(line, MAX_BULK)
        if length < 0:
            return None, pos
        end = pos + length
        if len(buffer) < end + 2:
            raise _INCOMPLETE
        if buffer[end : end + 2] != b"\r\n":
            raise ProtocolError("a bulk string without its CRLF")
        return bytes(buffer[pos:end]), end + 2
    if kind == b"*":
        count = _length(line, MAX_BULK)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == b"+":
        return line[1:].decode("utf-8", "replace"), pos
    if kind == b":":
        try:
            return int(line[1:]), pos
        except ValueError:
            raise ProtocolError(f"not an integer: {line[:40]!r}") from None
    if kind == b"-":
        return _error(line[1:].decode("utf-8", "replace")), pos
    raise ProtocolError(f"not a RESP2 reply: {line[:40]!r}")
