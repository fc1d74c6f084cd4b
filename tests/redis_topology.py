"""Redis topologies of the test suite's own: a master with a replica and three sentinels.

Built on tests/redis_server.py (free ports, temporary directories, no persistence, never the
machine's own Redis). Timings are short so that a failover takes about a second or two::

    with SentinelTopology(tmp_path) as topology:
        url = topology.backplane_url(prefix="t", timeout=0.5)   # redis+sentinel://...
        topology.master.kill9()
        topology.wait_for_failover()                           # the replica is promoted
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode

import redis
from redis_server import READY_TIMEOUT, REDIS_SERVER, RedisServer, free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 3000


class SentinelProcess:
    """``redis-server sentinel.conf --sentinel`` on a free port, watching `SERVICE`."""

    def __init__(self, directory: Path, master_port: int) -> None:
        self.directory = directory
        self.port = free_port()
        self.myid = secrets.token_hex(20)
        self.master_port = master_port
        directory.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    def configure(self, others: list[SentinelProcess], replica_port: int) -> None:
        """Write the configuration, introducing the other sentinels and the replica (so that
        they need not discover one another through hello messages, which takes seconds)."""
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.directory}",
            f"logfile {self.directory / 'sentinel.log'}",
            f"sentinel myid {self.myid}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
            f"sentinel known-replica {SERVICE} 127.0.0.1 {replica_port}",
        ]  # fmt: skip
        lines += [
            f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other.port} {other.myid}"
            for other in others
            if other is not self
        ]
        (self.directory / "sentinel.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._process = subprocess.Popen(
            [REDIS_SERVER, str(self.directory / "sentinel.conf"), "--sentinel"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def command(self, *args: object) -> object:
        with redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2) as client:
            return client.execute_command(*args)

    def master(self) -> dict[str, str]:
        """``SENTINEL MASTER`` as a dict of str."""
        reply = self.command("SENTINEL", "MASTER", SERVICE)
        if isinstance(reply, dict):
            return {_text(k): _text(v) for k, v in reply.items()}
        assert isinstance(reply, list)
        return {_text(k): _text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    @property
    def log(self) -> str:
        path = self.directory / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelTopology:
    """A master, one replica and three sentinels (quorum 2), each in a directory of `root`."""

    def __init__(self, root: Path) -> None:
        fast = ["--repl-diskless-sync-delay", "0"]  # (the default waits 5 s for more replicas)
        self.master = RedisServer(_mkdir(root / "master"), args=fast)
        self.replica = RedisServer(
            _mkdir(root / "replica"),
            args=[*fast, "--replicaof", "127.0.0.1", str(self.master.port)],
        )
        self.sentinels = [
            SentinelProcess(root / f"sentinel{i}", self.master.port) for i in range(3)
        ]

    def backplane_url(self, **options: object) -> str:
        """``redis+sentinel://`` with the three sentinels and backplane `options`."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        query = f"?{urlencode(options)}" if options else ""
        return f"redis+sentinel://{hosts}/{SERVICE}/0{query}"

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers sees it."""
        for sentinel in self.sentinels:
            try:
                return int(sentinel.master()["port"])
            except redis.ConnectionError:
                continue
        raise RuntimeError("no sentinel answers")

    def start(self) -> None:
        """Start everything and wait until the replica is in sync and the sentinels know one
        another (a failover needs a majority of them)."""
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.configure(self.sentinels, self.replica.port)
            sentinel.start()
        self._until(self._ready, "the topology did not become ready")

    def wait_for_failover(self) -> int:
        """Wait until the sentinels name another master; its port."""
        old = self.master.port
        self._until(lambda: self.master_port() != old, "no failover", timeout=20)
        return self.master_port()

    def _ready(self) -> bool:
        info = self.replica.command("INFO", "replication")
        if info.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            state = sentinel.master()
            if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                return False
        return True

    def _until(self, condition: object, message: str, timeout: float = 20) -> None:
        assert callable(condition)
        deadline = time.monotonic() + max(timeout, READY_TIMEOUT)
        while time.monotonic() < deadline:  # external processes: a bounded wait
            try:
                if condition():
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{message}:\n" + "\n".join(s.log[-1500:] for s in self.sentinels))

    @property
    def logs(self) -> str:
        parts = [f"master:\n{self.master.log[-2000:]}", f"replica:\n{self.replica.log[-2000:]}"]
        parts += [f"sentinel :{s.port}:\n{s.log[-2000:]}" for s in self.sentinels]
        return "\n".join(parts)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.master.stop()

    def __enter__(self) -> SentinelTopology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
