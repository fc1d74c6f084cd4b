"""Prometheus exposition of a hub's figures (the ``[prometheus]`` extra).

::

    from liveupdates.prometheus import metrics_app
    app.mount("/metrics", metrics_app(hub))

The collector reads `Hub.stats()` when Prometheus scrapes: nothing is counted twice, and the
publish path never calls into prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .durable import OutboxRelay
    from .hub import Hub

__all__ = ("HubCollector", "RelayCollector", "metrics_app")


class HubCollector(Collector):
    """Exposes one hub's `HubStats` as ``liveupdates_*`` metrics."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        s = self.hub.stats()
        connections = GaugeMetricFamily(
            "liveupdates_connections", "Open connections", labels=["transport"]
        )
        for transport, n in sorted(s.connections_by_transport.items()):
            connections.add_metric([transport], n)
        yield connections
        yield GaugeMetricFamily("liveupdates_users", "Users with a connection", value=s.users)
        yield GaugeMetricFamily(
            "liveupdates_subscriptions", "Topic subscriptions", value=s.subscriptions
        )
        yield GaugeMetricFamily("liveupdates_streams", "Streams with listeners", value=s.streams)
        for name, doc, value in (
            ("publishes", "Publications handed to the backplane", s.publishes),
            ("deliveries", "Messages queued for connections", s.deliveries),
            ("frames", "Frames written to clients", s.frames),
            ("sent_bytes", "Characters of frames written to clients", s.bytes_sent),
            ("coalesced", "Messages merged away in outboxes", s.coalesced),
            ("throttled", "Events held or superseded by throttle windows", s.throttled),
            ("outbox_overflows", "Outboxes collapsed into a resync", s.overflows),
            ("auth_failures", "Refused authentications", s.auth_failures),
            ("backplane_resets", "Backplane reconnections", s.backplane_resets),
            ("errors", "Unexpected errors", s.errors),
        ):
            yield CounterMetricFamily(f"liveupdates_{name}", doc, value=value)
        for name, doc, label, values in (
            ("resyncs", "Resyncs sent, by reason", "reason", s.resyncs_by_reason),
            ("recoveries", "Stream joins, by outcome", "outcome", s.recoveries_by_outcome),
            ("closes", "Closed connections, by close code", "code", s.closes_by_code),
        ):
            family = CounterMetricFamily(f"liveupdates_{name}", doc, labels=[label])
            for key, n in sorted(values.items()):
                family.add_metric([key], n)
            yield family
        yield HistogramMetricFamily(
            "liveupdates_publish_lag_seconds",
            "From publication to the frame written to a client",
            buckets=[(_bound(b), n) for b, n in s.lag_buckets],
            sum_value=s.lag_sum,
        )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class RelayCollector(Collector):
    """Exposes outbox relays' `RelayStats` as ``liveupdates_outbox_*`` metrics (label: table)."""

    def __init__(self, *relays: OutboxRelay) -> None:
        self.relays = relays

    def collect(self) -> Iterator[Metric]:
        families: list[CounterMetricFamily | GaugeMetricFamily] = [
            CounterMetricFamily(
                "liveupdates_outbox_published", "Outbox rows published", labels=["table"]
            ),
            CounterMetricFamily(
                "liveupdates_outbox_errors", "Failed relay cycles (retried)", labels=["table"]
            ),
            GaugeMetricFamily(
                "liveupdates_outbox_pending", "Rows in the outbox table", labels=["table"]
            ),
            GaugeMetricFamily(
                "liveupdates_outbox_lag_seconds", "Age of the oldest outbox row", labels=["table"]
            ),
        ]
        for relay in self.relays:
            s = relay.stats()
            for family, value in zip(
                families, (s.published, s.errors, s.pending, s.lag), strict=True
            ):
                family.add_metric([relay.table], value)
        yield from families


def metrics_app(hub: Hub, *, relays: Iterable[OutboxRelay] = ()) -> Any:
    """An ASGI app serving `hub`'s metrics (and those of `relays`, the outbox relays running
    in this process) in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    if relays := tuple(relays):
        registry.register(RelayCollector(*relays))
    return make_asgi_app(registry)
