"""The worker: a process of its own that claims queued jobs and runs them item by item.

    python -m examples.jobs_dashboard.worker       (scripts/demo.sh and run_two.sh start it)

It never talks to the hub. Each step is one SQLite transaction that writes the job's progress
and the events that describe it (`live`, through the outbox); the web processes' relays
publish them once committed. So a worker killed at any moment loses no event: what it
committed is published, what it did not commit never happened.

Jobs are claimed with a lease, renewed at every item: several workers may run, a job runs on
one of them, and the job of a worker that died is resumed by another (or the next) worker
where it stopped once its lease runs out. A worker stopped cleanly (SIGTERM, Ctrl-C) hands its
jobs over at once. Every `heartbeat_seconds` it writes that it is alive, for the admin page.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import secrets
import signal
import socket
import sqlite3

import anyio

from . import db, live
from .db import Database, Job
from .settings import Settings

logger = logging.getLogger("jobs_dashboard.worker")

ERRORS = (
    "upstream timed out after 30 s",
    "disk quota exceeded",
    "checksum mismatch in the downloaded file",
    "connection reset by peer",
)


def process_id() -> str:
    """A name for this process, unique among those sharing the database."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    def __init__(
        self, database: Database, settings: Settings, rng: random.Random | None = None
    ) -> None:
        self.db = database
        self.settings = settings
        self.rng = rng or random.Random()
        self.id = process_id()

    async def run(self) -> None:
        """Run jobs, `concurrency` at a time, until cancelled; then hand ours over."""
        slots = anyio.Semaphore(self.settings.concurrency)
        await self._beat(started=True)
        logger.info("worker %s started (%d at a time)", self.id, self.settings.concurrency)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat)
                while True:
                    await slots.acquire()
                    claimed = await self._claim()
                    if claimed is None:
                        slots.release()
                        await anyio.sleep(self.settings.poll_seconds)
                    else:
                        tg.start_soon(self._run_job, *claimed, slots)
        finally:
            with anyio.CancelScope(shield=True):
                await self.db.write(self._stopped)
                logger.info("worker %s stopped, its jobs handed over", self.id)

    def _stopped(self, c: sqlite3.Connection) -> None:
        live.jobs_changed(c, db.release(c, self.id))
        db.worker_stopped(c, self.id)
        live.workers_changed(c)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._beat()
            except Exception:  # the database is busy or gone: the admin page shows it late
                logger.exception("cannot write the heartbeat")

    async def _beat(self, *, started: bool = False) -> None:
        def beat(c: sqlite3.Connection) -> None:
            host, pid = socket.gethostname(), os.getpid()
            db.heartbeat(c, self.id, host, pid, self.settings.concurrency)
            if started:
                live.workers_changed(c)

        await self.db.write(beat)

    async def _claim(self) -> tuple[Job, int | None] | None:
        lease = self.settings.lease_seconds

        def claim(c: sqlite3.Connection) -> tuple[Job, int | None] | None:
            claimed = db.claim(c, self.id, lease)
            if claimed is not None:
                live.jobs_changed(c, [claimed[0]])
            return claimed

        try:
            return await self.db.write(claim)
        except Exception:
            logger.exception("cannot claim a job")
            return None

    async def _run_job(self, job: Job, fail_at: int | None, slots: anyio.Semaphore) -> None:
        try:
            await self._process(job, fail_at)
        except Exception:  # its lease runs out, and a worker (maybe this one) resumes it
            logger.exception("job %d failed in the worker", job.id)
        finally:
            slots.release()

    async def _process(self, job: Job, fail_at: int | None) -> None:
        for item in range(job.done + 1, job.total + 1):
            await anyio.sleep(self.settings.step_seconds)
            error = self._failure(item, fail_at)
            if error is not None:
                await self._finish(job, error)
                return
            advanced = await self._advance(job, item)
            if advanced is None:
                return  # cancelled, retried or taken over meanwhile
            job = advanced
        await self._finish(job, None)

    def _failure(self, item: int, fail_at: int | None) -> str | None:
        if item == fail_at:
            return f"item {item}: failed on purpose"
        if self.rng.random() < self.settings.failure_rate:
            return f"item {item}: {self.rng.choice(ERRORS)}"
        return None

    async def _advance(self, job: Job, item: int) -> Job | None:
        message = f"processing item {item} of {job.total}"
        lease = self.settings.lease_seconds

        def advance(c: sqlite3.Connection) -> Job | None:
            advanced = db.advance(c, job, item, message, lease)
            if advanced is not None:
                live.job_progressed(c, advanced)
            return advanced

        return await self.db.write(advance)

    async def _finish(self, job: Job, error: str | None) -> None:
        def finish(c: sqlite3.Connection) -> None:
            finished = db.finish(c, job, error)
            if finished is not None:
                live.jobs_changed(c, [finished])

        await self.db.write(finish)


async def serve(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT (then hand its jobs over and return)."""
    database = Database(settings.db_path)
    database.setup()
    worker = Worker(database, settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info("worker %s: %s, stopping", worker.id, signum.name)
                break
        tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.jobs_dashboard.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--db", dest="db_path", help="SQLite file (the web processes' one)")
    parser.add_argument("--concurrency", type=int, help="jobs run at once")
    parser.add_argument("--step-seconds", type=float, help="time per item (the demo's speed)")
    parser.add_argument("--failure-rate", type=float, help="chance that an item fails (0: never)")
    overrides = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    settings = dataclasses.replace(Settings.from_env(), **overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    anyio.run(serve, settings)


if __name__ == "__main__":
    main()
