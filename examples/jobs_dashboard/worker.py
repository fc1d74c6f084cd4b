"""The background worker: claims queued jobs and runs them item by item, with real progress.

It runs as a task of the app's lifespan. Several processes may each run one: a job is claimed
in the database (with a lease renewed at every item), so it runs once; a job whose process
died is taken over when its lease runs out, and one whose process stopped cleanly at once.
Every change is published after its transaction commits.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket

import anyio

from liveupdates import Hub

from . import db, live
from .db import Database, Job
from .settings import Settings

logger = logging.getLogger("jobs_dashboard")

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
        self, database: Database, hub: Hub, settings: Settings, rng: random.Random | None = None
    ) -> None:
        self.db = database
        self.hub = hub
        self.settings = settings
        self.rng = rng or random.Random()
        self.id = process_id()
        self._wake = anyio.Event()

    def wake(self) -> None:
        """A job was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Run jobs, `concurrency` at a time, until cancelled; then hand ours over."""
        slots = anyio.Semaphore(self.settings.concurrency)
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    await slots.acquire()
                    claimed = await self._claim()
                    if claimed is None:
                        slots.release()
                        await self._idle()
                    else:
                        tg.start_soon(self._run_job, *claimed, slots)
        finally:
            with anyio.CancelScope(shield=True):
                await self.db.write(lambda c: db.release(c, self.id))

    async def _idle(self) -> None:
        with anyio.move_on_after(self.settings.poll_seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _claim(self) -> tuple[Job, int | None] | None:
        try:
            async with self.hub.transaction() as tx:
                lease = self.settings.lease_seconds
                claimed = await self.db.write(lambda c: db.claim(c, self.id, lease))
                if claimed is not None:
                    live.jobs_changed(tx, [claimed[0]])
                return claimed
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
        async with self.hub.transaction() as tx:
            advanced = await self.db.write(lambda c: db.advance(c, job, item, message, lease))
            if advanced is not None:
                live.job_progressed(tx, advanced)
        return advanced

    async def _finish(self, job: Job, error: str | None) -> None:
        async with self.hub.transaction() as tx:
            finished = await self.db.write(lambda c: db.finish(c, job, error))
            if finished is not None:
                live.jobs_changed(tx, [finished])
