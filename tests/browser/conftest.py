"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's sync API) and the test
app of tests/browser/app.py served by uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext
from support import UvicornThread

from liveupdates import Hub, Limits
from liveupdates.backplanes import MemoryBackplane

from .app import auth, create_app

# Pings every 0.5 s: the page's watchdog notices a stalled connection after 2 s.
LIMITS = Limits(heartbeat_interval=0.5, heartbeat_timeout=2.0, goodbye_retry=0.2)


def start_server(
    backplane: MemoryBackplane | None = None, *, port: int = 0, websocket: bool = True
) -> UvicornThread:
    """The test app over uvicorn; `port` reuses a port (a restart), `websocket=False` blocks
    the WebSocket route."""
    hub = Hub(backplane or MemoryBackplane(), authenticate=auth, limits=LIMITS, drain_signals=())
    server = UvicornThread(create_app(hub, websocket=websocket), port=port)
    server.hub = hub  # type: ignore[attr-defined]
    return server.start()


def stop_server(server: UvicornThread) -> None:
    """Drain the hub (as SIGTERM does in production: `goodbye`, then every stream ends), then
    stop uvicorn, which would otherwise wait for open SSE responses before shutting down."""
    hub: Hub = server.hub  # type: ignore[attr-defined]
    if hub.running:
        server.call(hub.drain)
    server.stop()


@pytest.fixture
def server() -> Iterator[UvicornThread]:
    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[[str], BrowserContext]]:
    """`new_context(url)`: a fresh browser profile (its tabs share one origin), closed after."""
    opened: list[BrowserContext] = []

    def new_context(url: str) -> BrowserContext:
        context = browser.new_context(base_url=url)
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    yield new_context
    for context in opened:
        context.close()
