"""One lifespan out of several: the hub's and the application's own.

ASGI frameworks take a single ``lifespan``: a function of the app returning an async context
manager, which may yield a dict of state (Starlette, FastAPI) or nothing::

    app = FastAPI(lifespan=combine_lifespans(hub.lifespan, database_lifespan))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

AppT = TypeVar("AppT")
Lifespan = Callable[[AppT], AbstractAsyncContextManager[Any]]


def combine_lifespans(*lifespans: Lifespan[AppT]) -> Lifespan[AppT]:
    """A lifespan that enters `lifespans` in order and exits them in reverse order.

    Put the hub's first, so that it runs before the application's startup code publishes
    and until its shutdown code has published. The state dicts the lifespans yield are merged
    (a later one wins on a name they share); if none yields a dict, the combined one yields
    None, as a lifespan without state does. A lifespan whose startup fails exits the ones
    entered before it.
    """

    @asynccontextmanager
    async def combined(app: AppT) -> AsyncIterator[dict[str, Any] | None]:
        state: dict[str, Any] | None = None
        async with AsyncExitStack() as stack:
            for lifespan in lifespans:
                value = await stack.enter_async_context(lifespan(app))
                if isinstance(value, Mapping):
                    state = {**(state or {}), **value}
            yield state

    return combined
