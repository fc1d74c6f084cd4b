"""The quickstart in docs/quickstart.md (examples/quickstart.py) works exactly as shown."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from support import UvicornThread, ws_client

pytestmark = pytest.mark.anyio
QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.py"


def load_quickstart() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quickstart_under_test", QUICKSTART)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_two_tabs_of_one_user_get_the_invalidation_and_nobody_else() -> None:
    server = UvicornThread(load_quickstart().app).start()
    try:
        async with ws_client(server) as tab1, ws_client(server) as tab2, ws_client(server) as bob:
            await tab1.handshake(token="alice")
            await tab2.handshake(token="alice")
            await bob.handshake(token="bob")
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                assert (await http.post("/users/alice/jobs-changed")).status_code == 200
                assert (await http.post("/users/bob/jobs-changed")).status_code == 200
            for tab in (tab1, tab2):
                (event,) = await tab.events(1)
                assert (event["type"], event["keys"], event["stream"]) == (
                    "invalidate", [["jobs"]], "user:alice",
                )  # fmt: skip
            (event,) = await bob.events(1)
            assert event["stream"] == "user:bob"
    finally:
        server.stop()
