"""Who may use the dashboard. Pure logic: the server asks, this answers.

- With a token configured (required when listening beyond loopback), every API request needs it:
  as `Authorization: Bearer TOKEN`, or as the session cookie a login with the token sets. The
  cookie holds an HMAC of the token, not the token: changing the token logs everyone out.
- While listening on loopback, a request must name a loopback host: a web page from elsewhere
  cannot reach the dashboard by pointing its own host name at 127.0.0.1 (DNS rebinding).
- A request that changes something and comes from a page (it carries `Origin`) must come from
  the dashboard's own page.
"""

from __future__ import annotations

import hashlib
import hmac

from gatewayd.config import is_loopback

SESSION_COOKIE = "gatewayd_session"
SESSION_MAX_AGE_S = 30 * 86400


def split_host(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8080" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Access:
    def __init__(self, token: str | None, *, loopback: bool):
        self.token = token.encode() if token else None
        self.loopback = loopback
        self.session = (
            hmac.new(self.token, b"gatewayd dashboard session", hashlib.sha256).hexdigest() if self.token else None
        )

    @property
    def token_required(self) -> bool:
        return self.token is not None

    def host_allowed(self, host: str | None) -> bool:
        if not self.loopback:
            return True
        return bool(host) and is_loopback(split_host(host or ""))

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None:  # not sent by a page (curl, a script): the token or loopback decide
            return True
        return host is not None and origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")

    def authorised(self, authorization: str | None, cookie: str | None) -> bool:
        if self.token is None:
            return True
        if authorization is not None and authorization.startswith("Bearer "):
            return hmac.compare_digest(authorization[7:].strip().encode(), self.token)
        assert self.session is not None
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def login(self, token: str) -> str | None:
        """The session cookie's value for the right token, None for a wrong one."""
        if self.token is None or not hmac.compare_digest(token.strip().encode(), self.token):
            return None
        return self.session
