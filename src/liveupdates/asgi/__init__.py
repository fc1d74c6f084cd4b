"""ASGI adapters: raw ASGI apps usable as Starlette or FastAPI routes, or on their own."""

from __future__ import annotations

from .websocket import WebSocketEndpoint

__all__ = ("WebSocketEndpoint",)
