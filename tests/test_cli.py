"""The command line, run as a process (``python -m liveupdates``): ``tail`` prints what a hub in
another process sends while ``publish`` publishes through Redis or through the HTTP API; every
error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
from typing import Any

import pytest
from apps.publish_api_app import API_KEY, make_app
from processes import AppProcess
from redis_server import free_port
from support import UvicornThread


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liveupdates", *args], capture_output=True, text=True, timeout=30,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def lines(done: subprocess.CompletedProcess[str]) -> list[Any]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


class Tail:
    """``liveupdates tail`` in a process; `next()` is its next printed message."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "liveupdates", "tail", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def next(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # (the test's timeout bounds it)
        assert line, self.process.stderr.read() if self.process.stderr else ""
        return json.loads(line)

    def until(self, kind: str) -> Any:
        while (message := self.next())["type"] != kind:
            pass
        return message

    def finish(self) -> tuple[int, str]:
        """Wait for it to exit by itself: (status, stderr)."""
        _, stderr = self.process.communicate(timeout=20)
        return self.process.returncode, stderr

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_tail_prints_what_publish_sends_through_the_backplane(
    hub_process: AppProcess, backplane_url: str
) -> None:
    user, topic = "t-" + secrets.token_hex(3), "jobs-" + secrets.token_hex(3)
    with Tail(
        hub_process.ws_url + "/live", "--token", user, "--topic", topic, "--count", "2"
    ) as tail:
        check_tail(tail, user, topic, backplane_url)


def check_tail(tail: Tail, user: str, topic: str, backplane_url: str) -> None:
    assert tail.until("welcome")["user"] == user
    joined = {tail.until("subscribed")["stream"] for _ in range(3)}
    assert joined == {"all", f"user:{user}", f"topic:{topic}"}

    (to_user,) = lines(
        cli("publish", "--backplane", backplane_url, "--to", f"user:{user}",
            "--invalidate", '["jobs", 7]', '["stats"]')
    )  # fmt: skip
    env = {"LIVEUPDATES_BACKPLANE": backplane_url}
    (to_topic,) = lines(
        cli("publish", "--to", f"topic:{topic}", "--event", '{"type": "job.failed", "id": 7}',
            env=env)
    )  # fmt: skip
    first, second = tail.next(), tail.next()
    assert tail.finish() == (0, "")
    assert first == {**to_user, "type": "invalidate", "keys": [["jobs", 7], ["stats"]]}
    assert second == {**to_topic, "type": "job.failed", "id": 7}


def test_publish_through_the_http_api() -> None:
    app, _ = make_app()
    server = UvicornThread(app).start()
    try:
        env = {"LIVEUPDATES_API_KEY": API_KEY}
        user = "h-" + secrets.token_hex(3)
        with Tail(server.http_url + "/live", "--token", user, "--count", "1") as tail:
            for _ in range(2):
                tail.until("subscribed")
            (position,) = lines(
                cli("publish", "--api", server.http_url + "/api", "--to", f"user:{user}",
                    "--set", '["jobs", 7, "progress"]', '{"done": 3}', env=env)
            )  # fmt: skip
            assert tail.next() == {**position, "type": "set", "key": ["jobs", 7, "progress"],
                                   "data": {"done": 3}}  # fmt: skip
            assert tail.finish() == (0, "")

        api = server.http_url + "/api"
        refused = cli("publish", "--api", api, "--api-key", "wrong-key-0123456789",
                      "--to", "all", "--invalidate", '["x"]')  # fmt: skip
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            "liveupdates: error: the API answered 401: a valid API key is needed (Bearer)\n"
        )
        bad = cli("publish", "--api", server.http_url + "/api", "--to", "topic:bad topic",
                  "--invalidate", '["x"]', env=env)  # fmt: skip
        assert bad.returncode == 1
        assert bad.stderr.startswith("liveupdates: error: the API answered 400: invalid topic")
        assert bad.stderr.endswith("(at $.to[0].topic)\n")
    finally:
        server.stop()


ERRORS: list[tuple[list[str], int, str]] = [
    ([], 2, "the following arguments are required"),
    (["publish", "--to", "all", "--invalidate", '["x"]'], 2, "give --backplane or --api"),
    (["publish", "--backplane", "memory://", "--to", "group:x", "--invalidate", '["x"]'], 2,
     "unknown target 'group:x'"),
    (["publish", "--backplane", "memory://", "--to", "all", "--invalidate", "jobs"], 2,
     "a key is not JSON"),
    (["publish", "--backplane", "memory://", "--to", "all", "--event", '{"type": "welcome"}'], 2,
     "event type 'welcome' is reserved"),
    (["publish", "--backplane", "http://x", "--to", "all", "--invalidate", '["x"]'], 2,
     "unknown backplane URL scheme"),
    (["publish", "--backplane", f"redis://127.0.0.1:{free_port()}/0?timeout=0.5", "--to", "all",
      "--invalidate", '["x"]'], 1, "could not publish through redis://127.0.0.1"),
    (["publish", "--api", "http://127.0.0.1:9/", "--to", "all", "--invalidate", '["x"]'], 2,
     "--api needs an API key"),
    (["publish", "--api", f"http://127.0.0.1:{free_port()}", "--api-key", "k", "--to", "all",
      "--invalidate", '["x"]'], 1, "could not reach the API"),
    (["tail", f"ws://127.0.0.1:{free_port()}/live"], 1, "could not connect to ws://127.0.0.1"),
    (["relay", "--backplane", "memory://"], 2, "give --database and --backplane"),
]  # fmt: skip
if importlib.util.find_spec("liveupdates.durable") is None:  # (until the relay is merged)
    ERRORS.append(
        (["relay", "--database", "sqlite:///x", "--backplane", "memory://"], 1,
         "the outbox relay (liveupdates.durable) is not in this installation")
    )  # fmt: skip


@pytest.mark.parametrize(("args", "status", "message"), ERRORS)
def test_errors_are_one_line_and_a_non_zero_exit(
    args: list[str], status: int, message: str
) -> None:
    done = cli(*args)
    assert (done.returncode, done.stdout) == (status, "")
    assert done.stderr.startswith("liveupdates: error: " + message), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.redis
def test_tail_reports_a_refused_connection(hub_process: AppProcess) -> None:
    done = cli("tail", hub_process.ws_url + "/live", "--token", "bad")
    assert (done.returncode, done.stdout) == (1, "")
    assert (
        done.stderr
        == "liveupdates: error: the server closed the connection: 4401 credentials rejected\n"
    )
