"""What the dashboard publishes, and to whom. Every function takes the connection of the open
database transaction and writes its events into the outbox table (`write_event`), so they are
committed with the change they describe, or not at all; a relay in the web process publishes
them after the commit. Web and worker processes alike publish this way: a process that dies
right after its commit loses no event, and the worker never talks to the hub.

Query keys (TanStack Query's, matched by prefix):

- ``["jobs"]``: the job list; ``["jobs", id]`` one job; ``["jobs", id, "history"]`` its
  progress history; ``["jobs", id, "progress"]`` its latest progress, written by `Set` events.
- ``["stats"]``: the stats cards.
- ``["workers"]``: the admins' table of worker processes.

A job's events go to its owner's personal stream (all their tabs and devices) and to the
``admin`` topic, which only admins may join.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import msgspec

from liveupdates import Event, Invalidate, Set, Target, Topic, User
from liveupdates.durable import write_event

from .auth import ADMIN_TOPIC
from .db import Job

ADMINS = Topic(ADMIN_TOPIC)


class Progress(msgspec.Struct, frozen=True):
    """The payload of ``Set(["jobs", id, "progress"], ...)``. `rev` orders it against the list."""

    done: int
    total: int
    message: str
    rev: int


class JobFinished(Event, tag="job.finished"):
    """A job completed or failed: the owner's tabs show a toast. The outbox delivers at least
    once (a relay that dies mid-batch leaves rows another publishes again): the page shows one
    toast per job and `attempt`, whatever the repeats."""

    id: int
    name: str
    status: str
    error: str | None
    attempt: int


def audience(owner: str) -> list[Target]:
    return [User(owner), ADMINS]


def jobs_changed(c: sqlite3.Connection, jobs: Iterable[Job]) -> None:
    """Jobs were created, started, finished, cancelled, retried or handed over."""
    jobs = list(jobs)
    for owner in dict.fromkeys(job.owner for job in jobs):
        write_event(c, Invalidate([["jobs"], ["stats"]]), to=audience(owner))
    for job in jobs:
        if job.status in ("completed", "failed"):
            event = JobFinished(job.id, job.name, job.status, job.error, job.attempt)
            write_event(c, event, to=User(job.owner))


def job_progressed(c: sqlite3.Connection, job: Job) -> None:
    """One more item of a running job: the new progress, its history, the items count."""
    to = audience(job.owner)
    progress = Progress(job.done, job.total, job.message, job.rev)
    write_event(c, Set(["jobs", job.id, "progress"], progress), to=to)
    write_event(c, Invalidate([["jobs", job.id, "history"], ["stats"]]), to=to)


def workers_changed(c: sqlite3.Connection) -> None:
    """A worker started or stopped: the admins' worker health card refetches."""
    write_event(c, Invalidate(["workers"]), to=ADMINS)
