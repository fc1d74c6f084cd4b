"""The jobs dashboard's web process, dying right after it commits a cancel:
``uvicorn --factory apps.dashboard_dies_after_commit:create_app``.

Its database runner kills the process (SIGKILL) as soon as a transaction that cancelled a job
has committed, before the request is answered and before its own relay could publish the
events committed with the change. Only another process's relay can deliver them now.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from starlette.applications import Starlette

from examples.jobs_dashboard import app as dashboard
from examples.jobs_dashboard.db import Database, Job

T = TypeVar("T")


class DiesAfterCancel(Database):
    def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        result = super().run(fn, write=write)  # committed
        if isinstance(result, Job) and result.status == "cancelled":
            os.kill(os.getpid(), signal.SIGKILL)
        return result


def create_app() -> Starlette:
    setattr(dashboard, "Database", DiesAfterCancel)  # noqa: B010
    return dashboard.create_app()
