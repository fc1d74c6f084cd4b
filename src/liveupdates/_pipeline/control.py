"""Control publications: commands from one hub to every hub, carried by the backplane.

- `Disconnect`: `Hub.disconnect(user=...)` publishes it on the user's stream; every process
  closes that user's connections. It only affects connections opened before it was published:
  replaying an old one after a backplane gap does not close a user who has logged in since.
- `ResyncStream`: a publish failed (the backplane was down) after the application committed its
  change; once the backplane is back, the hub that failed publishes this on the stream, and
  every process sends its connections of that stream a `resync`. So no change goes unannounced.

A control publication takes a position like an event (so gaps are handled the same way) but
never reaches a client as such.
"""

from __future__ import annotations

from typing import Final

import msgspec

CONTROL_SLOT: Final = "lu.control"


class Disconnect(msgspec.Struct, tag="lu.disconnect", tag_field="type", frozen=True):
    """Close every connection of the stream, or only the connection `connection`."""

    connection: str | None = None
    reason: str = "disconnected by the application"


class ResyncStream(msgspec.Struct, tag="lu.resync", tag_field="type", frozen=True):
    """Every connection of the stream must refetch what it covers."""

    reason: str = "backplane"


Command = Disconnect | ResyncStream
_decoder: Final = msgspec.json.Decoder(Command)
_encoder: Final = msgspec.json.Encoder()


def encode_control(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_control(body: bytes) -> Command | None:
    """The command of a control publication, or None for one this version does not know."""
    try:
        command: Command = _decoder.decode(body)
    except msgspec.DecodeError:
        return None
    return command
