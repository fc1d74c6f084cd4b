"""``apps.redis_app`` plus the admin route at ``/admin`` (open to all: a test app)."""

from __future__ import annotations

from starlette.routing import Mount

from apps.redis_app import app, hub
from liveupdates import AuthRequest
from liveupdates.asgi import AdminEndpoint


def everyone_is_admin(request: AuthRequest) -> bool:
    return True


app.router.routes.append(Mount("/admin", app=AdminEndpoint(hub, check=everyone_is_admin)))

__all__ = ("app",)
