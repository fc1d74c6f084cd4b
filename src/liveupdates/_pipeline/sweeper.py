"""The sweeper: one task that looks at every connection, instead of timers per connection.

Each pass (at most every second) it closes slow consumers (`4503`), dead peers (`4504`) and
connections whose credential expired (`4440`), warns those whose credential expires soon
(`expiring`), and pings a connection that has been sent nothing for half the heartbeat interval
(the client hears from the server every `heartbeat`; what it was sent is its own frames,
`Connection.last_sent`, and the events of its streams, `Streams.sent_at`, which a fan-out
straight to the sockets records once per event, not per connection) or heard nothing for a
whole one: the client of
a connection that receives events all the time still has a ping to answer, the sign of life that
keeps it open (with the defaults, two chances at least before the 60 s timeout).

Each ping comes sooner than these rules say, by a jitter drawn anew for every ping
(`Connection.heartbeat_jitter`): up to a quarter of the interval for the first rule, up to half
of it for the second. So the connections opened together (after a deploy, or a benchmark's
cohort) are not pinged together, in one pass, and their pongs do not arrive in one burst, among
the traffic. A jitter drawn once per connection did not do it: each connection was then pinged
at a fixed period of its own, rounded to whole passes, and whole classes of a cohort came due
in the same pass, interval after interval (with steady traffic, up to a quarter of the cohort
in one pass; now an even spread over the interval, see tests/test_sweeper.py). A pass
looks at `BATCH` connections between two turns of the event loop, so that it never holds up the
process for long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import anyio
import anyio.lowlevel

from ..errors import CloseCode
from ..limits import Limits
from ..protocol import Expiring, ServerPing, encode_message
from .connection import Connection, ConnectionState
from .outbox import Message

_PING = Message(encode_message(ServerPing()))
BATCH = 1000  # connections swept between two turns of the event loop (about 0.6 ms)


def sweep_period(limits: Limits) -> float:
    return min(limits.heartbeat_interval / 2, limits.send_timeout / 2, 1.0)


def sweep_once(
    conns: Iterable[Connection],
    limits: Limits,
    now: float,
    wall: float,
    sent_at: Callable[[str], float],
) -> None:
    """One pass over `conns` at monotonic time `now` and wall-clock time `wall`; `sent_at`
    tells when a stream's last event was fanned out (`Streams.sent_at`)."""
    interval = limits.heartbeat_interval
    idle = interval / 2
    for conn in conns:
        if conn.state is not ConnectionState.OPEN:
            continue
        expires_at = conn.principal.expires_at
        if conn.sending_since and now - conn.sending_since > limits.send_timeout:
            conn.close(CloseCode.SLOW_CONSUMER, "the client does not read")
        elif now - conn.last_received > limits.heartbeat_timeout:
            conn.close(CloseCode.HEARTBEAT_TIMEOUT, "no traffic from the client")
        elif expires_at is not None and wall >= expires_at:
            conn.close(CloseCode.TOKEN_EXPIRED, "the credential expired")
        else:
            if (
                expires_at is not None
                and not conn.warned
                and expires_at - wall <= limits.expiry_warning
            ):
                conn.warned_of_expiry()
                conn.push_unordered(
                    Message(encode_message(Expiring(int((expires_at - wall) * 1000))))
                )
            jitter = conn.heartbeat_jitter * interval  # (drawn for each ping: 0 to interval)
            quiet = idle - jitter / 4
            silent = now - max(conn.last_received, conn.pinged)
            if silent >= interval - jitter / 2 or (
                now - conn.last_sent >= quiet and now - _last_event(conn, sent_at) >= quiet
            ):
                conn.pinged_at(now)
                conn.push_unordered(_PING)


def _last_event(conn: Connection, sent_at: Callable[[str], float]) -> float:
    """When an event of one of `conn`'s streams was last fanned out: sent straight to its
    socket, such an event updates no `last_sent` (one write per connection and event less)."""
    return max(map(sent_at, conn.streams), default=0.0)


async def sweep_pass(
    conns: list[Connection],
    limits: Limits,
    clock: Callable[[], float],
    sent_at: Callable[[str], float],
) -> None:
    """One pass over `conns`, `BATCH` connections at a time: the process serves others in
    between (20,000 connections take about 11 ms, which would otherwise stall every send)."""
    for start in range(0, len(conns), BATCH):
        if start:
            await anyio.lowlevel.checkpoint()
        sweep_once(conns[start : start + BATCH], limits, clock(), time.time(), sent_at)


async def sweep(
    conns: Mapping[str, Connection],
    limits: Limits,
    clock: Callable[[], float],
    sent_at: Callable[[str], float],
) -> None:
    """Sweep `conns` (the hub's live registry) forever."""
    period = sweep_period(limits)
    while True:
        await anyio.sleep(period)
        await sweep_pass(list(conns.values()), limits, clock, sent_at)
