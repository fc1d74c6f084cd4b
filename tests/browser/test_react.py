"""The React entry (`@liveupdates/client/react`) in headless Chromium against the real server:
the banner of `useConnectionState()` re-renders as the connection goes, comes back and closes.
The page (tests/browser/react_page.js) is bundled with React by esbuild from node_modules."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from support import UvicornThread

from liveupdates import Hub
from liveupdates.backplanes import MemoryBackplane

from .app import auth, create_app
from .conftest import LIMITS, stop_server
from .test_client import NewContext

pytestmark = pytest.mark.browser
ROOT = Path(__file__).parent.parent.parent
HTML = '<!doctype html><div id="root"></div><script type="module" src="/react/app.js"></script>'


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    esbuild = ROOT / "node_modules/esbuild/bin/esbuild"  # a native binary, or node's shim
    if shutil.which("node") is None or not esbuild.exists():
        pytest.skip("node and the npm packages (npm ci) are needed to bundle the page")
    out = tmp_path_factory.mktemp("react") / "app.js"
    subprocess.run(
        [str(esbuild), "tests/browser/react_page.js", "--bundle", "--format=esm",
         "--define:process.env.NODE_ENV=\"production\"", f"--outfile={out}", "--log-level=error"],
        cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


@pytest.fixture
def react_server(bundle: bytes) -> Iterator[UvicornThread]:
    """The browser tests' app, with the React page at /react/ (same origin as /live)."""

    async def page(request: Request) -> Response:
        return HTMLResponse(HTML)

    async def script(request: Request) -> Response:
        return Response(bundle, media_type="text/javascript")

    hub = Hub(MemoryBackplane(), authenticate=auth, limits=LIMITS, drain_signals=())
    app = create_app(hub)
    app.router.routes[:0] = [Route("/react/", page), Route("/react/app.js", script)]
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    stop_server(server)


def test_use_connection_state_follows_the_connection(
    react_server: UvicornThread, new_context: NewContext
) -> None:
    server = react_server
    page = new_context(server.http_url).new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.on("pageerror", lambda error: console.append(str(error)))
    page.goto("/react/")
    banner = "document.getElementById('status')?.textContent"
    try:
        page.wait_for_function(f"{banner} === 'connected (jobs)'")
    except Exception as exc:
        raise AssertionError(f"{page.content()}\n{console}") from exc

    httpx.post(server.http_url + "/kick").raise_for_status()  # closed with 4503: try again
    page.wait_for_function("renders.includes('reconnecting')")
    page.wait_for_function(f"{banner} === 'connected (jobs)'")

    page.evaluate("live.close()")
    page.wait_for_function(f"{banner} === 'closed (jobs)'")
    renders: list[str] = page.evaluate("renders")
    changes = [s for i, s in enumerate(renders) if i == 0 or renders[i - 1] != s]
    assert changes == ["connecting", "connected", "reconnecting", "connected", "closed"]
