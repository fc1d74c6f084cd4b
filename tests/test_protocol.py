"""The wire decoder never crashes: every input decodes or is rejected with a ProtocolError."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveupdates.errors import FrameTooLarge, ProtocolError
from liveupdates.protocol import Hello, Subscribe, decode_client_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "subscribe", "unsubscribe", "ping", "pong", "refresh"])},
    optional={
        "topic": json_values,
        "topics": json_values,
        "since": json_values | st.dictionaries(st.text(), json_values),
        "token": json_values,
        "id": json_values,
        "v": json_values,
    },
)


def decode_or_reject(data: bytes | str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_client_frame(data, 65_536)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    decode_or_reject(data)


@given(json_values)
def test_arbitrary_json_never_crashes_the_decoder(value: object) -> None:
    decode_or_reject(json.dumps(value))


@given(frame_like)
def test_frame_shaped_json_decodes_or_is_rejected(value: dict[str, object]) -> None:
    decode_or_reject(json.dumps(value))


def test_valid_frames_decode_to_their_types() -> None:
    hello = decode_client_frame(
        '{"type":"hello","token":"t","topics":["jobs"],"since":{"all":{"epoch":"e","offset":3}},'
        '"future_field":1}',
        1000,
    )
    assert isinstance(hello, Hello)
    assert hello.topics == ["jobs"] and hello.since["all"].offset == 3
    sub = decode_client_frame(b'{"type":"subscribe","topic":"jobs","id":7}', 1000)
    assert isinstance(sub, Subscribe) and (sub.topic, sub.id, sub.since) == ("jobs", 7, None)


@pytest.mark.parametrize(
    "data",
    [
        "",
        "null",
        "[]",
        '{"type":"nope"}',
        '{"topic":"x"}',
        '{"type":"subscribe","topic":5}',
        '{"type":"hello","since":{"all":{"epoch":"e","offset":-1}}}',
        '{"type":"hello","since":{"all":{"epoch":"e"}}}',
        '{"type":"ping"',
        b"\xff\xfe",
    ],
)
def test_named_bad_frames_are_protocol_errors(data: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_client_frame(data, 1000)


def test_oversized_frames_are_rejected_before_parsing() -> None:
    with pytest.raises(FrameTooLarge) as exc:
        decode_client_frame('{"type":"ping"}' + " " * 100, 50)
    assert exc.value.close_code == 1009


@pytest.mark.parametrize("depth", [1_000, 5_000, 30_000])
def test_deeply_nested_json_is_a_protocol_error(depth: int) -> None:
    """msgspec gives up on deep nesting with a RecursionError: malformed input, not a crash."""
    frame = '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"
    with pytest.raises(ProtocolError, match="nested too deeply") as exc:
        decode_client_frame(frame, 100_000)
    assert exc.value.close_code == 4400
