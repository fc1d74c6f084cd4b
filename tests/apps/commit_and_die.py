"""A web process that dies right after its commit: ``python commit_and_die.py URL TABLE USER``.

It changes a row and writes its event into the outbox in one transaction, commits, and kills
itself with SIGKILL before anything could publish (it has no hub at all). Only a relay can
deliver the event now.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys

import psycopg

from liveupdates import Invalidate, User
from liveupdates.durable import write_event

url, table, user = sys.argv[1:4]
if url.startswith("sqlite:///"):
    conn: sqlite3.Connection | psycopg.Connection[tuple[object, ...]] = sqlite3.connect(
        url.removeprefix("sqlite:///")
    )
else:
    conn = psycopg.connect(url)
conn.execute(f"INSERT INTO jobs_{table} (id, status) VALUES (7, 'done')")
write_event(conn, Invalidate([["jobs", 7]]), User(user), table=table)
conn.commit()
os.kill(os.getpid(), signal.SIGKILL)  # after the commit, before any publish
