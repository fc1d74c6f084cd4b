"""`combine_lifespans`: order, merged state, and a failed startup that exits what it entered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from liveupdates import Hub, Invalidate, Topic
from liveupdates.integrations.lifespans import combine_lifespans

pytestmark = pytest.mark.anyio


def recording(name: str, log: list[str], state: Any = None, fail: bool = False) -> Any:
    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[Any]:
        log.append("enter " + name)
        if fail:
            raise RuntimeError(name + " failed")
        try:
            yield state
        finally:
            log.append("exit " + name)

    return lifespan


async def test_entered_in_order_exited_in_reverse_with_the_states_merged() -> None:
    log: list[str] = []
    combined = combine_lifespans(
        recording("hub", log),
        recording("db", log, {"db": 1, "x": 1}),
        recording("c", log, {"x": 2}),
    )
    async with combined(object()) as state:
        assert log == ["enter hub", "enter db", "enter c"]
        assert state == {"db": 1, "x": 2}
    assert log[3:] == ["exit c", "exit db", "exit hub"]


async def test_no_state_stays_none_and_a_failed_startup_exits_the_others() -> None:
    log: list[str] = []
    async with combine_lifespans(recording("a", log))(object()) as state:
        assert state is None
    log.clear()
    failing = combine_lifespans(recording("a", log), recording("b", log, fail=True))
    with pytest.raises(RuntimeError, match="b failed"):
        async with failing(object()):
            pass
    assert log == ["enter a", "enter b", "exit a"]


async def test_the_hub_runs_while_the_apps_startup_and_shutdown_code_publish() -> None:
    hub = Hub()
    published: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: object) -> AsyncIterator[None]:
        await hub.publish(Invalidate(["boot"]), to=Topic("t"))  # the hub is running already
        published.append("startup")
        yield
        await hub.publish(Invalidate(["bye"]), to=Topic("t"))  # and still is
        published.append("shutdown")

    lifespan: Any = combine_lifespans(hub.lifespan, app_lifespan)
    manager: AbstractAsyncContextManager[Any] = lifespan(object())
    async with manager:
        assert hub.running
    assert published == ["startup", "shutdown"]
    assert not hub.running
