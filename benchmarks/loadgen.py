"""The load generator: many WebSocket clients in a process of its own, on loopback.

A minimal WebSocket client on `asyncio.Protocol` (uvloop when importable): the HTTP/1.1 upgrade,
a parser of server frames (7, 16 and 64-bit lengths, fragments, ping answered with pong, close),
client text frames masked with a zero key, JSON decoded with msgspec into a small struct (the
padding is skipped, not built). It costs far less CPU per frame than the servers it measures.

Protocols: ``bare`` and ``broadcaster`` (one JSON object per text frame), ``liveupdates``
(``hello`` first, ready once ``subscribed``; frames are JSON arrays; ``ping`` answered with
``pong``) and ``socketio`` (Engine.IO 4 over WebSocket: ``0{...}``, ``40``, events as
``42["tick",{...}]``, ping ``2`` answered with ``3``).

What a client counts (``arm``'s ``count``): ``ticks`` (events of the tick workload, latency
from the ``ts`` they carry) or ``keys`` (the dashboard workload: invalidations whose keys are
``["jobs", n]`` and ``["dashboard-stats"]``; one ``["jobs", n]`` reaching a client is one
delivery, and its receive time is kept with its ``n``, for the harness to pair with the time
the publisher posted event ``n``). A ``resync`` stands for every key still missing: it is
counted, and the client counts as served.

``--deflate`` offers ``permessage-deflate`` exactly as Chromium does
(``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``) and inflates what
the server compresses (the client's own frames, ``hello`` and ``pong``, go uncompressed, which
the extension allows).

Driven by `benchmarks/delivery.py` over stdin and stdout, one JSON object a line: the process
connects ``-n`` clients (source addresses 127.0.0.1 to 127.0.0.8, so ephemeral ports never run
out), prints ``{"ready": n, "deflate": clients that negotiated it}``, then answers commands:
``arm`` (reset the counters, set how many ticks or keys each client expects), ``wait`` (until
every client has them, or until no frame arrived for ``quiet`` seconds; bounded by
``timeout``), ``pings`` (the wall times of the server's heartbeat pings since the last
``pings``) and ``close``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import sys
import time
import zlib
from typing import Any, cast

import msgspec


class Msg(msgspec.Struct):
    """The fields a client looks at; the others (padding, positions) are skipped."""

    type: str = ""
    ts: float = 0.0
    keys: list[Any] = []


decode_one = msgspec.json.Decoder(Msg).decode
decode_list = msgspec.json.Decoder(list[Msg]).decode
decode_sio = msgspec.json.Decoder(tuple[str, Msg]).decode
PATHS = {"socketio": "/socket.io/?EIO=4&transport=websocket"}
ZERO_MASK = b"\0\0\0\0"
CHROMIUM_EXTENSIONS = "permessage-deflate; client_max_window_bits"  # what Chromium offers
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692: removed by the sender, appended to inflate


def text_frame(data: bytes) -> bytes:
    """A client text frame: masked, with a zero key (so the payload is unchanged)."""
    n = len(data)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0xFE, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0xFF, n)
    return header + ZERO_MASK + data


class Counters:
    """What the clients of this process received since the last `arm`."""

    def __init__(self) -> None:
        self.clients = 0
        self.target = 0  # ticks each client expects (0: none, a flood)
        self.pending = 0  # clients short of the target
        self.done = asyncio.Event()
        self.done_at = 0.0
        self.last = 0.0  # wall time of the last data frame
        self.dropped = 0  # connections the server closed
        self.latencies: list[float] | None = None
        self.keys = False  # count the keys of invalidations (the dashboard workload), not ticks
        self.arrivals: list[float] | None = None  # keys: n, receive time, n, receive time, ...
        self.resyncs = 0
        self.deflated = 0  # clients whose connection negotiated permessage-deflate
        self.pings: list[float] = []  # wall times of the server's heartbeat pings

    def arm(self, target: int, latencies: bool, keys: bool = False) -> None:
        self.target, self.pending, self.done = target, self.clients, asyncio.Event()
        self.done_at, self.last, self.keys, self.resyncs = 0.0, 0.0, keys, 0
        self.latencies = [] if latencies and not keys else None
        self.arrivals = [] if latencies and keys else None

    def served(self, now: float) -> None:
        """One more client has everything it expects."""
        self.pending -= 1
        if not self.pending:
            self.done_at = now
            self.done.set()


class Client(asyncio.Protocol):
    """One WebSocket connection; subclasses decode the application protocol."""

    __slots__ = (
        "buf", "compressed", "counters", "deflate", "fragments", "frames", "inflater", "keys",
        "open", "path", "ready", "resynced", "takeover", "ticks", "transport", "window",
    )  # fmt: skip

    def __init__(self, counters: Counters, path: str, deflate: bool = False) -> None:
        self.counters, self.path, self.deflate = counters, path, deflate
        self.inflater: Any = None  # zlib decompressor, once permessage-deflate is negotiated
        self.window = 0  # its wbits (negative: raw deflate)
        self.takeover = True  # the server keeps its compression context between messages
        self.resynced = self.compressed = False
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.fragments: bytearray | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ticks = self.frames = self.keys = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # (uvloop's is not one)
        host, port = transport.get_extra_info("peername")[:2]
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                + (f"Sec-WebSocket-Extensions: {CHROMIUM_EXTENSIONS}\r\n" if self.deflate else "")
                + "\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        else:
            self.counters.dropped += 1

    def send_text(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text_frame(data))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.fail(f"handshake refused: {bytes(buf[:end])!r}")
                return
            if self.deflate:
                self.negotiate(bytes(buf[:end]))
            del buf[: end + 4]
            self.open = True
            self.opened()
        now = time.time()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self.fail("the server masked a frame")
                return
            end = pos + header + length
            if end > size:
                break
            payload = buf[pos + header : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                if opcode:  # RSV1 of a message's first frame: compressed
                    self.compressed = bool(b0 & 0x40)
                if not b0 & 0x80:  # a fragment
                    self.fragments = (self.fragments or bytearray()) + payload
                    continue
                if opcode == 0 and self.fragments is not None:
                    payload, self.fragments = self.fragments + payload, None
                if self.compressed:
                    payload = self.inflate(payload)
                self.frames += 1
                self.counters.last = now
                self.message(payload, now)
            elif opcode == 9:  # ping
                assert self.transport is not None
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + ZERO_MASK + payload)
            elif opcode == 8:  # close: echo it
                assert self.transport is not None
                self.transport.write(bytes((0x88, 0x80 | len(payload))) + ZERO_MASK + payload)
                self.transport.close()
                break
        del buf[:pos]

    def negotiate(self, response: bytes) -> None:
        """Read the server's answer to the offer: permessage-deflate, and its parameters."""
        for line in response.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() != "sec-websocket-extensions":
                continue
            params = [p.strip() for p in value.split(";")]
            if params[0] != "permessage-deflate":
                continue
            bits = 15
            takeover = True
            for param in params[1:]:
                key, _, arg = param.partition("=")
                if key.strip() == "server_max_window_bits":
                    bits = int(arg.strip().strip('"'))
                elif key.strip() == "server_no_context_takeover":
                    takeover = False
            self.window, self.takeover = -bits, takeover
            self.inflater = zlib.decompressobj(self.window)
            self.counters.deflated += 1

    def inflate(self, payload: bytearray) -> bytearray:
        if self.inflater is None:
            self.fail("a compressed frame without permessage-deflate")
            return bytearray()
        data = bytearray(self.inflater.decompress(payload + DEFLATE_TAIL))
        if not self.takeover:  # a fresh window for each message
            self.inflater = zlib.decompressobj(self.window)
        return data

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def opened(self) -> None:
        """The upgrade succeeded."""
        self.ready.set_result(None)

    def message(self, payload: bytearray, now: float) -> None:
        raise NotImplementedError

    def received(self, message: Msg, now: float) -> None:
        kind = message.type
        if kind == "bench.tick":
            self.ticks += 1
            counters = self.counters
            if counters.latencies is not None:
                counters.latencies.append(now - message.ts)
            if self.ticks == counters.target:
                counters.served(now)
        elif kind == "invalidate":
            self.keys += len(message.keys)
            counters = self.counters
            if counters.keys:
                arrivals, before = counters.arrivals, self.ticks
                for key in message.keys:
                    if key[0] == "jobs":
                        self.ticks += 1
                        if arrivals is not None:
                            arrivals += (key[1], now)
                if before < counters.target <= self.ticks and not self.resynced:
                    counters.served(now)
        elif kind == "resync":  # everything still missing is refetched: served
            counters = self.counters
            counters.resyncs += 1
            if counters.keys and self.ticks < counters.target and not self.resynced:
                counters.served(now)
            self.resynced = True


class BareClient(Client):
    """The bare loop and broadcaster: one JSON object per frame."""

    __slots__ = ()

    def message(self, payload: bytearray, now: float) -> None:
        self.received(decode_one(payload), now)


class LiveClient(Client):
    """liveupdates: ``hello``, then frames that are JSON arrays of messages."""

    __slots__ = ()

    def opened(self) -> None:
        self.send_text(b'{"type":"hello"}')

    def message(self, payload: bytearray, now: float) -> None:
        for message in decode_list(payload):
            kind = message.type
            if kind == "ping":
                self.counters.pings.append(now)
                self.send_text(b'{"type":"pong"}')
            elif kind == "subscribed" and not self.ready.done():
                self.ready.set_result(None)
            else:
                self.received(message, now)


class SocketIOClient(Client):
    """python-socketio: Engine.IO 4 packets over WebSocket, one per frame."""

    __slots__ = ()

    def opened(self) -> None:
        pass  # the server speaks first: ``0{...}``

    def message(self, payload: bytearray, now: float) -> None:
        if payload[:2] == b"42":
            self.received(decode_sio(memoryview(payload)[2:])[1], now)
        elif payload[:1] == b"2":  # Engine.IO ping
            self.send_text(b"3")
        elif payload[:2] == b"40":
            if not self.ready.done():
                self.ready.set_result(None)
        elif payload[:1] == b"0":  # Engine.IO open: connect to the default namespace
            self.send_text(b"40")
        elif payload[:1] == b"1":
            self.fail("Engine.IO close")


CLIENTS: dict[str, type[Client]] = {
    "bare": BareClient,
    "broadcaster": BareClient,
    "liveupdates": LiveClient,
    "socketio": SocketIOClient,
}


async def connect_all(
    host: str,
    port: int,
    protocol: str,
    n: int,
    first_address: int,
    seconds: float,
    deflate: bool = False,
) -> tuple[Counters, list[Client]]:
    counters = Counters()
    loop = asyncio.get_running_loop()
    cls, path = CLIENTS[protocol], PATHS.get(protocol, "/live")
    clients: list[Client] = []
    deadline = loop.time() + seconds

    async def one(i: int) -> Client:
        source = f"127.0.0.{1 + (first_address + i) % 8}"
        _, client = await loop.create_connection(
            lambda: cls(counters, path, deflate), host, port, local_addr=(source, 0)
        )
        await client.ready
        return client

    wave = 250  # the listen backlog is finite
    for start in range(0, n, wave):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"connected {len(clients)} of {n} clients in {seconds} s")
        clients += await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(start, min(start + wave, n)))), remaining
        )
    counters.clients = len(clients)
    return counters, clients


async def wait(counters: Counters, seconds: float, quiet: float) -> bool:
    """Until every client has its ticks (or, for a flood, `quiet` s without a frame)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    if counters.target:
        try:
            await asyncio.wait_for(counters.done.wait(), seconds)
            return True
        except TimeoutError:
            return False
    while loop.time() < deadline:
        if counters.last and time.time() - counters.last >= quiet:
            return True
        await asyncio.sleep(0.05)
    return False


def report(counters: Counters, clients: list[Client], complete: bool) -> dict[str, Any]:
    return {
        "clients": len(clients),
        "complete": complete,
        "ticks": sum(c.ticks for c in clients),
        "frames": sum(c.frames for c in clients),
        "keys": sum(c.keys for c in clients),
        "done_at": counters.done_at,
        "last": counters.last,
        "dropped": counters.dropped,
        "resyncs": counters.resyncs,
        "covered": sum(max(0, counters.target - c.ticks) for c in clients if c.resynced),
        "latencies_ms": [round(x * 1000, 3) for x in counters.latencies or []],
        "arrivals": counters.arrivals or [],
    }


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        counters, clients = await connect_all(
            args.host, args.port, args.protocol, args.n, args.first_address, args.timeout,
            args.deflate,
        )  # fmt: skip
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return
    emit({"ready": len(clients), "deflate": counters.deflated})
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "arm":
            counters.arm(command["target"], command["latencies"], command.get("count") == "keys")
            for client in clients:
                client.ticks = client.frames = client.keys = 0
                client.resynced = False
            emit({"armed": True})
        elif command["cmd"] == "pings":
            emit({"pings": counters.pings})
            counters.pings = []
        elif command["cmd"] == "wait":
            complete = await wait(counters, command["timeout"], command["quiet"])
            emit(report(counters, clients, complete))
        elif command["cmd"] == "close":
            break
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(0.1)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=sorted(CLIENTS), required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("--first-address", type=int, default=0, help="of 127.0.0.1-8")
    parser.add_argument("--timeout", type=float, default=120, help="to connect everyone")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate as Chromium does"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
