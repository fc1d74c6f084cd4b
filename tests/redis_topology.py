"""Redis topologies of the test suite's own: a master with a replica and three sentinels, and a
Redis Cluster of three masters with a replica each.

Built on tests/redis_server.py (free ports, temporary directories, no persistence, never the
machine's own Redis). Timings are short so that a failover takes about a second or two::

    with SentinelTopology(tmp_path) as topology:
        url = topology.backplane_url(prefix="t", timeout=0.5)   # redis+sentinel://...
        topology.master.kill9()
        topology.wait_for_failover()                           # the replica is promoted

    with ClusterTopology(tmp_path) as cluster:                 # redis-cli --cluster create
        url = cluster.backplane_url(prefix="t")                # redis+cluster://...
        master = cluster.master_of("{t:topic:jobs}:meta")
        cluster.kill9(master)
        cluster.wait_for_failover(master)                      # its replica serves its slots
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode

import redis
from redis_server import READY_TIMEOUT, REDIS_SERVER, RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

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
        while self.replica.port == self.master.port:  # (free, but not started yet)
            self.replica.port = free_port()
        self.sentinels: list[SentinelProcess] = []
        for i in range(3):
            sentinel = SentinelProcess(root / f"sentinel{i}", self.master.port)
            taken = {self.master.port, self.replica.port, *(s.port for s in self.sentinels)}
            while sentinel.port in taken:
                sentinel.port = free_port()
            self.sentinels.append(sentinel)

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
        _until(self._ready, "the topology did not become ready", self.logs)

    def wait_for_failover(self) -> int:
        """Wait until the sentinels name another master; its port."""
        old = self.master.port
        _until(lambda: self.master_port() != old, "no failover", self.logs)
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


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _until(condition: Callable[[], bool], message: str, logs: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + max(timeout, READY_TIMEOUT)
    while time.monotonic() < deadline:  # external processes: a bounded wait
        try:
            if condition():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{message}:\n{logs}")


def _cluster_port(exclude: set[int]) -> int:
    """A free port whose cluster bus port (10,000 higher) is free too, as Redis requires, and
    that is neither in `exclude` nor 10,000 away from one (nodes chosen but not started yet)."""
    taken = exclude | {p + 10000 for p in exclude} | {p - 10000 for p in exclude}
    for _ in range(1000):
        port = free_port()
        if port > 55535 or port in taken or port + 10000 in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


CLUSTER_NODE_TIMEOUT_MS = 1000


class ClusterTopology:
    """A Redis Cluster of `masters` masters with one replica each, made by
    ``redis-cli --cluster create``, each node in a directory of `root`."""

    def __init__(self, root: Path, masters: int = 3, replicas: int = 1) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            directory = _mkdir(root / f"node{i}")
            node = RedisServer(
                directory,
                args=["--cluster-enabled", "yes",
                      "--cluster-config-file", str(directory / "nodes.conf"),
                      "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                      "--repl-diskless-sync-delay", "0"],
            )  # fmt: skip
            node.port = _cluster_port(exclude={n.port for n in self.nodes})
            self.nodes.append(node)
        self.replicas = replicas
        self._killed_slots: dict[int, int] = {}  # port of a killed master -> a slot it served

    def backplane_url(self, **options: object) -> str:
        """``redis+cluster://`` with every node as a startup node, and backplane `options`."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = f"?{urlencode(options)}" if options else ""
        return f"redis+cluster://{hosts}/{query}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _until(self._ready, "the cluster did not become ready", self.logs)

    def _slots(self) -> dict[int, list[tuple[int, int]]]:
        """port -> slot ranges of each master that is not failed, per `CLUSTER NODES`."""
        running = next(node for node in self.nodes if node.running)
        table = running.command("CLUSTER", "NODES")
        lines = table.decode() if isinstance(table, bytes) else str(table)
        owners: dict[int, list[tuple[int, int]]] = {}
        for line in lines.splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "master" not in flags or "fail" in flags or "fail?" in flags:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                low, _, high = part.partition("-")
                ranges.append((int(low), int(high or low)))
            if ranges:
                owners[port] = ranges
        return owners

    def masters(self) -> list[RedisServer]:
        """The masters that serve slots now."""
        owners = self._slots()
        return [node for node in self.nodes if node.port in owners]

    def kill9(self, node: RedisServer) -> None:
        """``kill -9`` a node (remembering a slot it served, for `wait_for_failover`)."""
        self._killed_slots[node.port] = self._slots()[node.port][0][0]
        node.kill9()

    def master_of(self, key: str) -> RedisServer:
        """The master that serves `key`'s slot now."""
        running = next(node for node in self.nodes if node.running)
        return self.master_of_slot(int(running.command("CLUSTER", "KEYSLOT", key)))

    def master_of_slot(self, slot: int) -> RedisServer:
        """The master that serves `slot` now."""
        for port, ranges in self._slots().items():
            if any(low <= slot <= high for low, high in ranges):
                return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no master serves slot {slot}")

    def node_id(self, node: RedisServer) -> str:
        return _bytes(node.command("CLUSTER", "MYID")).decode()

    def move_slot(self, slot: int, target: RedisServer) -> None:
        """Reshard: move `slot` and its keys to the master `target` (as ``redis-cli --cluster
        reshard`` does: IMPORTING, MIGRATING, MIGRATE, then SETSLOT NODE everywhere)."""
        source = self.master_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := source.command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in (target, source, *self.masters()):
            node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def wait_for_failover(self, killed: RedisServer) -> RedisServer:
        """Wait until a replica of `killed` serves its slots and the cluster is ok; the new
        master."""
        port = killed.port
        killed_slot = self._killed_slots[port]

        def promoted() -> bool:
            owners = self._slots()
            if port in owners or not any(
                low <= killed_slot <= high for ranges in owners.values() for low, high in ranges
            ):
                return False
            return all(
                b"cluster_state:ok" in _bytes(node.command("CLUSTER", "INFO"))
                for node in self.nodes
                if node.running
            )

        _until(promoted, "no failover", self.logs, timeout=30)
        return self.master_of_slot(killed_slot)

    def _ready(self) -> bool:
        for node in self.nodes:
            if b"cluster_state:ok" not in _bytes(node.command("CLUSTER", "INFO")):
                return False
        roles = [node.command("INFO", "replication") for node in self.nodes]
        linked = [r for r in roles if r.get("role") == "slave"]
        return len(linked) == len(self.nodes) // (1 + self.replicas) * self.replicas and all(
            r.get("master_link_status") == "up" for r in linked
        )

    @property
    def logs(self) -> str:
        return "\n".join(f"node :{node.port}:\n{node.log[-1500:]}" for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ClusterTopology:
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
