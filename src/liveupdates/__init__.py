"""liveupdates: realtime cache-invalidation events for Python web apps.

The server says "the data under query key ``["jobs"]`` changed" (or "job 7 is at 45 %") and
every browser that shows it refetches or patches its cache at once.
"""

from __future__ import annotations

from .auth import AuthRequest as AuthRequest
from .auth import Principal as Principal
from .backplanes import Backplane as Backplane
from .backplanes import MemoryBackplane as MemoryBackplane
from .backplanes import backplane_from_url as backplane_from_url
from .connection import Connection as Connection
from .connection import ConnectionState as ConnectionState
from .errors import BackplaneError as BackplaneError
from .errors import BackplaneUnavailable as BackplaneUnavailable
from .errors import CloseCode as CloseCode
from .errors import ErrorCode as ErrorCode
from .errors import FrameTooLarge as FrameTooLarge
from .errors import HubClosed as HubClosed
from .errors import LiveUpdatesError as LiveUpdatesError
from .errors import ProtocolError as ProtocolError
from .errors import Unauthorized as Unauthorized
from .events import Event as Event
from .events import Invalidate as Invalidate
from .events import Set as Set
from .hub import Hub as Hub
from .limits import Limits as Limits
from .metrics import HubStats as HubStats
from .metrics import Metrics as Metrics
from .positions import Position as Position
from .positions import Publication as Publication
from .positions import Replay as Replay
from .producer import Producer as Producer
from .producer import ProducerClosed as ProducerClosed
from .sync_producer import SyncProducer as SyncProducer
from .targets import Everyone as Everyone
from .targets import Target as Target
from .targets import Topic as Topic
from .targets import User as User
from .throttle import ThrottleRule as ThrottleRule
from .transaction import Transaction as Transaction
from .transaction import TransactionClosed as TransactionClosed

__version__ = "0.1.0.dev0"

__all__ = (
    "AuthRequest",
    "Backplane",
    "BackplaneError",
    "BackplaneUnavailable",
    "CloseCode",
    "Connection",
    "ConnectionState",
    "ErrorCode",
    "Event",
    "Everyone",
    "FrameTooLarge",
    "Hub",
    "HubClosed",
    "HubStats",
    "Invalidate",
    "Limits",
    "LiveUpdatesError",
    "MemoryBackplane",
    "Metrics",
    "Position",
    "Principal",
    "Producer",
    "ProducerClosed",
    "ProtocolError",
    "Publication",
    "Replay",
    "Set",
    "SyncProducer",
    "Target",
    "ThrottleRule",
    "Topic",
    "Transaction",
    "TransactionClosed",
    "Unauthorized",
    "User",
    "backplane_from_url",
)
