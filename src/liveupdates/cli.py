"""The command line: ``liveupdates`` (or ``python -m liveupdates``).

- ``publish``: publish one event through the backplane (``--backplane redis://...``) or the HTTP
  API (``--api https://.../api/live`` with an API key);
- ``tail``: connect to a WebSocket endpoint as a client and print every message as a JSON line
  (for debugging a deployment; needs the ``[cli]`` extra);
- ``relay``: the outbox relay (`liveupdates.durable`) as a process of its own.

Errors are one line on stderr and a non-zero exit: 1 when the action failed, 2 for bad usage.
Options may come from the environment: ``LIVEUPDATES_BACKPLANE``, ``LIVEUPDATES_API``,
``LIVEUPDATES_API_KEY``, ``LIVEUPDATES_TOKEN`` and ``LIVEUPDATES_DATABASE`` (keep keys, tokens
and passwords out of shell history).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

import anyio
import msgspec

from .errors import LiveUpdatesError
from .producer import Producer
from .publish_json import InvalidRequest, PublishIn, RequestLimits, parse

USAGE_ERROR, FAILED = 2, 1


class CLIError(Exception):
    """A failure reported as one line on stderr."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        raise CLIError(f"{message} (see {self.prog} --help)", USAGE_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); the exit status."""
    try:
        args = _parser().parse_args(argv)
        status: int = args.run(args)
        return status
    except CLIError as exc:
        print(f"liveupdates: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130


def _parser() -> _Parser:
    parser = _Parser(prog="liveupdates", description="Realtime cache-invalidation events.")
    commands = parser.add_subparsers(title="commands", required=True, parser_class=_Parser)

    publish = commands.add_parser("publish", help="publish one event")
    via = publish.add_mutually_exclusive_group()
    via.add_argument("--backplane", help="backplane URL (or LIVEUPDATES_BACKPLANE)")
    via.add_argument("--api", help="HTTP publish API base URL (or LIVEUPDATES_API)")
    publish.add_argument("--api-key", help="API key for --api (or LIVEUPDATES_API_KEY)")
    publish.add_argument(
        "--to", action="append", required=True, metavar="TARGET",
        help="user:<id>, topic:<name> or all (repeatable)",
    )  # fmt: skip
    event = publish.add_mutually_exclusive_group(required=True)
    event.add_argument("--invalidate", nargs="+", metavar="KEY", help="query keys: '[\"jobs\"]'")
    event.add_argument("--set", nargs=2, metavar=("KEY", "DATA"), help="a key and its JSON data")
    event.add_argument("--event", metavar="JSON", help='any event: \'{"type": "job.failed"}\'')
    publish.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    publish.set_defaults(run=_publish)

    tail = commands.add_parser("tail", help="connect as a client and print what arrives")
    tail.add_argument("url", help="the WebSocket endpoint: ws(s)://host/live (http(s) works too)")
    tail.add_argument("--token", help="credential sent in hello (or LIVEUPDATES_TOKEN)")
    tail.add_argument("--topic", action="append", default=[], help="subscribe (repeatable)")
    tail.add_argument("--origin", help="Origin header, if the endpoint checks it")
    tail.add_argument("--count", type=int, help="exit after this many events")
    tail.add_argument("--pings", action="store_true", help="print heartbeats too")
    tail.set_defaults(run=_tail)

    relay = commands.add_parser("relay", help="run the outbox relay until SIGTERM or SIGINT")
    relay.add_argument(
        "--database", help="postgresql://... or sqlite:///path (or LIVEUPDATES_DATABASE)"
    )
    relay.add_argument("--backplane", help="backplane URL (or LIVEUPDATES_BACKPLANE)")
    relay.add_argument("--table", help="the outbox table (default: the library's)")
    relay.add_argument("--batch-size", type=int, help="rows claimed per batch")
    relay.add_argument("--poll-interval", type=float, help="seconds between polls")
    relay.add_argument("--lease", type=float, help="seconds a claimed batch stays claimed")
    relay.add_argument("--no-listen", action="store_true", help="poll only (no LISTEN/NOTIFY)")
    relay.set_defaults(run=_relay)
    return parser


# -- publish ----------------------------------------------------------------------------------


def _publish(args: argparse.Namespace) -> int:
    request = {"to": [_target(t) for t in args.to], "event": _event(args)}
    api = args.api or (None if args.backplane else os.environ.get("LIVEUPDATES_API"))
    if api:
        positions = _publish_http(api, request, args)
    else:
        backplane = args.backplane or os.environ.get("LIVEUPDATES_BACKPLANE")
        if not backplane:
            raise CLIError("give --backplane or --api (or LIVEUPDATES_BACKPLANE)", USAGE_ERROR)
        positions = asyncio.run(_publish_backplane(backplane, request, args.timeout))
    for position in positions:
        print(json.dumps(position))
    return 0


def _target(text: str) -> dict[str, Any]:
    if text in ("all", "everyone"):
        return {"everyone": True}
    kind, _, name = text.partition(":")
    if kind not in ("user", "topic") or not name:
        raise CLIError(f"unknown target {text!r}: user:<id>, topic:<name> or all", USAGE_ERROR)
    return {kind: name}


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{what} is not JSON ({exc}): {text}", USAGE_ERROR) from None


def _event(args: argparse.Namespace) -> dict[str, Any]:
    if args.invalidate:
        return {"type": "invalidate", "keys": [_json(k, "a key") for k in args.invalidate]}
    if args.set:
        key, data = _json(args.set[0], "the key"), _json(args.set[1], "the data")
        return {"type": "set", "key": key, "data": data}
    event = _json(args.event, "the event")
    if not isinstance(event, dict):
        raise CLIError('an event is a JSON object: {"type": ..., ...}', USAGE_ERROR)
    return event


async def _publish_backplane(url: str, request: dict[str, Any], seconds: float) -> list[Any]:
    try:
        prepared = parse(msgspec.convert(request, PublishIn), RequestLimits())
        producer = Producer.from_url(url)
    except (InvalidRequest, ValueError, msgspec.ValidationError) as exc:
        raise CLIError(str(exc), USAGE_ERROR) from None
    try:
        with anyio.fail_after(seconds):
            async with producer:
                publications = await producer.publish_prepared(prepared)
    except (LiveUpdatesError, TimeoutError) as exc:
        raise CLIError(
            f"could not publish through {_redacted(url)}: {exc or 'timed out'}"
        ) from None
    return [{"stream": p.stream, "epoch": p.epoch, "offset": p.offset} for p in publications]


def _publish_http(api: str, request: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    key = args.api_key or os.environ.get("LIVEUPDATES_API_KEY")
    if not key:
        raise CLIError("--api needs an API key: --api-key or LIVEUPDATES_API_KEY", USAGE_ERROR)
    http = urllib.request.Request(
        api.rstrip("/") + "/publish",
        data=json.dumps(request).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http, timeout=args.timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CLIError(f"the API answered {exc.code}: {_error_of(exc)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CLIError(f"could not reach the API at {api}: {reason}") from None
    positions: list[Any] = answer["positions"]
    return positions


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        path = f" (at {error['path']})" if error.get("path") else ""
        return f"{error['message']}{path}"
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2] if "@" in rest else url


# -- tail -------------------------------------------------------------------------------------


def _tail(args: argparse.Namespace) -> int:
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    except ImportError:
        raise CLIError("tail needs websockets: pip install 'liveupdates[cli]'") from None
    url = args.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    hello: dict[str, Any] = {"type": "hello", "topics": args.topic}
    token = args.token or os.environ.get("LIVEUPDATES_TOKEN")
    if token:
        hello["token"] = token

    async def run() -> int:
        events = 0
        headers = {"Origin": args.origin} if args.origin else None
        async with connect(url, additional_headers=headers, ping_interval=None) as ws:
            await ws.send(json.dumps(hello))
            async for frame in ws:
                for message in json.loads(frame):
                    if message.get("type") == "ping":
                        await ws.send('{"type":"pong"}')
                        if not args.pings:
                            continue
                    print(json.dumps(message), flush=True)
                    if "offset" in message and message.get("type") not in ("subscribed", "resync"):
                        events += 1
                if args.count is not None and events >= args.count:
                    return 0
        code, reason = ws.close_code, ws.close_reason or ""  # (a normal close: 1000, 1001)
        raise CLIError(f"the server closed the connection: {code} {reason}".rstrip())

    try:
        return asyncio.run(run())
    except ConnectionClosed as exc:
        received = exc.rcvd
        code, reason = (received.code, received.reason) if received else (1006, "no close frame")
        raise CLIError(f"the server closed the connection: {code} {reason}".rstrip()) from None
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise CLIError(f"could not connect to {url}: {exc}") from None


# -- relay ------------------------------------------------------------------------------------


def _relay(args: argparse.Namespace) -> int:
    """The outbox relay as a process: `liveupdates.durable.run_relay` until SIGTERM or SIGINT
    (the batch under way is finished first)."""
    database = args.database or os.environ.get("LIVEUPDATES_DATABASE")
    backplane = args.backplane or os.environ.get("LIVEUPDATES_BACKPLANE")
    if not database or not backplane:
        raise CLIError("give --database and --backplane (or LIVEUPDATES_DATABASE and "
                       "LIVEUPDATES_BACKPLANE)", USAGE_ERROR)  # fmt: skip
    try:
        run_relay = importlib.import_module("liveupdates.durable").run_relay
    except (ImportError, AttributeError):
        missing = "the outbox relay (liveupdates.durable) is not in this installation"
        raise CLIError(missing) from None
    names = ("table", "batch_size", "poll_interval", "lease")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.no_listen:
        options["listen"] = False
    try:
        asyncio.run(run_relay(database, backplane, **options))
    except ValueError as exc:
        raise CLIError(str(exc), USAGE_ERROR) from None
    except (LiveUpdatesError, OSError) as exc:
        raise CLIError(f"the relay stopped: {exc}") from None
    return 0
