"""Test helpers users can run: the backplane conformance kit and a recording receiver.

See `liveupdates.testing.backplane` and docs/writing-a-backplane.md.
"""

from __future__ import annotations

from .backplane import CHECKS as CHECKS
from .backplane import BackplaneConformance as BackplaneConformance
from .backplane import BackplaneFactory as BackplaneFactory
from .backplane import ConformanceError as ConformanceError
from .backplane import MakeBackplane as MakeBackplane
from .backplane import RecordingReceiver as RecordingReceiver
from .backplane import check_backplane as check_backplane

__all__ = (
    "CHECKS",
    "BackplaneConformance",
    "BackplaneFactory",
    "ConformanceError",
    "MakeBackplane",
    "RecordingReceiver",
    "check_backplane",
)
