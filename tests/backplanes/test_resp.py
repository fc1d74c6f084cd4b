"""RESP2 as the Redis backplane reads and writes it (`backplanes._resp`), without a server."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx
from redis.asyncio.connection import Connection

from liveupdates.backplanes._resp import MAX_LINE, Parser, ProtocolError, pack


def encode(value: Any) -> bytes:
    """A reply as Redis would send it (the reference the parser is checked against)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return b"+%b\r\n" % value.encode()
    return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)


# Status lines are text; lone surrogates have no UTF-8 form, so Redis cannot send them.
simple = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"), max_size=20)
replies = st.recursive(
    st.none() | st.binary(max_size=300) | st.integers(-(2**63), 2**63 - 1) | simple,
    lambda children: st.lists(children, max_size=5),
    max_leaves=30,
)


def test_commands_are_packed_as_redis_py_would() -> None:
    args = ("EVALSHA", "ab" * 20, 2, "{lu:topic:jobs}:meta", b"\x96\xa4bin\r\n", 1000, "é", 0)
    assert pack(args) == b"".join(Connection().pack_command(*args))


def test_each_kind_of_reply() -> None:
    data = (
        b"$5\r\nhello\r\n$0\r\n\r\n$-1\r\n:42\r\n:-7\r\n+OK\r\n*-1\r\n*0\r\n"
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\n\r\n\x00\x01\r\n"
        b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n"
    )
    assert Parser().feed(data) == [
        b"hello", b"", None, 42, -7, "OK", None, [],
        [b"message", b"ch", b"\r\n\x00\x01"],
        [[1], b"x"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "kind", "text"),
    [
        (b"-NOSCRIPT No matching script.", rx.NoScriptError, "No matching script."),
        (b"-READONLY You can't write against a read only replica.", rx.ReadOnlyError, "read"),
        (b"-LOADING Redis is loading the dataset", rx.BusyLoadingError, "loading"),
        (b"-WRONGTYPE Operation against a key", rx.ResponseError, "WRONGTYPE Operation"),
    ],
)
def test_error_replies_are_returned_as_redis_py_exceptions(
    line: bytes, kind: type[Exception], text: str
) -> None:
    """An error reply is the failure of its own command: returned, not raised."""
    (error,) = Parser().feed(line + b"\r\n")
    assert type(error) is kind and text in str(error)


@given(st.lists(replies, max_size=8), st.lists(st.integers(1, 64), max_size=40))
def test_replies_split_anywhere_come_out_whole_and_in_order(
    values: list[Any], cuts: list[int]
) -> None:
    data = b"".join(map(encode, values))
    parser, got, pos = Parser(), [], 0
    for cut in cuts:
        got += parser.feed(data[pos : pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    assert got == values


@given(st.binary(max_size=200))
def test_garbage_raises_protocol_error_or_waits_for_more(data: bytes) -> None:
    """Whatever Redis (or something else) sends, the parser never fails otherwise."""
    with suppress(ProtocolError):
        Parser().feed(data)


@pytest.mark.parametrize(
    "data",
    [
        b"?what\r\n",
        b"$abc\r\n",
        b"$99999999999\r\n",
        b"*-2\r\n",
        b":12x\r\n",
        b"$3\r\nabcd\r\n",  # no CRLF where the bulk string ends
        b"*1\r\n" * 5000 + b":1\r\n",  # nested too deep
        b"$" + b"9" * (MAX_LINE + 1),  # a header that never ends
    ],
)
def test_what_is_not_resp2_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(data)


def test_a_partial_reply_waits_and_keeps_nothing_parsed_twice() -> None:
    parser = Parser()
    assert parser.feed(b":1\r\n$10\r\n01234") == [1]
    assert parser.feed(b"56789") == []
    assert parser.feed(b"\r\n+OK\r\n") == [b"0123456789", "OK"]
