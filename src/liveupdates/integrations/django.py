"""Django: an ASGI application with the hub in it, Django's sessions as authentication,
publishing after ``transaction.on_commit``, configuration in ``settings.LIVEUPDATES``.

In ``asgi.py``, instead of Django's own::

    from liveupdates.integrations.django import get_asgi_application

    application = get_asgi_application()

Django's ASGI handler refuses lifespan and WebSocket connections; this application runs the
hub (and the outbox relay, if configured) in the ASGI lifespan, answers the WebSocket, SSE and
client-file paths itself and hands every other request to Django. In a view::

    with transaction.atomic():
        job.save()
        publish_on_commit(Invalidate(["jobs"]), to=User(str(job.owner_id)))

Settings (every key optional)::

    LIVEUPDATES = {
        "BACKPLANE": "memory://",           # or "redis://..."
        "PATH": "/live",                    # the WebSocket endpoint
        "SSE_PATH": "/live/sse",            # None: no SSE endpoint
        "CLIENT_PATH": "/static/liveupdates",  # None: the browser client is not served
        "ALLOWED_ORIGINS": None,            # None: same-origin pages; "*"; or a list
        "AUTHENTICATE": None,               # dotted path of a hook; None: Django's sessions
        "AUTHORIZE": None,                  # dotted path of a hook; None: every topic public
        "PRINCIPAL": None,                  # dotted path: user -> Principal (default: its pk)
        "ANONYMOUS": False,                 # let visitors without a login connect
        "OUTBOX": None,                     # a database alias: run the outbox relay for it
        "OUTBOX_TABLE": "liveupdates_outbox",
    }
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.db import close_old_connections, connections, transaction
from django.db.migrations.operations import RunPython
from django.http import HttpRequest

from ..asgi import SSEEndpoint, WebSocketEndpoint, client_files
from ..auth import AuthRequest, Principal
from ..durable import DEFAULT_TABLE, OutboxRelay, outbox_ddl
from ..durable.django import write_event
from ..events import Event
from ..hub import Hub
from ..targets import Target

__all__ = (
    "LiveUpdatesASGI",
    "SessionAuth",
    "get_asgi_application",
    "get_hub",
    "outbox_migration",
    "publish_on_commit",
    "write_event",
)

Scope = Mapping[str, Any]
ASGIApp = Callable[[Any, Any, Any], Any]
DEFAULTS: Final[Mapping[str, Any]] = {
    "BACKPLANE": "memory://",
    "PATH": "/live",
    "SSE_PATH": "/live/sse",
    "CLIENT_PATH": "/static/liveupdates",
    "ALLOWED_ORIGINS": None,
    "AUTHENTICATE": None,
    "AUTHORIZE": None,
    "PRINCIPAL": None,
    "ANONYMOUS": False,
    "OUTBOX": None,
    "OUTBOX_TABLE": DEFAULT_TABLE,
}


def config() -> dict[str, Any]:
    """``settings.LIVEUPDATES`` over the defaults; an unknown key is an error (a typo)."""
    given: Mapping[str, Any] = getattr(settings, "LIVEUPDATES", {})
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"settings.LIVEUPDATES: unknown keys {sorted(unknown)}")
    return {**DEFAULTS, **given}


def _imported(value: Any) -> Any:
    if isinstance(value, str):
        module, _, name = value.rpartition(".")
        return getattr(importlib.import_module(module), name)
    return value


@functools.cache
def get_hub() -> Hub:
    """The hub of this process, made from ``settings.LIVEUPDATES`` on the first call.

    The application built by `get_asgi_application` runs it; views publish through it.
    """
    conf = config()
    principal = _imported(conf["PRINCIPAL"]) or default_principal
    authenticate = _imported(conf["AUTHENTICATE"]) or SessionAuth(
        principal=principal, anonymous=conf["ANONYMOUS"]
    )
    extra = {"authorize": _imported(conf["AUTHORIZE"])} if conf["AUTHORIZE"] else {}
    return Hub(conf["BACKPLANE"], authenticate=authenticate, **extra)


def default_principal(user: Any) -> Principal:
    """A logged-in user as a `Principal`: its primary key as the user id, the user as data."""
    return Principal(user=str(user.pk), data=user)


class SessionAuth:
    """Authentication from Django's session cookie and ``django.contrib.auth``.

    The cookie named ``settings.SESSION_COOKIE_NAME`` is looked up in the session engine and
    its user loaded as ``request.user`` would be (``django.contrib.auth.get_user``: the
    backend, and the session's hash against the password). The ORM is called in Django's sync
    thread (``sync_to_async``), with stale connections closed before and after, as in a
    request. `principal` (called in that thread, so it may query) turns the user into a
    `Principal`; without a login the connection is refused, unless `anonymous`.
    """

    def __init__(
        self,
        *,
        principal: Callable[[Any], Principal | None] = default_principal,
        anonymous: bool = False,
    ) -> None:
        self.principal = principal
        self.anonymous = anonymous
        self._resolve = sync_to_async(self._principal_of, thread_sensitive=True)

    async def __call__(self, request: AuthRequest) -> Principal | None:
        key = request.cookies.get(settings.SESSION_COOKIE_NAME)
        if not key:
            return Principal() if self.anonymous else None
        principal: Principal | None = await self._resolve(key)
        return principal

    def _principal_of(self, session_key: str) -> Principal | None:
        close_old_connections()
        try:
            engine = importlib.import_module(settings.SESSION_ENGINE)
            http = HttpRequest()
            http.session = engine.SessionStore(session_key)
            user = auth.get_user(http)
            if not user.is_authenticated:
                return Principal() if self.anonymous else None
            return self.principal(user)
        finally:
            close_old_connections()


def publish_on_commit(
    event: Event,
    to: Target | Iterable[Target],
    *,
    using: str | None = None,
    hub: Hub | None = None,
) -> None:
    """Publish `event` once the current transaction of database `using` commits.

    Dropped if it rolls back; published at once outside ``transaction.atomic()``. The event is
    encoded now (a bad event raises here, in the view). Callable from sync views (Django's
    thread) and async ones. A publish that fails after the commit (the hub not running, the
    backplane down) is logged, never raised into the view whose data is committed; for
    delivery that survives a crash, write the event into the outbox instead (`write_event`).
    """
    tx = (hub or get_hub()).transaction()
    tx.publish(event, to)
    transaction.on_commit(tx.schedule_commit, using=using, robust=True)


def outbox_migration(table: str = DEFAULT_TABLE) -> RunPython:
    """A migration operation that creates the outbox table on the migrated database::

    operations = [outbox_migration()]
    """

    def create(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        ddl = outbox_ddl("postgresql" if vendor == "postgresql" else vendor, table)
        statements = [ddl] if vendor == "postgresql" else ddl.split(";")
        for statement in statements:
            if statement.strip():
                schema_editor.execute(statement)

    def drop(apps: Any, schema_editor: Any) -> None:
        schema_editor.execute(f"DROP TABLE IF EXISTS {table}")

    return RunPython(create, drop)


def database_url(using: str) -> str:
    """The relay's URL for Django database `using` (SQLite or PostgreSQL)."""
    conf = connections[using].settings_dict
    engine = conf["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    if engine.endswith(("postgresql", "postgis")):
        user = quote(conf.get("USER") or "", safe="")
        password = quote(conf.get("PASSWORD") or "", safe="")
        login = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = conf.get("HOST") or "localhost"
        port = f":{conf['PORT']}" if conf.get("PORT") else ""
        return f"postgresql://{login}{host}{port}/{quote(conf['NAME'], safe='')}"
    raise ValueError(f"the outbox relay supports SQLite and PostgreSQL, not {engine}")


class LiveUpdatesASGI:
    """An ASGI application: the hub's endpoints and lifespan in front of `django_app`.

    Lifespan runs the hub (and an `OutboxRelay` for database alias `outbox`); `path` is the
    WebSocket endpoint, `sse_path` the SSE endpoint, `client_path` the browser client's files;
    every other HTTP request goes to `django_app`, and every other WebSocket is refused (403).
    """

    def __init__(
        self,
        django_app: ASGIApp,
        hub: Hub,
        *,
        path: str = "/live",
        sse_path: str | None = "/live/sse",
        client_path: str | None = "/static/liveupdates",
        allowed_origins: str | list[str] | None = None,
        outbox: str | None = None,
        outbox_table: str = DEFAULT_TABLE,
    ) -> None:
        self.django_app, self.hub = django_app, hub
        self.path, self.sse_path = path, sse_path
        self.client_path = client_path.rstrip("/") if client_path else None
        self.websocket = WebSocketEndpoint(hub, allowed_origins=allowed_origins)
        self.sse = SSEEndpoint(hub, allowed_origins=allowed_origins)
        self.outbox, self.outbox_table = outbox, outbox_table
        self.relay: OutboxRelay | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path = _route_path(scope)
        if path == self.path:
            await self.websocket(scope, receive, send)
        elif self.sse_path is not None and path == self.sse_path:
            await self.sse(scope, receive, send)
        elif self.client_path is not None and path.startswith(self.client_path + "/"):
            root = scope.get("root_path", "") + self.client_path
            await client_files({**scope, "root_path": root}, receive, send)
        elif kind == "websocket":
            await receive()  # (the connect message)
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        else:
            await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self.hub)
                if self.outbox is not None:
                    url = database_url(self.outbox)
                    relay = OutboxRelay(url, self.hub.backplane, table=self.outbox_table)
                    self.relay = await stack.enter_async_context(relay)
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except Exception as exc:
            phase = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{phase}.failed", "message": repr(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def get_asgi_application() -> LiveUpdatesASGI:
    """Django's ASGI application (``django.core.asgi``) behind the hub of `get_hub`, as
    ``settings.LIVEUPDATES`` configures them. Sets Django up, as Django's own does."""
    from django.core.asgi import get_asgi_application as django_asgi_application

    django_app = django_asgi_application()
    conf = config()
    return LiveUpdatesASGI(
        django_app,
        get_hub(),
        path=conf["PATH"],
        sse_path=conf["SSE_PATH"],
        client_path=conf["CLIENT_PATH"],
        allowed_origins=conf["ALLOWED_ORIGINS"],
        outbox=conf["OUTBOX"],
        outbox_table=conf["OUTBOX_TABLE"],
    )
