"""Jobs in SQLite: the schema, the queries, and a runner that keeps them off the event loop.

Queries are plain functions of a `sqlite3.Connection`. `Database.write(fn)` runs one in a
worker thread inside ``BEGIN IMMEDIATE ... COMMIT`` (or rolls back if it raises). The events
that tell browsers about a change are written in the same transaction, into the outbox table
(`liveupdates.durable`), and a relay publishes them once committed::

    def cancel(c: sqlite3.Connection) -> Job:
        job = db.cancel(c, job_id, owner)
        live.jobs_changed(c, [job])  # the event: committed with the change, or not at all
        return job

    job = await database.write(cancel)  # committed when this returns

Several processes share the file (WAL mode): web processes, and worker processes that claim
jobs with a lease renewed at every item; a job whose worker died is taken over when its lease
runs out.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
import msgspec

from liveupdates.durable import create_outbox_table

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',  -- queued running completed failed cancelled
    done        INTEGER NOT NULL DEFAULT 0,      -- items processed
    total       INTEGER NOT NULL,                -- items to process
    message     TEXT NOT NULL DEFAULT '',
    error       TEXT,
    fail_at     INTEGER,                         -- fail on this item (tests, demos)
    attempt     INTEGER NOT NULL DEFAULT 1,
    rev         INTEGER NOT NULL DEFAULT 1,      -- bumped by every change
    worker      TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS progress (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    done    INTEGER NOT NULL,
    total   INTEGER NOT NULL,
    message TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS progress_job ON progress (job_id, at);
CREATE TABLE IF NOT EXISTS processes (
    id          TEXT PRIMARY KEY,
    connections INTEGER NOT NULL,
    seen_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,                   -- its last heartbeat
    stopped_at  REAL                             -- a clean stop; a killed worker never says
);
"""

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
# The job list's filters: the WHERE clause of each, `?` the oldest finished_at still "active".
FILTERS = {
    "active": "(status IN ('queued', 'running') OR finished_at > ?)",
    "failed": "status = 'failed'",
    "completed": "status = 'completed'",
    "all": "1",
}
PAGE = 500  # jobs per page of the list, at most
COLUMNS = (
    "id, owner, name, status, done, total, message, error, attempt, rev, worker, "
    "created_at, started_at, finished_at"
)


class Job(msgspec.Struct, frozen=True):
    id: int
    owner: str
    name: str
    status: str
    done: int
    total: int
    message: str
    error: str | None
    attempt: int
    rev: int
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class Point(msgspec.Struct, frozen=True):
    """One entry of a job's progress history."""

    attempt: int
    done: int
    total: int
    message: str
    at: float


class Stats(msgspec.Struct, frozen=True):
    total: int
    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    items: int  # items processed, over every job


class Worker(msgspec.Struct, frozen=True):
    """A worker process as the admin page shows it: its heartbeat, and the jobs it holds."""

    id: str
    host: str
    pid: int
    concurrency: int
    started_at: float
    seen_at: float  # the last heartbeat
    stopped_at: float | None  # None: running, or killed (then `seen_at` gets old)
    jobs: int  # running jobs it holds, lease still valid
    expired: int  # running jobs it held when its lease ran out (it died): others resume them


class NotFound(Exception):
    """No such job (or not one of yours: the API does not tell the difference)."""


class Conflict(Exception):
    """The job is not in a state that allows this (cancel a finished job, retry a running one)."""


# -- queries: plain functions of a connection -------------------------------------------------


def _job(row: sqlite3.Row | None) -> Job | None:
    return None if row is None else Job(**dict(row))


def _one(c: sqlite3.Connection, sql: str, *params: object) -> Job | None:
    return _job(c.execute(sql, params).fetchone())


def _log(c: sqlite3.Connection, job: Job, message: str) -> None:
    c.execute(
        "INSERT INTO progress (job_id, attempt, done, total, message, at) VALUES (?,?,?,?,?,?)",
        (job.id, job.attempt, job.done, job.total, message, time.time()),
    )


def create_jobs(
    c: sqlite3.Connection, owner: str, name: str, total: int, fail_at: int | None, count: int = 1
) -> list[Job]:
    jobs = []
    for n in range(count):
        label = name if count == 1 else f"{name} #{n + 1}"
        job = _one(
            c,
            f"INSERT INTO jobs (owner, name, total, fail_at, message, created_at)"
            f" VALUES (?, ?, ?, ?, 'queued', ?) RETURNING {COLUMNS}",
            owner, label, total, fail_at, time.time(),
        )  # fmt: skip
        assert job is not None
        _log(c, job, "queued")
        jobs.append(job)
    return jobs


def get_job(c: sqlite3.Connection, job_id: int, owner: str | None = None) -> Job:
    """The job, if `owner` owns it (any job when `owner` is None); raises `NotFound`."""
    job = _one(c, f"SELECT {COLUMNS} FROM jobs WHERE id = ?", job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFound(job_id)
    return job


def _where(owner: str | None, filter: str, finished_ttl: float) -> tuple[str, list[object]]:
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}")
    clauses, params = [FILTERS[filter]], list[object]()
    if filter == "active":
        params.append(time.time() - finished_ttl)
    if owner is not None:
        clauses.append("owner = ?")
        params.append(owner)
    return " AND ".join(clauses), params


def list_jobs(
    c: sqlite3.Connection,
    owner: str | None,
    *,
    filter: str = "all",
    before: int | None = None,
    limit: int = PAGE,
    finished_ttl: float = 0.0,
) -> list[Job]:
    """A page of the newest jobs of `owner` (of everyone when None) that pass `filter`: the
    `limit` newest, or the `limit` newest older than job `before` (the next page)."""
    where, params = _where(owner, filter, finished_ttl)
    if before is not None:
        where += " AND id < ?"
        params.append(before)
    sql = f"SELECT {COLUMNS} FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?"
    rows = c.execute(sql, (*params, limit))
    return [Job(**dict(row)) for row in rows]


def count_jobs(
    c: sqlite3.Connection, owner: str | None, *, filter: str = "all", finished_ttl: float = 0.0
) -> int:
    """How many jobs `list_jobs` pages through."""
    where, params = _where(owner, filter, finished_ttl)
    (count,) = c.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()
    return int(count)


def history(c: sqlite3.Connection, job_id: int) -> list[Point]:
    rows = c.execute(
        "SELECT attempt, done, total, message, at FROM progress WHERE job_id = ? ORDER BY rowid",
        (job_id,),
    )
    return [Point(**dict(row)) for row in rows]


def stats(c: sqlite3.Connection, owner: str | None) -> Stats:
    where, params = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
    counts = dict.fromkeys(STATUSES, 0)
    items = 0
    sql = f"SELECT status, count(*), coalesce(sum(done), 0) FROM jobs {where} GROUP BY status"
    for status, count, done in c.execute(sql, params):
        counts[status] = count
        items += done
    return Stats(total=sum(counts.values()), items=items, **counts)


def cancel(c: sqlite3.Connection, job_id: int, owner: str | None) -> Job:
    job = get_job(c, job_id, owner)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is {job.status}")
    cancelled = _one(
        c,
        f"UPDATE jobs SET status = 'cancelled', message = 'cancelled', worker = NULL,"
        f" lease_until = 0, finished_at = ?, rev = rev + 1 WHERE id = ? RETURNING {COLUMNS}",
        time.time(), job_id,
    )  # fmt: skip
    assert cancelled is not None
    _log(c, cancelled, "cancelled")
    return cancelled


def retry(c: sqlite3.Connection, job_id: int, owner: str | None) -> Job:
    job = get_job(c, job_id, owner)
    if job.status not in ("failed", "cancelled"):
        raise Conflict(f"job {job_id} is {job.status}: only failed or cancelled jobs are retried")
    retried = _one(
        c,
        f"UPDATE jobs SET status = 'queued', done = 0, message = 'queued', error = NULL,"
        f" attempt = attempt + 1, started_at = NULL, finished_at = NULL, rev = rev + 1"
        f" WHERE id = ? RETURNING {COLUMNS}",
        job_id,
    )  # fmt: skip
    assert retried is not None
    _log(c, retried, f"retry (attempt {retried.attempt})")
    return retried


# -- the worker's side ------------------------------------------------------------------------


def claim(c: sqlite3.Connection, worker: str, lease: float) -> tuple[Job, int | None] | None:
    """Take the oldest queued job, or a running one whose worker's lease ran out.

    Returns the job and its failure item (or None), or None when there is nothing to do.
    """
    now = time.time()
    row = c.execute(
        "SELECT id, status, fail_at FROM jobs WHERE status = 'queued'"
        " OR (status = 'running' AND lease_until < ?) ORDER BY id LIMIT 1",
        (now,),
    ).fetchone()
    if row is None:
        return None
    resumed = row["status"] == "running"
    job = _one(
        c,
        f"UPDATE jobs SET status = 'running', worker = ?, lease_until = ?, rev = rev + 1,"
        f" message = ?, started_at = coalesce(started_at, ?) WHERE id = ? RETURNING {COLUMNS}",
        worker, now + lease, "resumed" if resumed else "started", now, row["id"],
    )  # fmt: skip
    assert job is not None
    _log(c, job, job.message)
    return job, row["fail_at"]


def advance(c: sqlite3.Connection, job: Job, done: int, message: str, lease: float) -> Job | None:
    """Record progress and renew the lease; None when the job is no longer ours to run
    (cancelled, retried, or taken over after our lease ran out)."""
    now = time.time()
    updated = _one(
        c,
        f"UPDATE jobs SET done = ?, message = ?, lease_until = ?, rev = rev + 1"
        f" WHERE id = ? AND status = 'running' AND worker = ? AND attempt = ?"
        f" RETURNING {COLUMNS}",
        done, message, now + lease, job.id, job.worker, job.attempt,
    )  # fmt: skip
    if updated is not None:
        _log(c, updated, message)
    return updated


def finish(c: sqlite3.Connection, job: Job, error: str | None) -> Job | None:
    """Mark our running job completed (or failed with `error`); None if no longer ours."""
    status, message = ("failed", f"failed: {error}") if error else ("completed", "completed")
    finished = _one(
        c,
        f"UPDATE jobs SET status = ?, message = ?, error = ?, worker = NULL, lease_until = 0,"
        f" finished_at = ?, rev = rev + 1"
        f" WHERE id = ? AND status = 'running' AND worker = ? AND attempt = ?"
        f" RETURNING {COLUMNS}",
        status, message, error, time.time(), job.id, job.worker, job.attempt,
    )  # fmt: skip
    if finished is not None:
        _log(c, finished, message)
    return finished


def release(c: sqlite3.Connection, worker: str) -> list[Job]:
    """Give up our running jobs at once (clean shutdown): another worker may resume them."""
    rows = c.execute(
        f"UPDATE jobs SET lease_until = 0, rev = rev + 1, message = 'waiting for a worker'"
        f" WHERE status = 'running' AND worker = ? RETURNING {COLUMNS}",
        (worker,),
    )
    return [Job(**dict(row)) for row in rows]


def heartbeat(c: sqlite3.Connection, worker: str, host: str, pid: int, concurrency: int) -> None:
    """A worker is alive (its first heartbeat registers it)."""
    now = time.time()
    c.execute(
        "INSERT INTO workers (id, host, pid, concurrency, started_at, seen_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        (worker, host, pid, concurrency, now, now),
    )


def worker_stopped(c: sqlite3.Connection, worker: str, keep: float = 3600.0) -> None:
    """A worker stopped cleanly; the workers not seen for `keep` seconds are forgotten."""
    now = time.time()
    c.execute("UPDATE workers SET stopped_at = ?, seen_at = ? WHERE id = ?", (now, now, worker))
    c.execute("DELETE FROM workers WHERE seen_at < ?", (now - keep,))


def workers(c: sqlite3.Connection) -> list[Worker]:
    """Every worker seen in the last hour, newest first, with the jobs it holds."""
    rows = c.execute(
        "SELECT w.id, w.host, w.pid, w.concurrency, w.started_at, w.seen_at, w.stopped_at,"
        " count(j.id) FILTER (WHERE j.lease_until >= ?) AS jobs,"
        " count(j.id) FILTER (WHERE j.lease_until < ?) AS expired"
        " FROM workers w LEFT JOIN jobs j ON j.worker = w.id AND j.status = 'running'"
        " WHERE w.seen_at > ? GROUP BY w.id ORDER BY w.started_at DESC",
        (time.time(), time.time(), time.time() - 3600),
    )
    return [Worker(**dict(row)) for row in rows]


def report_process(c: sqlite3.Connection, process: str, connections: int) -> None:
    c.execute(
        "INSERT INTO processes (id, connections, seen_at) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET connections = excluded.connections,"
        " seen_at = excluded.seen_at",
        (process, connections, time.time()),
    )


def live_connections(c: sqlite3.Connection, fresh: float) -> dict[str, int]:
    """Live connections per process, of the processes seen in the last `fresh` seconds."""
    rows = c.execute(
        "SELECT id, connections FROM processes WHERE seen_at > ? ORDER BY id",
        (time.time() - fresh,),
    )
    return {process: connections for process, connections in rows}


def forget_process(c: sqlite3.Connection, process: str) -> None:
    c.execute("DELETE FROM processes WHERE id = ?", (process,))


# -- the runner -------------------------------------------------------------------------------


class Database:
    """Runs queries in worker threads, one short-lived connection each."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def setup(self) -> None:
        """Create the file, its folder and the schema (idempotent)."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as c:
            c.execute("PRAGMA journal_mode = WAL")
            c.executescript(SCHEMA)
            create_outbox_table(c)  # the events, written in the transactions of the changes

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        c.row_factory = sqlite3.Row
        c.execute("PRAGMA synchronous = NORMAL")
        return c

    def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run `fn` in one transaction, here and now (blocking)."""
        c = self._connect()
        try:
            c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(c)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return result
        finally:
            c.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a write transaction in a worker thread; committed when this returns."""
        return await anyio.to_thread.run_sync(self.run, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: self.run(fn, write=False))
