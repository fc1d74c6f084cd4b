"""liveupdates in a FastAPI app: the app's own auth dependency, the app's own lifespan.

Run it with
``uvicorn examples.fastapi_app.app:app --ws-max-size 131072 --ws-per-message-deflate false``;
a client connects to
``/live`` with the token ``alice-token`` (in its ``hello``, or as ``Authorization: Bearer``), and
``curl -X POST -H 'Authorization: Bearer alice-token' localhost:8000/jobs`` tells it that
``["jobs"]`` changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from liveupdates import Hub, Invalidate, Principal, User
from liveupdates.integrations.fastapi import DependencyAuth, mount


@dataclass(frozen=True)
class Account:
    name: str


TOKENS = {"alice-token": Account("alice"), "bob-token": Account("bob")}  # your user store
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]) -> Account:
    """The dependency the app's routes already use."""
    account = TOKENS.get(token)
    if account is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return account


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """The app's own lifespan (a database pool, say): its state reaches every request."""
    yield {"jobs": []}


def create_app() -> FastAPI:
    hub = Hub(authenticate=DependencyAuth(get_current_user, principal=lambda a: Principal(a.name)))
    app = FastAPI(lifespan=lifespan)
    mount(app, hub)  # /live, /live/sse, /static/liveupdates; the hub runs before `lifespan`
    app.state.hub = hub

    @app.post("/jobs")
    async def add_job(
        request: Request, account: Annotated[Account, Depends(get_current_user)]
    ) -> dict[str, int]:
        jobs: list[str] = request.state.jobs
        jobs.append(account.name)
        await hub.publish(Invalidate(["jobs"]), to=User(account.name))
        return {"jobs": len(jobs)}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"connections": hub.stats().connections}

    return app


app = create_app()
