"""Demo accounts and a signed, expiring session cookie, read by the REST API and by liveupdates.

The cookie is ``<user>.<expires>.<signature>``, the signature an HMAC-SHA256 of the rest with
the app's secret. Browsers send it with same-origin WebSocket handshakes too, so the
liveupdates `authenticate` hook reads the very same cookie: no token in any URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from liveupdates import AuthRequest, Principal

COOKIE = "jobs_session"
ADMIN_TOPIC = "admin"


@dataclass(frozen=True, slots=True)
class Account:
    user: str
    password: str
    admin: bool = False


# Shown on the login page: this is a demo.
ACCOUNTS = {
    account.user: account
    for account in (
        Account("alice", "alice"),
        Account("bob", "bob"),
        Account("admin", "admin", admin=True),
    )
}


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    admin: bool
    expires_at: float


def check_password(user: str, password: str) -> Account | None:
    account = ACCOUNTS.get(user)
    if account is None or not hmac.compare_digest(account.password, password):
        return None
    return account


class Sessions:
    """Issues and verifies session cookies signed with `secret`."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        self.secret = secret
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, user: str) -> str:
        payload = f"{user}.{int(time.time() + self.lifetime)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str | None) -> Session | None:
        """The session of a cookie that is well formed, signed by us, unexpired and of a user."""
        if not cookie or cookie.count(".") != 2:
            return None
        user, expires, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{user}.{expires}")):
            return None
        account = ACCOUNTS.get(user)
        if account is None or not expires.isdigit() or int(expires) <= time.time():
            return None
        return Session(user, account.admin, float(expires))

    def of(self, request: HTTPConnection) -> Session | None:
        return self.verify(request.cookies.get(COOKIE))

    def set_cookie(self, response: Response, user: str) -> None:
        response.set_cookie(
            COOKIE, self.issue(user), max_age=int(self.lifetime), httponly=True, samesite="lax"
        )

    # -- the liveupdates hooks ----------------------------------------------------------------

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """Who a live connection is: the session cookie's user; the connection ends with it."""
        session = self.verify(request.cookies.get(COOKIE))
        if session is None:
            return None
        return Principal(user=session.user, expires_at=session.expires_at, data=session)


def authorize(principal: Principal, topic: str) -> bool:
    """Topics a connection may join: only ``admin``, and only for admins."""
    session = principal.data
    return topic == ADMIN_TOPIC and isinstance(session, Session) and session.admin
