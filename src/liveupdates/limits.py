"""Every bound a connection lives within, and the inbound rate limiter."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable limits of every connection (see docs/protocol.md for what a breach does).

    Times are in seconds, sizes in bytes.
    """

    max_frame_bytes: int = 65_536
    max_subscriptions: int = 100
    rate: float = 20.0
    burst: int = 40
    outbox_max_messages: int = 1_000
    outbox_max_bytes: int = 1 << 20
    send_timeout: float = 10.0
    hello_timeout: float = 10.0
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 60.0
    flush_interval: float = 0.0
    goodbye_retry: float = 5.0
    expiry_warning: float = 60.0
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (value == 0 and f.name != "flush_interval"):
                raise ValueError(f"Limits.{f.name} must be positive, not {value!r}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("Limits.heartbeat_timeout must exceed heartbeat_interval")

    def public(self) -> dict[str, Any]:
        """The limits a client needs to know (sent in `welcome`)."""
        wanted = ("max_frame_bytes", "max_subscriptions", "rate", "burst")
        return {k: v for k, v in asdict(self).items() if k in wanted}


class RateLimiter:
    """A token bucket: `rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("_allowance", "_burst", "_last", "_rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate, self._burst = rate, float(burst)
        self._allowance, self._last = float(burst), now

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        self._allowance = min(self._burst, self._allowance + (now - self._last) * self._rate)
        self._last = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True
