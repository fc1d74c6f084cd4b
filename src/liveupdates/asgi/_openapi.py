"""The OpenAPI 3.1 document of the HTTP publish API (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from ..events import RESERVED_TYPES
from ..publish_json import EVENT_TYPE_PATTERN, MAX_USER_ID, RequestLimits

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _object(required: list[str], properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
        **more,
    }


def _schemas(limits: RequestLimits, max_batch: int) -> dict[str, Any]:
    not_app = "|".join(sorted({*RESERVED_TYPES, "invalidate", "set"}))
    app_type = rf"^(?!lu\.)(?!(?:{not_app})$){EVENT_TYPE_PATTERN}$"
    query_key = {"type": "array", "minItems": 1, "description": "A TanStack Query key."}
    return {
        "UserTarget": _object(
            ["user"], {"user": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID}}
        ),
        "TopicTarget": _object(
            ["topic"], {"topic": {"type": "string", "pattern": r"^[A-Za-z0-9_.:/@-]{1,200}$"}}
        ),
        "EveryoneTarget": _object(["everyone"], {"everyone": {"const": True}}),
        "Target": {
            "oneOf": [_ref("UserTarget"), _ref("TopicTarget"), _ref("EveryoneTarget")],
            "description": "Every connection of a user, of a topic's subscribers, or all.",
        },
        "QueryKey": query_key,
        "Invalidate": _object(
            ["type", "keys"],
            {
                "type": {"const": "invalidate"},
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": limits.max_keys,
                    "items": _ref("QueryKey"),
                },
            },
            description="Clients refetch every query whose key starts with one of `keys`.",
        ),
        "Set": _object(
            ["type", "key", "data"],
            {"type": {"const": "set"}, "key": _ref("QueryKey"), "data": {}},
            description="Latest-value-wins data for exactly the query `key`.",
        ),
        "ApplicationEvent": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "pattern": app_type},
                "stream": False,
                "epoch": False,
                "offset": False,
            },
            "additionalProperties": True,
            "description": "An event of the application's own type; its fields are sent as "
            "given. Reserved types and `lu.*` are refused.",
        },
        "Event": {"oneOf": [_ref("Invalidate"), _ref("Set"), _ref("ApplicationEvent")]},
        "PublishRequest": _object(
            ["to", "event"],
            {
                "to": {
                    "oneOf": [
                        _ref("Target"),
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": limits.max_targets,
                            "items": _ref("Target"),
                        },
                    ]
                },
                "event": _ref("Event"),
            },
        ),
        "BatchRequest": _object(
            ["requests"],
            {
                "requests": {
                    "type": "array",
                    "maxItems": max_batch,
                    "items": _ref("PublishRequest"),
                }
            },
        ),
        "Position": _object(
            ["stream", "epoch", "offset"],
            {
                "stream": {"type": "string"},
                "epoch": {"type": ["string", "null"]},
                "offset": {"type": ["integer", "null"]},
            },
            description="Where the event is in the stream; null when a hub's throttle holds "
            "it for the trailing edge of its window.",
        ),
        "PublishResponse": _object(
            ["positions"], {"positions": {"type": "array", "items": _ref("Position")}}
        ),
        "BatchResponse": _object(
            ["results"], {"results": {"type": "array", "items": _ref("PublishResponse")}}
        ),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": _object(
                    ["code", "message"],
                    {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "path": {"type": "string"},
                    },
                ),
                "results": {"type": "array", "items": _ref("PublishResponse")},
            },
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _operation(summary: str, request: str, response: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        },
        "responses": {
            "200": {
                "description": "Published: the event's position in each stream.",
                "content": {"application/json": {"schema": _ref(response)}},
            },
            "400": _error("Invalid JSON or request (the error says where)."),
            "401": _error("No valid API key."),
            "413": _error("The body, a batch or an event is too large."),
            "415": _error("The body is not application/json."),
            "503": _error("The backplane cannot take the event now: retry (Retry-After)."),
        },
    }


def openapi_document(limits: RequestLimits, max_batch: int) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "liveupdates publish API",
            "version": "1",
            "description": "Publish cache-invalidation events to every connected browser.",
        },
        "paths": {
            "/publish": {
                "post": _operation("Publish one event", "PublishRequest", "PublishResponse")
            },
            "/publish/batch": {
                "post": _operation("Publish events in order", "BatchRequest", "BatchResponse")
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document."}},
                }
            },
        },
        "components": {
            "schemas": _schemas(limits, max_batch),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }
