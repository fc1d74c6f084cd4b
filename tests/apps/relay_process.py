"""An outbox relay as a process of its own: ``python relay_process.py DB BACKPLANE TABLE``.

One batch of 10,000 rows and a 2 s lease (SQLite), so that a test can kill it mid-batch.
"""

from __future__ import annotations

import sys

import anyio

from liveupdates.durable import run_relay

database, backplane, table = sys.argv[1:4]
anyio.run(lambda: run_relay(database, backplane, table=table, batch_size=10_000, lease=2.0))
