"""What stands in front of `kb serve`'s Datasette: /v1 (OpenAI-compatible) and /mcp (MCP), guarded.

Safe by default: on a loopback host the two surfaces answer only requests addressed to loopback
(the Host header, and the Origin when a browser sends one), so a web page cannot reach them by DNS
rebinding; beyond loopback they need the --api-key Bearer token, compared in constant time, and
are off without one. Everything else goes to Datasette as before.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from . import mcp_http, openai_api
from .openai_api import Site, send_error

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(value: str) -> str:
    """The host part of a Host header (127.0.0.1:8001, [::1]:8001, localhost)."""
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Gateway:
    """ASGI app: /v1 and /mcp answered here, the rest by `app` (Datasette)."""

    def __init__(self, datasette: Any, app: Any, host: str, base_url: str, api_key: str | None = None):
        self.app = app
        self.host = host
        self.site = Site(datasette, base_url)
        self.loopback = is_loopback(host)
        self.api_key = api_key.encode() if api_key else None
        self.mcp: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path = scope.get("path", "")
        surface = next((s for s in ("/v1", "/mcp") if path == s or path.startswith(s + "/")), None)
        if surface is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            status, message, headers = refusal
            await send_error(send, status, message, headers=headers)
        elif surface == "/v1":
            # Links are made absolute against the address the client used (it passed the checks above).
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            site = Site(self.site.datasette, f"http://{host}") if host else self.site
            await openai_api.handle(site, scope, receive, send)
        elif self.mcp is None:
            await send_error(
                send, 503, "The MCP server is starting; try again in a moment.", headers={"Retry-After": "2"}
            )
        else:
            await self.mcp(scope, receive, send)

    async def _lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        """Datasette's own lifespan, with the MCP session manager running for as long as it does."""
        self.mcp, manager = await mcp_http.build_app(self.site, self.host)
        async with manager.run():
            await self.app(scope, receive, send)

    def refusal(self, scope: dict) -> tuple[int, str, dict[str, str]] | None:
        """(status, sentence, headers) when the request may not use /v1 or /mcp; None when it may."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if self.api_key is not None:
            given = headers.get("authorization", "")
            token = given[7:].strip().encode("latin-1") if given[:7].lower() == "bearer " else b""
            if not hmac.compare_digest(token, self.api_key):
                message = "A valid API key is required: send Authorization: Bearer KEY (kb serve --api-key)."
                return 401, message, {"WWW-Authenticate": "Bearer"}
            return None
        if not self.loopback:
            message = f"kb serve listens on {self.host} without --api-key: /v1 and /mcp are off; restart it with one."
            return 403, message, {}
        host = _host_of(headers.get("host", ""))
        origin = headers.get("origin")
        if not is_loopback(host) or (origin and not is_loopback(urlsplit(origin).hostname or "")):
            return 403, "Without --api-key, /v1 and /mcp answer only requests addressed to this machine.", {}
        return None
