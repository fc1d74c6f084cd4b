"""The wire protocol (see docs/protocol.md): client frames decoded once, server messages.

Client frames are a msgspec tagged union, decoded in one call and dispatched with ``match``.
Server messages are msgspec structs too, so their JSON schema can be checked against the
browser client's types. Events are not built here: their JSON is spliced once per publication
(see `outbox.event_message`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec

from .errors import FrameTooLarge, ProtocolError
from .positions import Position

PROTOCOL_VERSION: Final = 1
SUBPROTOCOL: Final = "liveupdates.v1"
TOKEN_SUBPROTOCOL_PREFIX: Final = "liveupdates.token."

Offset = Annotated[int, msgspec.Meta(ge=0)]


class Cursor(msgspec.Struct, frozen=True):
    """A client's cursor for one stream, as sent in `hello` and `subscribe`."""

    epoch: Annotated[str, msgspec.Meta(max_length=100)]
    offset: Offset

    def position(self) -> Position:
        return Position(self.epoch, self.offset)


class _ClientFrame(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    pass


class Hello(_ClientFrame, tag="hello"):
    v: int = PROTOCOL_VERSION
    token: str | None = None
    topics: list[str] = []
    since: dict[str, Cursor] = {}


class Subscribe(_ClientFrame, tag="subscribe"):
    topic: str
    since: Cursor | None = None
    id: int | None = None


class Unsubscribe(_ClientFrame, tag="unsubscribe"):
    topic: str
    id: int | None = None


class Ping(_ClientFrame, tag="ping"):
    pass


class Pong(_ClientFrame, tag="pong"):
    pass


class Refresh(_ClientFrame, tag="refresh"):
    token: str


ClientFrame: TypeAlias = Hello | Subscribe | Unsubscribe | Ping | Pong | Refresh
_decoder: Final = msgspec.json.Decoder(ClientFrame)


def decode_client_frame(data: bytes | str, max_bytes: int) -> ClientFrame:
    """Decode one client frame; raises `ProtocolError` (or `FrameTooLarge`) with the reason."""
    if len(data) > max_bytes:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        frame: ClientFrame = _decoder.decode(data)
        return frame
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    except RecursionError:  # msgspec's answer to JSON nested about 1,000 levels deep
        raise ProtocolError("malformed JSON: nested too deeply") from None


# Server messages ---------------------------------------------------------------------------


class _ServerMessage(msgspec.Struct, tag_field="type", omit_defaults=False):
    pass


class Welcome(_ServerMessage, tag="welcome"):
    v: int
    conn: str
    user: str | None
    heartbeat: int
    limits: dict[str, Any]


Outcome: TypeAlias = Literal["fresh", "recovered", "resync"]


class Subscribed(_ServerMessage, tag="subscribed"):
    stream: str
    epoch: str
    offset: int
    outcome: Outcome
    reason: str | None = None
    id: int | None = None


class Unsubscribed(_ServerMessage, tag="unsubscribed"):
    stream: str
    id: int | None = None


class Resync(_ServerMessage, tag="resync"):
    stream: str
    epoch: str
    offset: int
    reason: str


class Error(_ServerMessage, tag="error"):
    code: str
    message: str
    topic: str | None = None
    id: int | None = None


class ServerPing(_ServerMessage, tag="ping"):
    pass


class ServerPong(_ServerMessage, tag="pong"):
    pass


class Expiring(_ServerMessage, tag="expiring"):
    expires_in: int


class Refreshed(_ServerMessage, tag="refreshed"):
    expires_in: int | None


class Goodbye(_ServerMessage, tag="goodbye"):
    retry_ms: int


ServerMessage: TypeAlias = (
    Welcome | Subscribed | Unsubscribed | Resync | Error | ServerPing | ServerPong
    | Expiring | Refreshed | Goodbye
)  # fmt: skip

_encoder: Final = msgspec.json.Encoder()


def encode_message(message: ServerMessage) -> str:
    """The JSON text of one server message."""
    return _encoder.encode(message).decode()
