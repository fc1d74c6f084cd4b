"""ASGI apps under uvicorn in real subprocesses, for tests that need several server processes.

`AppProcess` runs ``python -m uvicorn <module:app> --port <free port>`` with the environment you
give it (a backplane URL, say), waits until an HTTP route answers, and stops or kills it. Its
output goes to a log file, which `logs()` returns and which the `app_processes` fixture (in
tests/conftest.py) appends to the report of a failed test::

    first, second = app_processes.start(
        "apps.redis_app:app", env={"LIVEUPDATES_BACKPLANE": url}, count=2
    )
    async with ws_client(first) as client:   # tests/support.py: anything with `http_url`
        ...
    httpx.post(second.http_url + "/publish", params=...)

The module is imported from ``PYTHONPATH``: tests/ and the repository root are on it, so test
apps live in tests/apps/ (``apps.redis_app:app``) and examples are importable as
``examples.<name>.app:app``. Readiness is polled (a bounded loop: the server is another
process); processes that outlive a test are stopped by the fixture, and `stop_all` is the last
resort at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
_BIND_ATTEMPTS = 3  # a free port may be taken between choosing and binding it
_running: dict[int, AppProcess] = {}  # id -> process, for failure reports and cleanup


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """One uvicorn process serving `app` (``"module:attribute"``) on 127.0.0.1.

    `env` is added to this process's environment (``PYTHONPATH`` gets tests/ and the repository
    root in front). `ready_path` is a GET route that answers 2xx once the app (and its
    lifespan) is up. `args` are extra uvicorn options (one worker: for several, start several
    processes, which `kill` can then reach). Logs go to `log_path`. `uvicorn` is the command
    that starts uvicorn (this interpreter's by default; another virtualenv's ``bin/uvicorn``,
    say) and `cwd` its working directory (the repository root by default).
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/stats",
        name: str | None = None,
        args: Iterable[str] = (),
        log_dir: Path | None = None,
        uvicorn: Sequence[str] = (sys.executable, "-m", "uvicorn"),
        cwd: Path = ROOT,
    ) -> None:
        self.app = app
        self.uvicorn, self.cwd = list(uvicorn), cwd
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.name = name or app
        self.args = list(args)
        self.port = 0
        self._same_port = False
        self._log_start = 0
        self._log_dir = log_dir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0, *, same_port: bool = False) -> AppProcess:
        """`launch`, then `wait_ready`. After `stop` or `kill`, ``same_port=True`` starts it
        again at the same address (clients reconnect to the URL they had)."""
        self.launch(same_port=same_port)
        self.wait_ready(timeout)
        return self

    def launch(self, *, same_port: bool = False) -> None:
        """Start the process on a new free port (or the previous one), without waiting."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._same_port = same_port and self.port != 0
        if self.log_path is None:
            if self._log_dir is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix="lu-app-")
                self._log_dir = Path(self._tempdir.name)
            self.log_path = self._log_dir / f"app-{id(self):x}.log"
        if not self._same_port:
            self.port = _free_port()
        path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), **self.env}
        command = [
            *self.uvicorn, self.app, "--host", "127.0.0.1",
            "--port", str(self.port), "--log-level", "info", "--no-access-log", *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self._process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        _running[id(self)] = self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll `ready_path` until it answers 2xx (relaunching on a port clash); bounded."""
        for attempt in range(_BIND_ATTEMPTS):
            deadline = time.monotonic() + timeout
            with httpx.Client(timeout=1.0) as http:
                while time.monotonic() < deadline:
                    process = self._process
                    if process is None or process.poll() is not None:
                        break
                    try:
                        if http.get(self.http_url + self.ready_path).is_success:
                            return
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)  # another process: nothing to wait on but time
                else:
                    self.kill()
                    raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.logs()}")
            clash = "address already in use" in self.logs(since_launch=True).lower()
            if not clash or self._same_port or attempt + 1 == _BIND_ATTEMPTS:
                break
            self.launch()  # the port was taken meanwhile: try another
        self._process = None
        _running.pop(id(self), None)
        raise RuntimeError(f"{self.name} exited during startup:\n{self.logs()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (uvicorn shuts down gracefully, running the lifespan), then SIGKILL after
        `timeout` s. Returns the exit status; idempotent."""
        process, self._process = self._process, None
        _running.pop(id(self), None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()

    def kill(self) -> None:
        """``kill -9``: no shutdown at all (clients see their connections reset)."""
        process, self._process = self._process, None
        _running.pop(id(self), None)
        if process is not None:
            process.kill()
            process.wait()

    def logs(self, tail: int = 20_000, *, since_launch: bool = False) -> str:
        """The end of the process's output (uvicorn's and the app's logs), of every run or of
        the last one."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start if since_launch else 0)
            return log.read().decode(errors="replace")[-tail:]

    def cleanup(self) -> None:
        """Stop the process and remove its temporary log directory."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<AppProcess {self.name} pid={self.pid} port={self.port}>"


class AppProcesses:
    """Processes started for one test (or module); `close` stops them all.

    ``start(app, env=..., count=2)`` launches `count` processes at once, then waits until each
    is ready, so that their startups overlap.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.processes: list[AppProcess] = []

    def start(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        count: int = 1,
        ready_path: str = "/stats",
        args: Iterable[str] = (),
        timeout: float = 20.0,
    ) -> list[AppProcess]:
        started = [
            AppProcess(
                app, env=env, ready_path=ready_path, args=args, log_dir=self.log_dir,
                name=f"{app} #{len(self.processes) + n + 1}",
            )
            for n in range(count)
        ]  # fmt: skip
        self.processes += started
        for process in started:
            process.launch()
        for process in started:
            process.wait_ready(timeout)
        return started

    def close(self) -> None:
        for process in self.processes:
            process.cleanup()


def running() -> list[AppProcess]:
    """Every process started and not yet stopped."""
    return list(_running.values())


def stop_all() -> None:
    """Stop every process still running (the end of a session)."""
    for process in running():
        process.cleanup()
