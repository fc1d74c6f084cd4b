from fastapi import FastAPI
from starlette.routing import WebSocketRoute

from liveupdates import AuthRequest, Hub, Invalidate, Principal, User
from liveupdates.asgi import WebSocketEndpoint


async def authenticate(request: AuthRequest) -> Principal | None:
    # Check a session cookie or a JWT here; this demo trusts the token as the user id.
    return Principal(user=request.token) if request.token else None


hub = Hub(authenticate=authenticate)
app = FastAPI(routes=[WebSocketRoute("/live", WebSocketEndpoint(hub))], lifespan=hub.lifespan)


@app.post("/users/{user_id}/jobs-changed")
async def jobs_changed(user_id: str) -> None:
    await hub.publish(Invalidate(["jobs"]), to=User(user_id))
