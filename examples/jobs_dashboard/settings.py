"""The dashboard's settings, read from the environment (the CLI in `__main__` sets them too)."""

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
    backplane: str = "memory://"  # redis://host:6379/0 to run several processes
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_seconds: float = 8 * 3600
    worker: bool = True  # run jobs in this process (several processes may: jobs are claimed)
    concurrency: int = 3  # jobs run at once by this process's worker
    step_seconds: float = 0.25  # time per item: the demo's speed
    failure_rate: float = 0.0  # chance that an item fails (random failures, for the demo)
    lease_seconds: float = 10.0  # a running job whose process died is taken over after this
    poll_seconds: float = 1.0  # how often an idle worker looks for jobs queued by another process
    progress_window: float = 0.25  # throttle: progress of one job at most ~twice per window
    finished_ttl: float = 300.0  # completed jobs leave the active list after this many seconds
    polling_after: float = 5.0  # live updates down (no WebSocket, no SSE) this long: poll
    polling_fallback: float = 10.0  # ...this often, until they are back

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        default = cls()
        secret = env.get("JOBS_SECRET")
        return cls(
            db_path=env.get("JOBS_DB", default.db_path),
            backplane=env.get("LIVEUPDATES_BACKPLANE", default.backplane),
            secret=secret.encode() if secret else default.secret,
            session_seconds=float(env.get("JOBS_SESSION_SECONDS", default.session_seconds)),
            worker=env.get("JOBS_WORKER", "1") not in ("0", "false", "no", ""),
            concurrency=int(env.get("JOBS_CONCURRENCY", default.concurrency)),
            step_seconds=float(env.get("JOBS_STEP_SECONDS", default.step_seconds)),
            failure_rate=float(env.get("JOBS_FAILURE_RATE", default.failure_rate)),
            lease_seconds=float(env.get("JOBS_LEASE_SECONDS", default.lease_seconds)),
            poll_seconds=float(env.get("JOBS_POLL_SECONDS", default.poll_seconds)),
            progress_window=float(env.get("JOBS_PROGRESS_WINDOW", default.progress_window)),
            finished_ttl=float(env.get("JOBS_FINISHED_TTL", default.finished_ttl)),
            polling_after=float(env.get("JOBS_POLLING_AFTER", default.polling_after)),
            polling_fallback=float(env.get("JOBS_POLLING_FALLBACK", default.polling_fallback)),
        )
