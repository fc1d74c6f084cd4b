"""The dashboard's settings, read from the environment (the CLIs of `__main__` and `worker` set
them too). Web and worker processes read the same ``JOBS_*`` variables."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def _default_db() -> str:
    return str(Path(tempfile.gettempdir()) / "liveupdates-jobs-dashboard" / "jobs.sqlite3")


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `from_env()` reads the ``JOBS_*`` variables."""

    db_path: str = field(default_factory=_default_db)
    backplane: str = "memory://"  # redis://host:6379/0 to run several web processes
    # Signs the session cookies. Empty: the one kept beside the database (`stored_secret`),
    # created on first start, so that a restart signs nobody out and processes agree.
    secret: bytes = field(default=b"", repr=False)
    session_seconds: float = 8 * 3600
    page_size: int = 500  # jobs per page of the job list (the API's most)
    relay_poll: float = 0.05  # how often the web process's relay reads the outbox table
    # How long a relay's claim on outbox rows lasts: the rows a killed web process's relay held
    # wait this long for another relay (and its streams' later rows with them).
    relay_lease: float = 5.0
    # the worker process (python -m examples.jobs_dashboard.worker)
    concurrency: int = 3  # jobs run at once by one worker
    step_seconds: float = 0.25  # time per item: the demo's speed
    failure_rate: float = 0.0  # chance that an item fails: off unless you turn it on
    lease_seconds: float = 10.0  # a running job whose worker died is taken over after this
    poll_seconds: float = 0.5  # how often an idle worker looks for queued jobs
    heartbeat_seconds: float = 2.0  # how often a worker says it is alive (the admin page)
    finished_ttl: float = 300.0  # completed jobs leave the active list after this many seconds
    polling_after: float = 5.0  # live updates down (no WebSocket, no SSE) this long: poll
    polling_fallback: float = 10.0  # ...this often, until they are back

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        default = cls()
        return cls(
            db_path=env.get("JOBS_DB", default.db_path),
            backplane=env.get("LIVEUPDATES_BACKPLANE", default.backplane),
            secret=env.get("JOBS_SECRET", "").encode(),
            session_seconds=float(env.get("JOBS_SESSION_SECONDS", default.session_seconds)),
            page_size=int(env.get("JOBS_PAGE_SIZE", default.page_size)),
            relay_poll=float(env.get("JOBS_RELAY_POLL", default.relay_poll)),
            relay_lease=float(env.get("JOBS_RELAY_LEASE", default.relay_lease)),
            concurrency=int(env.get("JOBS_CONCURRENCY", default.concurrency)),
            step_seconds=float(env.get("JOBS_STEP_SECONDS", default.step_seconds)),
            failure_rate=float(env.get("JOBS_FAILURE_RATE", default.failure_rate)),
            lease_seconds=float(env.get("JOBS_LEASE_SECONDS", default.lease_seconds)),
            poll_seconds=float(env.get("JOBS_POLL_SECONDS", default.poll_seconds)),
            heartbeat_seconds=float(env.get("JOBS_HEARTBEAT_SECONDS", default.heartbeat_seconds)),
            finished_ttl=float(env.get("JOBS_FINISHED_TTL", default.finished_ttl)),
            polling_after=float(env.get("JOBS_POLLING_AFTER", default.polling_after)),
            polling_fallback=float(env.get("JOBS_POLLING_FALLBACK", default.polling_fallback)),
        )

    def session_secret(self) -> bytes:
        """`secret`, or the one kept beside the database."""
        return self.secret or stored_secret(Path(self.db_path).parent / "secret")


def stored_secret(path: Path) -> bytes:
    """The secret in `path`, created (random, readable by its owner only) if there is none.

    Kept with the app's data, it outlives restarts (nobody is signed out) and is shared by the
    processes of one database. Two processes starting at once agree: the file appears whole
    (a hard link of a complete temporary file) or not at all, and the loser reads the winner's.
    """
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_hex(32).encode())
    try:
        os.link(temporary, path)  # fails if another process was first
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes().strip()
