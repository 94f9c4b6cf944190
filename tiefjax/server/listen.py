"""Listening: uvicorn with deadlines for slow clients and a ready line once the socket is bound.

uvicorn times out idle keep-alive connections, but a client that sends a byte now and then is
never idle: it can hold a connection (and a request) open for as long as it likes. Here the
request line and headers must arrive within ``header_timeout_s`` of the connection (or of the
previous response), and the body within ``body_timeout_s`` of the headers; otherwise the client
gets ``408 Request Timeout`` (when no response has started) and the connection is closed. The
app's own deadlines (e.g. for upload searches) apply once a request has arrived.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from tiefjax.errors import InvalidInput
from tiefjax.server.config import ServerConfig

_TOO_SLOW = b"the request came in too slowly; send it again, all at once\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
    % len(_TOO_SLOW)
    + _TOO_SLOW
)


class SlowClientDeadlines(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the headers and one for the body."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._phase: object = None
        self._timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None, None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of what the client is sending now: headers, a body, or nothing."""
        phase = self.conn.their_state
        if phase is h11.IDLE:
            self._arm(phase, self.header_timeout_s)
        elif phase is h11.SEND_BODY:
            self._arm(phase, self.body_timeout_s)
        else:
            self._arm(phase, None)

    def _arm(self, phase: object, timeout: float | None) -> None:
        if phase is self._phase and phase is not None:
            return  # the deadline runs from the start of the phase, not from the last byte
        self._phase = phase
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout is not None:
            self._timer = self.loop.call_later(timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        if cycle is not None:  # the app's receive() answers "disconnected", its sends are dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def make_server(
    app: ASGIApp,
    host: str,
    port: int,
    config: ServerConfig,
    ready: Callable[[str], None],
) -> uvicorn.Server:
    """A uvicorn server for ``app`` that calls ``ready(url)`` once it listens (``port`` 0 = any
    free one, named in the URL); ``.run()`` serves until Ctrl-C or ``should_exit``."""
    for name in ("header_timeout_s", "body_timeout_s"):
        if not getattr(config, name) > 0:
            raise InvalidInput(f"[server] {name} must be > 0, got {getattr(config, name)}")
    protocol = type(
        "Deadlines",
        (SlowClientDeadlines,),
        {"header_timeout_s": config.header_timeout_s, "body_timeout_s": config.body_timeout_s},
    )
    uv_config = uvicorn.Config(
        app, host=host, port=port, http=protocol, log_level="warning", access_log=False
    )
    return _ReadyServer(uv_config, host, ready)


class _ReadyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, host: str, ready: Callable[[str], None]):
        super().__init__(config)
        self._host = host
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            shown = f"[{self._host}]" if ":" in self._host else self._host
            self._ready(f"http://{shown}:{port}/")
