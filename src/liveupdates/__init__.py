"""liveupdates: realtime cache-invalidation events for Python web apps.

The server says "the data under query key ``["jobs"]`` changed" (or "job 7 is at 45 %") and
every browser that shows it refetches or patches its cache at once.

This module holds what an application uses. The other public tiers:

- `liveupdates.errors`: every exception, the close codes and error codes;
- `liveupdates.asgi`: the WebSocket, SSE, admin and client-files endpoints;
- `liveupdates.backplanes`: the backplane contract and its positions, for backplane authors;
- `liveupdates.session`: the session layer and `Connection`, for transport authors;
- `liveupdates.testing`: the backplane conformance kit and an in-process WebSocket client;
- `liveupdates.durable`: publishing through a transactional outbox.
"""

from __future__ import annotations

from .auth import AuthRequest as AuthRequest
from .auth import Principal as Principal
from .errors import BackplaneError as BackplaneError
from .errors import BackplaneUnavailable as BackplaneUnavailable
from .errors import HubClosed as HubClosed
from .errors import LiveUpdatesError as LiveUpdatesError
from .errors import Unauthorized as Unauthorized
from .events import Event as Event
from .events import Invalidate as Invalidate
from .events import Set as Set
from .hub import Hub as Hub
from .limits import Limits as Limits
from .metrics import HubStats as HubStats
from .producer import Producer as Producer
from .sync_producer import SyncProducer as SyncProducer
from .targets import Everyone as Everyone
from .targets import Target as Target
from .targets import Topic as Topic
from .targets import User as User
from .throttle import ThrottleRule as ThrottleRule
from .transaction import Transaction as Transaction

__version__ = "0.1.0.dev0"

__all__ = (
    "AuthRequest",
    "BackplaneError",
    "BackplaneUnavailable",
    "Event",
    "Everyone",
    "Hub",
    "HubClosed",
    "HubStats",
    "Invalidate",
    "Limits",
    "LiveUpdatesError",
    "Principal",
    "Producer",
    "Set",
    "SyncProducer",
    "Target",
    "ThrottleRule",
    "Topic",
    "Transaction",
    "Unauthorized",
    "User",
)
