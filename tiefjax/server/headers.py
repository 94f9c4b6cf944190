"""Security headers on every response of the server (API, site files and errors alike).

- ``X-Content-Type-Options: nosniff``: browsers take the declared type (an uploaded or catalog
  file is never run as a script or a page);
- ``Content-Security-Policy``: the site's own scripts, styles, images, fetches and fonts only
  (no inline script, no other origin), ``blob:`` images for the upload preview, and
  ``frame-ancestors 'none'`` with ``X-Frame-Options: DENY`` for older browsers: no page of it
  can be framed (clickjacking of the editors);
- ``Referrer-Policy: no-referrer``: ids in the URL fragment and path stay on this server.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_RAW = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]
_NAMES = {name for name, _ in _RAW}


class SecurityHeaders:
    """ASGI middleware setting :data:`HEADERS` on every HTTP response (replacing any given)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() not in _NAMES]
                message = {**message, "headers": kept + _RAW}
            await send(message)

        await self.app(scope, receive, send_with_headers)
