"""The HTTP publish API: curl publishes, a WebSocket client receives; keys, bad input (4xx with a
JSON error body, nothing published), the API on its own over Redis.

The hub and the API run in uvicorn (tests/apps/publish_api_app.py: the API is mounted at /api
beside the WebSocket endpoint /live); requests come from curl, a process of its own.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from apps.publish_api_app import API_KEY, make_app
from processes import AppProcess, AppProcesses
from redis_server import RedisServer
from support import Client, UvicornThread, ws_client

from liveupdates import Producer
from liveupdates.asgi import PublishAPI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    app, _ = make_app()
    server = UvicornThread(app).start()
    yield server
    server.stop()


def curl(url: str, body: str | bytes, *headers: str) -> tuple[int, dict[str, str], Any]:
    """POST `body` with curl; (status, lower-cased headers, JSON body)."""
    args = ["curl", "-sS", "-i", "-X", "POST", url, "--data-binary", "@-"]
    for header in headers:
        args += ["-H", header]
    data = body.encode() if isinstance(body, str) else body
    done = subprocess.run(args, input=data, capture_output=True, timeout=20, check=True)
    head, _, payload = done.stdout.decode().partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return (
        int(status_line.split()[1]),
        {k.lower(): v for k, v in fields.items()},
        json.loads(payload),
    )


AUTH = f"Authorization: Bearer {API_KEY}"
JSON = "Content-Type: application/json"


async def post(url: str, body: Any, *headers: str) -> tuple[int, dict[str, str], Any]:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return await anyio.to_thread.run_sync(lambda: curl(url, raw, *headers))


async def next_events(client: Client, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        return await client.events(count)


async def test_curl_publishes_one_event_and_a_batch_and_the_client_receives_them(
    server: UvicornThread,
) -> None:
    user, topic = "u-" + secrets.token_hex(3), "jobs-" + secrets.token_hex(3)
    async with ws_client(server) as client:
        await client.handshake(token=user, topics=[topic])
        one = {"to": {"user": user}, "event": {"type": "invalidate", "keys": [["jobs"]]}}
        status, _, answer = await post(server.http_url + "/api/publish", one, AUTH, JSON)
        assert status == 200, answer
        (position,) = answer["positions"]
        assert position["stream"] == f"user:{user}" and position["offset"] == 1
        (first,) = await next_events(client, 1)
        assert first == {**position, "type": "invalidate", "keys": [["jobs"]]}

        batch: dict[str, Any] = {
            "requests": [
                {"to": [{"topic": topic}, {"user": user}],
                 "event": {"type": "job.failed", "job_id": 7, "error": "disk full"}},
                {"to": {"topic": topic},
                 "event": {"type": "set", "key": ["jobs", 7, "progress"], "data": {"done": 9}}},
            ]
        }  # fmt: skip
        status, _, answer = await post(server.http_url + "/api/publish/batch", batch, AUTH, JSON)
        assert status == 200, answer
        assert [[p["stream"] for p in r["positions"]] for r in answer["results"]] == [
            [f"topic:{topic}", f"user:{user}"],
            [f"topic:{topic}"],
        ]
        received = await next_events(client, 3)
    failed, progress = batch["requests"][0]["event"], batch["requests"][1]["event"]
    (failed_at, failed_at_user), (progress_at,) = (r["positions"] for r in answer["results"])
    assert sorted(received, key=lambda m: (m["stream"], m["offset"])) == sorted(
        [{**failed_at, **failed}, {**failed_at_user, **failed}, {**progress_at, **progress}],
        key=lambda m: (m["stream"], m["offset"]),
    )
    assert (failed_at["offset"], failed_at_user["offset"], progress_at["offset"]) == (1, 2, 2)


GOOD: dict[str, Any] = {
    "to": {"topic": "refused"},
    "event": {"type": "invalidate", "keys": [["x"]]},
}
OK = (AUTH, JSON)
BAD = "invalid_request"


def with_event(**event: Any) -> dict[str, Any]:
    return {"to": {"topic": "refused"}, "event": event}


def to(target: Any) -> dict[str, Any]:
    return {**GOOD, "to": target}


REFUSED: list[tuple[str, Any, tuple[str, ...], int, str, str | None]] = [
    # (route, body, headers, status, error code, error path)
    ("/publish", GOOD, (JSON,), 401, "unauthorized", None),
    ("/publish", GOOD, (JSON, "Authorization: Bearer wrong-key-012345"), 401, "unauthorized", None),
    ("/publish", GOOD, (JSON, f"Authorization: Basic {API_KEY}"), 401, "unauthorized", None),
    ("/publish", GOOD, (AUTH, "Content-Type: text/plain"), 415, "unsupported_media_type", None),
    ("/publish", '{"to": ', OK, 400, BAD, "$"),
    ("/publish", "", OK, 400, BAD, None),
    ("/publish", {"event": GOOD["event"]}, OK, 400, BAD, "$"),
    ("/publish", to({"group": "x"}), OK, 400, BAD, "$.to"),
    ("/publish", to([]), OK, 400, BAD, "$.to"),
    ("/publish", to({"topic": "a b"}), OK, 400, BAD, "$.to.topic"),
    ("/publish", to({"user": ""}), OK, 400, BAD, "$.to.user"),
    ("/publish", to({"user": None}), OK, 400, BAD, "$.to.user"),
    ("/publish", to([{"user": "a", "topic": "b"}]), OK, 400, BAD, "$.to[0]"),
    ("/publish", to({"everyone": False}), OK, 400, BAD, "$.to.everyone"),
    ("/publish", to([{"topic": "t"}] * 101), OK, 400, BAD, "$.to"),
    ("/publish", with_event(type="invalidate", keys=["jobs"]), OK, 400, BAD, "$.event.keys"),
    ("/publish", with_event(type="invalidate", keys=[[]]), OK, 400, BAD, "$.event.keys"),
    ("/publish", with_event(type="invalidate", keys=[["a"]], x=1), OK, 400, BAD, "$.event"),
    ("/publish", with_event(type="set", key="jobs", data=1), OK, 400, BAD, "$.event.key"),
    ("/publish", with_event(type="set", key=["jobs"]), OK, 400, BAD, "$.event"),
    ("/publish", with_event(type="resync"), OK, 400, BAD, "$.event.type"),
    ("/publish", with_event(type="lu.internal"), OK, 400, BAD, "$.event.type"),
    ("/publish", with_event(type="bad type!"), OK, 400, BAD, "$.event.type"),
    ("/publish", with_event(type="job.done", stream="all"), OK, 400, BAD, "$.event"),
    ("/publish", with_event(type="job.done", blob="x" * 70_000), OK, 400, BAD, "$"),
    ("/publish", with_event(type="job.done", blob="x" * 1_100_000), OK, 413, "too_large", None),
    ("/publish/batch", {"requests": [GOOD] * 101}, OK, 413, "too_large", "$.requests"),
    ("/publish/batch", {"requests": [GOOD, to({})]}, OK, 400, BAD, "$.requests[1].to"),
    ("/nowhere", GOOD, OK, 404, "not_found", None),
]


async def test_bad_requests_get_a_4xx_with_a_json_error_and_publish_nothing(
    server: UvicornThread,
) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="watcher", topics=["refused"])
        for route, body, headers, status, code, path in REFUSED:
            got, fields, answer = await post(server.http_url + "/api" + route, body, *headers)
            case = f"{route} {str(body)[:80]} {headers}"
            assert (got, answer["error"]["code"]) == (status, code), (case, answer)
            assert answer["error"].get("path") == path, (case, answer)
            assert fields["content-type"] == "application/json"
            if status == 401:
                assert fields["www-authenticate"].startswith("Bearer")
        status, _, answer = await post(server.http_url + "/api/publish", GOOD, AUTH, JSON)
        assert status == 200
        (first,) = await next_events(client, 1)
    assert first == {**answer["positions"][0], **GOOD["event"]}  # none before it was published


async def test_wrong_methods_and_the_openapi_document(server: UvicornThread) -> None:
    async with httpx.AsyncClient(base_url=server.http_url + "/api", timeout=10) as http:
        wrong = await http.get("/publish")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        document = (await http.get("/openapi.json")).json()  # no key needed
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/publish", "/publish/batch", "/openapi.json"}
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_it_refuses_to_run_without_api_keys() -> None:
    with pytest.raises(ValueError, match="at least one API key"):
        PublishAPI(Producer("memory://"), api_keys=[])
    with pytest.raises(ValueError, match="at least 16 characters"):
        PublishAPI(Producer("memory://"), api_keys=["short"])


@pytest.mark.redis
async def test_the_api_on_its_own_publishes_to_a_browser_of_another_process(
    own_redis_server: RedisServer, app_processes: AppProcesses
) -> None:
    url = own_redis_server.backplane_url(prefix="h", timeout=0.5)
    (hub,) = app_processes.start("apps.redis_app:app", env={"LIVEUPDATES_BACKPLANE": url})
    api = AppProcess(
        "liveupdates.asgi.publish_api:create_app", args=["--factory"], ready_path="/openapi.json",
        env={"LIVEUPDATES_BACKPLANE": url, "LIVEUPDATES_API_KEYS": f"other-0123456789ab,{API_KEY}"},
    )  # fmt: skip
    app_processes.processes.append(api.start())
    async with ws_client(hub) as client:
        await client.handshake(token="dora")
        request = {"to": {"user": "dora"}, "event": {"type": "report.ready", "id": 3}}
        status, _, answer = await post(api.http_url + "/publish", request, AUTH, JSON)
        assert status == 200, answer
        (got,) = await next_events(client, 1)
    assert got == {**answer["positions"][0], "type": "report.ready", "id": 3}

    own_redis_server.kill9()  # Redis gone: the caller is told to retry, nothing hangs
    status, fields, answer = await post(api.http_url + "/publish", request, AUTH, JSON)
    assert (status, answer["error"]["code"], fields["retry-after"]) == (503, "unavailable", "1")
