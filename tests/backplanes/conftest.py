"""Fixtures of the backplane tests: the suite's own redis-server, and backplane factories.

`RedisServer` starts ``redis-server`` on a free port of 127.0.0.1 in a temporary directory,
without persistence, and never touches a Redis the machine already runs. Tests kill it
(``kill -9``), restart it on the same port, or pause it (SIGSTOP/SIGCONT). This module is
self-contained, so that it can move to tests/conftest.py as is.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from liveupdates.backplanes.base import Backplane
from liveupdates.backplanes.memory import MemoryBackplane
from liveupdates.testing import BackplaneFactory

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
_READY_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process of the test suite, on its own port and directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING.

        It loads ``dump.rdb`` from its directory if a test wrote one with ``SAVE``.
        """
        if self._process is not None:
            raise RuntimeError("redis-server is already running")
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"redis-server exited:\n{log.read_text()[-2000:]}")
            try:
                self.command("PING")
            except redis.ConnectionError:
                time.sleep(0.01)  # waiting for an external process
            else:
                return
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {_READY_TIMEOUT} s")

    def kill(self) -> None:
        """``kill -9`` the server: its data (without persistence) is gone."""
        self._signal(signal.SIGKILL)
        if self._process is not None:
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        """Kill the server if it runs, and start it again on the same port."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (also a paused one); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def command(self, *args: Any) -> Any:
        """Run one command with a short-lived synchronous client."""
        with redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2) as client:
            return client.execute_command(*args)

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signum)


def _redis_server(directory: Path) -> Iterator[RedisServer]:
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} not found")
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session. Do not kill or pause it: see `own_redis_server`."""
    yield from _redis_server(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test only, which it may kill, restart or pause."""
    yield from _redis_server(tmp_path)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so that tests sharing `redis_server` do not meet."""
    return "t" + secrets.token_hex(4)


BACKPLANE_CASES = (
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("redis", "asyncio"), id="redis-asyncio", marks=pytest.mark.redis),
)


@pytest.fixture(params=BACKPLANE_CASES)
def backplane_case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backplane, event loop): memory on asyncio and trio, redis on asyncio only.

    A test module using it sets ``anyio_backend`` from it (see test_conformance.py).
    """
    case: tuple[str, str] = request.param
    return case


@pytest.fixture
def backplane_factory(
    backplane_case: tuple[str, str], request: pytest.FixtureRequest
) -> BackplaneFactory:
    """A conformance-kit factory for the backplane of `backplane_case`."""
    if backplane_case[0] == "memory":
        return BackplaneFactory(MemoryBackplane)
    from liveupdates.backplanes.redis import RedisBackplane

    server: RedisServer = request.getfixturevalue("redis_server")
    base = f"{server.url}?prefix={request.getfixturevalue('redis_prefix')}&timeout=2"

    def make(*, history_size: int, history_ttl: float) -> Backplane:
        url = f"{base}&history_size={history_size}&history_ttl={history_ttl}"
        return RedisBackplane.from_url(url)

    return BackplaneFactory(make, shared_store=True)
