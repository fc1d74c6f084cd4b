"""ASGI adapters: raw ASGI apps usable as Starlette or FastAPI routes, or on their own."""

from __future__ import annotations

from .admin import AdminEndpoint as AdminEndpoint
from .publish_api import PublishAPI as PublishAPI
from .sse import SSEEndpoint as SSEEndpoint
from .static import client_files as client_files
from .websocket import WebSocketEndpoint as WebSocketEndpoint

__all__ = ("AdminEndpoint", "PublishAPI", "SSEEndpoint", "WebSocketEndpoint", "client_files")
