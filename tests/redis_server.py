"""A redis-server of the test suite's own: free port, temporary directory, faults on demand.

`RedisServer` starts ``redis-server`` on a free port of 127.0.0.1, in a directory of its own,
without persistence, and never touches a Redis the machine already runs (6379 or any other).
Tests kill it (``kill -9``), restart it on the same port, or pause it (SIGSTOP/SIGCONT)::

    with RedisServer() as server:            # a temporary directory, removed on exit
        url = server.backplane_url(prefix="t1", timeout=0.5)
        server.kill9()
        server.start()                       # same port, empty (no persistence)

The fixtures built on it (`redis_server`, `own_redis_server`, `redis_prefix`) are in
tests/conftest.py. Tests that use them are marked ``@pytest.mark.redis``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer:
    """One redis-server process of the test suite, on its own port and directory.

    `directory` holds its log (and ``dump.rdb`` after a ``SAVE``); without one, a temporary
    directory is made and removed by `stop`. The port stays the same across restarts.
    """

    def __init__(self, directory: Path | None = None, args: Sequence[str] = ()) -> None:
        self.args = tuple(args)  # more redis-server options (TLS, ACL, ...)
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="lu-redis-")
            directory = Path(self._tempdir.name)
        self.directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def backplane_url(self, **options: object) -> str:
        """`url` with backplane options: ``backplane_url(prefix="t", timeout=0.5)``."""
        return f"{self.url}?{urlencode(options)}" if options else self.url

    @property
    def running(self) -> bool:
        """Whether the process exists (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING.

        It loads ``dump.rdb`` from its directory if a test wrote one with ``SAVE``.
        """
        if self._process is not None:
            raise RuntimeError("redis-server is already running")
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.directory / "redis.log"), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:  # an external process: a bounded wait
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"redis-server exited:\n{self.log[-2000:]}")
            try:
                self.command("PING")
            except redis.ConnectionError:
                time.sleep(0.01)
            else:
                return
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {READY_TIMEOUT} s")

    def kill9(self) -> None:
        """``kill -9`` the server: its data (without persistence) is gone."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()  # SIGKILL works on a paused process too
            process.wait()

    def restart(self) -> None:
        """Kill the server if it runs, and start it again on the same port."""
        self.kill9()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (also a paused one) and remove a temporary directory; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def command(self, *args: Any) -> Any:
        """Run one command with a short-lived synchronous client."""
        with redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2) as client:
            return client.execute_command(*args)

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signum)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
