"""The publish-only client from a separate process: a WebSocket client of a hub in a uvicorn
process receives what a worker publishes through `SyncProducer`, also after a ``fork``.

The hub runs tests/apps/redis_app.py (`AppProcess`) on the suite's redis-server; the workers are
Python processes of their own (``python -c``), as a Celery or RQ worker would be.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
from processes import AppProcess
from support import Client, ws_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_worker(code: str, url: str) -> list[Any]:
    """Run `code` in a Python process of its own (``URL`` is the backplane URL); the JSON lines
    it prints."""
    script = "import json, os, sys\nURL = sys.argv[1]\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script, url],
        capture_output=True, text=True, timeout=30, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def events_until(client: Client, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        return await client.events(count)


async def test_a_worker_process_publishes_to_a_browser_on_another_process(
    hub_process: AppProcess, backplane_url: str
) -> None:
    user, topic = "w-" + secrets.token_hex(3), "jobs-" + secrets.token_hex(3)
    async with ws_client(hub_process) as client:
        await client.handshake(token=user, topics=[topic])
        printed = await anyio.to_thread.run_sync(
            run_worker,
            f"""
            from liveupdates import Invalidate, Set, SyncProducer, Topic, User
            producer = SyncProducer(URL)
            for event, to in [
                (Invalidate(["jobs", 7]), User({user!r})),
                (Set(["jobs", 7, "progress"], {{"done": 9, "total": 20}}), Topic({topic!r})),
            ]:
                (p,) = producer.publish(event, to=to)
                print(json.dumps([p.stream, p.epoch, p.offset]))
            """,
            backplane_url,
        )
        got = await events_until(client, 2)
    assert sorted(got, key=lambda m: m["stream"]) == sorted(
        [
            {"stream": f"user:{user}", "epoch": printed[0][1], "offset": printed[0][2],
             "type": "invalidate", "keys": [["jobs", 7]]},
            {"stream": f"topic:{topic}", "epoch": printed[1][1], "offset": printed[1][2],
             "type": "set", "key": ["jobs", 7, "progress"], "data": {"done": 9, "total": 20}},
        ],
        key=lambda m: m["stream"],
    )  # fmt: skip
    assert printed[0][:1] == [f"user:{user}"] and printed[1][:1] == [f"topic:{topic}"]


async def test_after_fork_the_child_publishes_on_its_own_connection_and_the_parent_goes_on(
    hub_process: AppProcess, backplane_url: str
) -> None:
    user = "f-" + secrets.token_hex(3)
    async with ws_client(hub_process) as client:
        await client.handshake(token=user)
        printed = await anyio.to_thread.run_sync(
            run_worker,
            f"""
            from liveupdates import Set, SyncProducer, User
            producer = SyncProducer(URL, timeout=5)  # module level, as in a Celery app
            to = User({user!r})

            def publish(name):
                (p,) = producer.publish(Set([name], os.getpid()), to=to)
                return p.offset

            print(json.dumps(["before fork", publish("before fork")]))  # the parent connects
            pid = os.fork()
            if pid == 0:  # a prefork worker: its own thread and connections
                try:
                    print(json.dumps(["child", publish("child")]), flush=True)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            print(json.dumps(["parent", publish("parent")]))
            producer.close()
            """,
            backplane_url,
        )
        got = await events_until(client, 3)
    assert [name for name, _ in printed] == ["before fork", "child", "parent"]
    assert [(m["key"], m["offset"]) for m in got] == [([name], off) for name, off in printed]
    assert [m["offset"] for m in got] == [1, 2, 3]
    assert got[0]["data"] == got[2]["data"] != got[1]["data"]  # another process
