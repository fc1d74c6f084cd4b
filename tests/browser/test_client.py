"""The shipped browser client in headless Chromium against the real server on loopback: one
connection for three tabs and a leader handover, offline and online, the SSE fallback, and a
server restart with and without its history. Every test checks that no invalidation is missed:
each published key reaches the page, or the page is told to resync."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from playwright.sync_api import BrowserContext, Page
from support import UvicornThread

from liveupdates import Hub, Invalidate, Topic
from liveupdates.backplanes import MemoryBackplane

from .conftest import start_server, stop_server

pytestmark = pytest.mark.browser

NewContext = Callable[[str], BrowserContext]


def key(n: int) -> str:
    """The JSON of query key ``["k", n]``, as the page records it."""
    return f'["k",{n}]'


def publish(server: UvicornThread, *numbers: int) -> None:
    response = httpx.post(server.http_url + "/publish", json={"keys": [["k", n] for n in numbers]})
    response.raise_for_status()


def open_page(context: BrowserContext, query: str = "topics=jobs&token=alice") -> Page:
    page = context.new_page()
    page.goto("/?" + query)
    wait_connected(page)
    return page


def wait_connected(page: Page) -> None:
    page.wait_for_function("window.live && live.status === 'connected'")


def wait_keys(page: Page, *numbers: int) -> None:
    page.wait_for_function("keys => keys.every((k) => log.keys[k])", arg=[key(n) for n in numbers])


def assert_once(page: Page) -> None:
    """No key was delivered twice (a replay after a reconnect drops what the page had)."""
    counts = log(page, "keys")
    assert set(counts.values()) == {1}, counts


def log(page: Page, field: str) -> Any:
    return page.evaluate(f"log.{field}")


def outcomes(page: Page, stream: str) -> list[str]:
    return [m["outcome"] for m in log(page, "subscribed") if m["stream"] == stream]


def wait_connections(page: Page, count: int) -> None:
    """Wait until the server counts `count` connections: each poll (every 50 ms) asks `/stats`
    and checks the answer to the previous one (`wait_for_function` does not await promises)."""
    page.wait_for_function(
        """(n) => {
            fetch('/stats').then((r) => r.json()).then((s) => (window.connections = s.connections))
            return window.connections === n
        }""",
        arg=count,
        polling=50,
    )


def test_three_tabs_share_one_connection_and_a_closing_leader_hands_over(
    server: UvicornThread, new_context: NewContext
) -> None:
    context = new_context(server.http_url)
    tabs = [open_page(context, "topics=jobs&token=alice&shared=1") for _ in range(3)]
    assert httpx.get(server.http_url + "/stats").json()["connections"] == 1
    (leader,) = [tab for tab in tabs if tab.evaluate("live.leader")]
    publish(server, 1, 2)
    for tab in tabs:
        wait_keys(tab, 1, 2)

    leader.close()  # the browser releases its lock: another tab takes over
    publish(server, 3, 4, 5)  # while the new leader connects
    rest = [tab for tab in tabs if tab is not leader]
    for tab in rest:
        wait_keys(tab, 1, 2, 3, 4, 5)
    assert sum(tab.evaluate("live.leader") for tab in rest) == 1
    for tab in rest:
        # the new leader resumed from the newest cursor: a replay, not a fresh start
        assert outcomes(tab, "topic:jobs")[-1] == "recovered"
        assert log(tab, "resyncs") == []
    wait_connections(rest[0], 1)  # the old leader's connection is gone
    publish(server, 6)
    for tab in rest:
        wait_keys(tab, 6)
        assert_once(tab)


def test_offline_then_online_resumes_without_a_missed_key(
    server: UvicornThread, new_context: NewContext
) -> None:
    context = new_context(server.http_url)
    page = open_page(context)
    publish(server, 1)
    wait_keys(page, 1)

    # Chromium keeps an open WebSocket across emulated offline but delivers nothing: the
    # client's watchdog finds the connection dead, and the browser being offline, waits.
    context.set_offline(True)
    page.wait_for_function("live.status === 'offline'")
    publish(server, 2, 3)
    context.set_offline(False)  # `online`: reconnect at once, resume from the cursors
    wait_keys(page, 1, 2, 3)
    wait_connected(page)
    assert outcomes(page, "topic:jobs") == ["fresh", "recovered"]
    assert log(page, "resyncs") == []
    assert log(page, "statuses")[-3:] == ["offline", "reconnecting", "connected"]
    assert_once(page)


def test_sse_fallback_when_the_websocket_route_is_blocked(new_context: NewContext) -> None:
    server = start_server(websocket=False)
    try:
        context = new_context(server.http_url)
        page = open_page(context)
        assert page.evaluate("live.transport") == "sse"
        assert httpx.get(server.http_url + "/stats").json()["transports"] == {"sse": 1}
        publish(server, 1)
        wait_keys(page, 1)

        httpx.post(server.http_url + "/kick").raise_for_status()  # the stream ends
        publish(server, 2, 3)
        wait_keys(page, 1, 2, 3)
        wait_connected(page)
        assert [e["code"] for e in log(page, "errors")] == ["try_again_later"]
        assert outcomes(page, "topic:jobs")[0] == "fresh"
        assert set(outcomes(page, "topic:jobs")[1:]) == {"recovered"}  # resumed over SSE
        assert log(page, "resyncs") == []
        assert page.evaluate("live.transport") == "sse"
        assert_once(page)
    finally:
        stop_server(server)


def publish_while_down(backplane: MemoryBackplane, *numbers: int) -> None:
    """Publish on `backplane` from another process's hub while the web server is down (as a
    worker would, on a shared backplane): in a thread with its own event loop."""

    async def run() -> None:
        async with Hub(backplane, drain_signals=()) as hub:
            for n in numbers:
                await hub.publish(Invalidate(["k", n]), to=Topic("jobs"))

    thread = threading.Thread(target=anyio.run, args=(run,))
    thread.start()
    thread.join(10)


@pytest.mark.parametrize("history", ["kept", "lost"])
def test_a_server_restart_resumes_or_resyncs(new_context: NewContext, history: str) -> None:
    backplane = MemoryBackplane()
    server = start_server(backplane)
    port = server.port
    try:
        context = new_context(server.http_url)
        page = open_page(context)
        publish(server, 1, 2)
        wait_keys(page, 1, 2)

        stop_server(server)
        publish_while_down(backplane, 3, 4)
        if history == "lost":
            backplane = MemoryBackplane()  # a fresh backplane: new epochs, no history
        server = start_server(backplane, port=port)  # the page retries with backoff
        page.wait_for_function("log.subscribed.filter((m) => m.stream === 'all').length === 2")
        wait_connected(page)
        publish(server, 5)
        wait_keys(page, 5)
        if history == "kept":
            wait_keys(page, 1, 2, 3, 4, 5)  # replayed: 3 and 4 arrived while it was away
            assert outcomes(page, "topic:jobs") == ["fresh", "recovered"]
            assert log(page, "resyncs") == []
        else:
            # 3 and 4 are gone with the history: the page is told to refetch instead
            resyncs = {m["stream"]: m["reason"] for m in log(page, "resyncs")}
            assert resyncs == {"all": "epoch", "user:alice": "epoch", "topic:jobs": "epoch"}
            assert outcomes(page, "topic:jobs") == ["fresh", "resync"]
    finally:
        stop_server(server)
