"""Operations: every metric equals what a scripted scenario makes happen; the Prometheus and
admin routes; token expiry and in-band refresh; no token in any log record."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from support import UvicornThread, ws_client

from liveupdates import AuthRequest, Everyone, Hub, Invalidate, Limits, Principal, Set, Topic
from liveupdates.asgi import AdminEndpoint, WebSocketEndpoint
from liveupdates.prometheus import metrics_app
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

pytestmark = pytest.mark.anyio


def authenticate(request: AuthRequest) -> Principal | None:
    """Tokens are ``tok-<user>[-<seconds to live>][-vip or anything]``."""
    parts = (request.token or "").split("-")
    if parts[0] != "tok" or len(parts) < 2:
        return None
    expires_at = time.time() + float(parts[2]) if len(parts) > 2 and parts[2] != "vip" else None
    return Principal(user=parts[1], expires_at=expires_at, data="vip" if "vip" in parts else None)


def authorize(principal: Principal, topic: str) -> bool:
    return topic == "jobs" or (topic == "vip" and principal.data == "vip")


async def hello(ws: AsgiWebSocket, token: str, *topics: str) -> list[dict[str, Any]]:
    await ws.send_json({"type": "hello", "token": token, "topics": list(topics)})
    replies = [await ws.receive_message()]
    while len(replies) < 3 + len(topics):  # welcome, all, user stream, each topic
        replies.append(await ws.receive_message())
    return replies


async def read_all(ws: AsgiWebSocket) -> list[dict[str, Any]]:
    """Everything queued for `ws` so far (a pong queues behind it)."""
    await ws.send_json({"type": "ping"})
    seen = []
    while (message := await ws.receive_message())["type"] != "pong":
        seen.append(message)
    return seen


async def test_every_metric_equals_what_the_scenario_made_happen() -> None:
    limits = Limits(outbox_max_messages=4, rate=1000, burst=1000)
    hub = Hub(authenticate=authenticate, authorize=authorize, limits=limits)
    async with hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as refused:
            await refused.send_json({"type": "hello", "token": "nope"})
            assert await refused.wait_closed() == 4401
        async with connect_asgi(app) as alice, connect_asgi(app, send_buffer=1) as bob:
            await hello(alice, "tok-alice", "jobs", "vip")  # vip: refused
            await hello(bob, "tok-bob")
            await hub.publish(Invalidate(["jobs"]), to=Topic("jobs"))  # alice only
            for n in range(10):  # bob reads none of these
                await hub.publish(Set(["x", n], n), to=Everyone)
            alice_messages = await read_all(alice)
            live = hub.stats()
            assert live.connections_by_transport == {"websocket": 2}
            assert (live.users, live.subscriptions, live.streams) == (2, 1, 4)
            bob_messages = await read_all(bob)  # at last: what was kept for him
            await hub.disconnect(user="bob")
            assert await bob.wait_closed() == 4403
            frames = alice.frames_received + bob.frames_received
            chars = alice.chars_received + bob.chars_received
    stats = hub.stats()
    received = alice_messages + bob_messages
    events = [m for m in received if m.get("type") in ("invalidate", "set")]
    resyncs = [(m["stream"], m["reason"]) for m in received if m.get("type") == "resync"]
    assert stats.publishes == 11
    assert stats.deliveries == 1 + 10 * 2
    assert stats.recoveries_by_outcome == {"fresh": 3 + 2}
    assert stats.auth_failures == 1
    # bob, with a 4-message outbox and a 1-frame socket buffer, cannot hold 10 events unread
    assert stats.overflows >= 1
    assert stats.resyncs_by_reason == {"overflow": stats.overflows} == {"overflow": len(resyncs)}
    assert set(resyncs) == {("all", "overflow")}
    assert len(events) + stats.coalesced == 1 + 10 * 2  # every delivery arrived or was merged
    assert stats.closes_by_code == {"disconnected": 1, "client": 1}
    assert stats.frames == frames
    assert stats.bytes_sent == chars
    assert 0 < stats.lag_count <= stats.frames
    assert stats.lag_buckets[-1] == (float("inf"), stats.lag_count)
    assert stats.connections == stats.users == stats.subscriptions == 0


def is_admin(request: AuthRequest) -> bool:
    return request.headers.get("x-admin") == "yes"


async def test_prometheus_and_admin_routes_over_http() -> None:
    hub = Hub(authenticate=authenticate, authorize=authorize)
    app = Starlette(
        routes=[
            WebSocketRoute("/live", WebSocketEndpoint(hub)),
            Mount("/metrics", app=metrics_app(hub)),
            Mount("/admin", app=AdminEndpoint(hub, check=is_admin)),
        ],
        lifespan=hub.lifespan,
    )
    server = UvicornThread(app).start()
    try:
        async with ws_client(server) as ws, httpx.AsyncClient(base_url=server.http_url) as http:
            await ws.handshake(token="tok-carol", topics=["jobs"])
            await server.acall(hub.publish, Invalidate(["jobs"]), Topic("jobs"))
            await ws.events(1)
            text = (await http.get("/metrics/")).text
            assert 'liveupdates_connections{transport="websocket"} 1.0' in text
            assert "liveupdates_publishes_total 1.0" in text
            assert 'liveupdates_recoveries_total{outcome="fresh"} 3.0' in text
            assert "liveupdates_publish_lag_seconds_count 1.0" in text

            assert (await http.get("/admin/")).status_code == 403
            listing = (await http.get("/admin/", headers={"x-admin": "yes"})).json()
            (conn,) = listing["connections"]
            assert (conn["user"], conn["transport"], conn["topics"]) == (
                "carol", "websocket", ["jobs"],
            )  # fmt: skip
            assert conn["outbox_messages"] == 0
            assert listing["stats"]["connections"] == 1
            url = "/admin/users/carol/disconnect"
            assert (await http.get(url, headers={"x-admin": "yes"})).status_code == 405
            assert (await http.post(url)).status_code == 403
            assert (await http.post(url, headers={"x-admin": "yes"})).status_code == 202
            assert await ws.closed() == 4403
    finally:
        server.stop()


async def test_a_token_near_expiry_is_warned_refreshed_in_band_and_rechecked() -> None:
    limits = Limits(expiry_warning=1.0)
    hub = Hub(authenticate=authenticate, authorize=authorize, limits=limits)
    async with hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as keeps, connect_asgi(app) as lapses:
            await hello(keeps, "tok-dave-1.5-vip", "vip", "jobs")
            await hello(lapses, "tok-erin-1.5")
            with anyio.fail_after(5):
                warning = await keeps.receive_until(lambda m: m["type"] == "expiring")
            assert 0 < warning["expires_in"] <= 1000
            await keeps.send_json({"type": "refresh", "token": "tok-dave-60"})  # no longer vip
            answers = [await keeps.receive_message()]
            while answers[-1]["type"] != "refreshed":
                answers.append(await keeps.receive_message())
            assert 59_000 < answers[-1]["expires_in"] <= 60_000
            assert [(m["type"], m.get("stream") or m.get("topic")) for m in answers[:-1]] == [
                ("unsubscribed", "topic:vip"), ("error", "vip"),
            ]  # fmt: skip
            with anyio.fail_after(5):  # the one that did not refresh is closed at expiry...
                assert await lapses.wait_closed() == 4440
            # ...in the same sweep that looked at the refreshed one, which stays connected
            assert [m["type"] for m in await read_all(keeps)] == []
            await hub.publish(Invalidate(["jobs"]), to=Topic("jobs"))
            assert (await keeps.receive_message())["keys"] == [["jobs"]]
    assert hub.stats().closes_by_code == {"token_expired": 1, "client": 1}


async def test_no_token_appears_in_any_log_record(caplog: pytest.LogCaptureFixture) -> None:
    secrets = ["tok-frank-100-S3CR3T", "tok-frank-200-R3FR3SH", "bad-T0K3N", "tok-hugoH34D3R"]
    caplog.set_level(logging.DEBUG)
    hub = Hub(authenticate=authenticate, authorize=authorize)
    async with hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as ws:
            await hello(ws, secrets[0], "jobs")
            await ws.send_json({"type": "refresh", "token": secrets[1]})
            await ws.receive_until(lambda m: m["type"] == "refreshed")
        async with connect_asgi(app) as ws:
            await ws.send_json({"type": "hello", "token": secrets[2]})
            assert await ws.wait_closed() == 4401
        headers = [("authorization", f"Bearer {secrets[3]}")]
        async with connect_asgi(app, headers=headers, query_string=f"token={secrets[2]}") as ws:
            await ws.send_json({"type": "hello"})
            await ws.receive_until(lambda m: m["type"] == "welcome")
            await ws.send_bytes(b"\xff not json " + secrets[0].encode())
            assert await ws.wait_closed() == 4400
    assert caplog.records, "the scenario logs nothing: the test would prove nothing"
    for record in caplog.records:
        text = " ".join([record.getMessage(), repr(record.args), repr(vars(record))])
        for secret in secrets:
            assert secret not in text, f"{record.levelname} {record.getMessage()!r}"
