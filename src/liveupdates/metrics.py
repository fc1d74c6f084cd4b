"""What a hub counts, cheaply: plain integers on the hot path, gauges computed when read.

`Metrics` is live and owned by the hub (one per process); `HubStats` is a snapshot of it plus
the gauges (connections by transport, users, subscriptions, streams). The Prometheus
exposition (`liveupdates.prometheus`) reads snapshots at scrape time, so scraping costs the
publish path nothing.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Protocol

LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LagHistogram:
    """Publish-to-send lag in seconds (cumulative buckets as Prometheus expects on export)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += times
        self.sum += seconds * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        total, out = 0, []
        for bound, n in zip((*LAG_BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Metrics:
    """Live counters of a hub. Per-connection figures are added when the connection ends."""

    __slots__ = (
        "auth_failures", "backplane_resets", "bytes_sent", "closes", "coalesced", "deliveries",
        "errors", "frames", "lag", "overflow_resyncs", "overflows", "publishes", "recoveries",
        "resyncs", "throttled",
    )  # fmt: skip

    def __init__(self) -> None:
        self.publishes = 0  # publications handed to the backplane (per stream)
        self.deliveries = 0  # messages queued for connections by fan-out
        self.frames = 0  # frames written to clients
        self.bytes_sent = 0  # characters of those frames (bytes for ASCII JSON)
        self.coalesced = 0  # of closed connections; live ones are added in snapshots
        self.overflows = 0
        self.overflow_resyncs = 0
        self.throttled = 0
        self.resyncs: Counter[str] = Counter()  # by reason: expired, epoch, ahead, backplane
        self.recoveries: Counter[str] = Counter()  # by outcome: fresh, recovered, resync
        self.closes: Counter[str] = Counter()  # by close code name, or "client"
        self.auth_failures = 0
        self.backplane_resets = 0
        self.errors = 0
        self.lag = LagHistogram()


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of a hub's figures (this process only)."""

    connections: int
    users: int
    streams: int
    publishes: int
    deliveries: int
    frames: int
    throttled: int
    resyncs: int
    recovered: int
    errors: int
    connections_by_transport: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    bytes_sent: int = 0
    coalesced: int = 0
    overflows: int = 0
    resyncs_by_reason: dict[str, int] = field(default_factory=dict)
    recoveries_by_outcome: dict[str, int] = field(default_factory=dict)
    closes_by_code: dict[str, int] = field(default_factory=dict)
    auth_failures: int = 0
    backplane_resets: int = 0
    lag_buckets: list[tuple[float, int]] = field(default_factory=list)
    lag_sum: float = 0.0
    lag_count: int = 0
    # the transactional outbox, when this process runs a relay (`OutboxRelay.in_hub`)
    outbox_published: int = 0  # rows published by this process's relays
    outbox_errors: int = 0  # their failed cycles (each logged and retried)
    outbox_pending: int = 0  # rows waiting in the table at the last check
    outbox_lag: float = 0.0  # age in seconds of the oldest waiting row at the last check


class OutboxFigures(Protocol):
    """What `HubStats` reads of an outbox relay's snapshot (`durable.RelayStats`)."""

    @property
    def published(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def lag(self) -> float: ...


class OutboxSource(Protocol):
    """An outbox relay whose figures a hub reports (`Hub.report_outbox`)."""

    def stats(self) -> OutboxFigures: ...
