"""Revocation: disconnecting a user closes their connections in every process (Redis)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support import ws_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_revoking_a_user_closes_their_connections_in_every_process(
    redis_server: Any, redis_prefix: str, app_processes: Any
) -> None:
    env = {"LIVEUPDATES_BACKPLANE": redis_server.backplane_url(prefix=redis_prefix)}
    first, second = app_processes.start("apps.admin_app:app", env=env, count=2)
    async with (
        ws_client(first) as alice_here,
        ws_client(second) as alice_there,
        ws_client(second) as bob,
        httpx.AsyncClient() as http,
    ):
        for client, token in ((alice_here, "alice"), (alice_there, "alice"), (bob, "bob")):
            await client.handshake(token=token)
        revoke = await http.post(first.http_url + "/admin/users/alice/disconnect")
        assert revoke.status_code == 202
        assert await alice_here.closed() == 4403
        assert await alice_there.closed() == 4403  # in the other process too
        await bob.send({"type": "ping"})
        assert (await bob.until(lambda m: m["type"] == "pong"))["type"] == "pong"
        async with ws_client(second) as alice_again:  # a login after the revocation stands
            await alice_again.handshake(token="alice")
            await http.post(
                first.http_url + "/publish", params={"to": "user:alice", "key": '["x"]'}
            )
            (event,) = await alice_again.events(1)
            assert event["keys"] == [["x"]]
