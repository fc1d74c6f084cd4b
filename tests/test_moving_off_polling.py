"""The app of docs/moving-off-polling.md runs as written: a cancel reaches the tab after commit."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import httpx
import pytest
from support import UvicornThread, ws_client

pytestmark = pytest.mark.anyio
PAGE = Path(__file__).parent.parent / "docs" / "moving-off-polling.md"


def load_app(folder: Path) -> types.ModuleType:
    """The page's Python block (the one that creates the app) as a module, run in `folder`."""
    (code,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)
        if "app = FastAPI(" in block
    ]
    (folder / "app.py").write_text(code)
    module = types.ModuleType("moving_off_polling_app")
    module.__file__ = str(folder / "app.py")
    sys.modules[module.__name__] = module
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    return module


async def test_a_cancel_invalidates_the_jobs_of_subscribed_tabs_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the page's app keeps jobs.db in the working directory
    module = load_app(tmp_path)
    server = UvicornThread(module.app).start()
    try:
        async with (
            ws_client(server) as tab,
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            replies = await tab.handshake(token="alice", topics=["jobs"])
            assert [r.get("stream") for r in replies[1:]] == ["all", "user:alice", "topic:jobs"]
            jobs = (await http.get("/api/jobs")).json()
            assert [job["status"] for job in jobs] == ["running"] * 3

            assert (await http.post("/api/jobs/2/cancel")).status_code == 200
            (event,) = await tab.events(1)
            assert (event["type"], event["keys"], event["stream"], event["offset"]) == (
                "invalidate", [["jobs"]], "topic:jobs", 1,
            )  # fmt: skip
            jobs = (await http.get("/api/jobs")).json()
            assert [job["status"] for job in jobs] == ["running", "cancelled", "running"]

            # A failed request commits nothing and publishes nothing.
            assert (await http.post("/api/jobs/99/cancel")).status_code == 404
            stats = (await http.get("/api/live-stats")).json()
            assert (stats["connections"], stats["publishes"]) == (1, 1)

            response = await http.get("/static/liveupdates/client.js")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/javascript")
    finally:
        server.stop()
        module.db.close()
        sys.modules.pop("moving_off_polling_app", None)
