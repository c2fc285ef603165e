"""Held connections: a cap below the open-file limit, and a deadline for a request's headers.

Every open connection is a file descriptor. When a process runs out of them it can neither
accept the next caller nor open a socket to the homeserver or the database, whoever holds the
rest: so the HTTP server serves at most :attr:`ConnectionGuard.cap` connections, measured from
``RLIMIT_NOFILE`` at start (raised to the hard limit first), with room left for everything
else. A connection beyond the cap is answered ``503`` (a fixed byte string, no parsing) and
closed at once.

Headers: a client must finish its first request's headers within ``header_timeout`` seconds
of connecting, or the connection is closed (a slowloris client sending a header line every few
seconds holds nothing for long). The installed aiohttp (3.14) also arms its keep-alive timer
when a connection is made (``RequestHandler.connection_made``), which does the same, but older
versions of the supported range do not, so the guard is ours. Later requests on a kept-alive
connection are covered by aiohttp's keep-alive timeout (set to the same value), which every
version arms after each response. A request's body is
held to its own deadline where it is read (``api.base.read_body``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
import asyncio
import json
import logging
import resource

from aiohttp import web
from aiohttp.typedefs import Handler

from . import metrics

log = logging.getLogger("agent_chat.connections")

#: Descriptors kept free for the database, the homeserver client, logs and the like: a
#: quarter of the limit, at least this many.
RESERVED_FDS = 64
#: The soft open-file limit is raised towards the hard one, up to this.
FD_TARGET = 65536

_BODY = json.dumps(
    {
        "errcode": "AC_UNAVAILABLE",
        "error": "the server is at its connection limit; retry in a moment",
        "retry_after_ms": 1000,
    }
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


def open_file_limit() -> int:
    """The soft ``RLIMIT_NOFILE``, raised to the hard limit (at most :data:`FD_TARGET`) when
    it is lower: the descriptors this process may hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_TARGET if hard == resource.RLIM_INFINITY else min(hard, FD_TARGET)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.debug("could not raise the open-file limit to %d: %s", want, e)
    return FD_TARGET if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(fd_limit: int, configured: int | None = None) -> int:
    """Connections served at most: below ``fd_limit`` by a reserve, and below ``configured``."""
    cap = max(16, fd_limit - max(RESERVED_FDS, fd_limit // 4))
    return min(cap, configured) if configured is not None else cap


class ConnectionGuard:
    """Counts the server's connections, refuses those beyond ``cap`` and closes those that
    do not send their first request's headers within ``header_timeout`` seconds."""

    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.refused = 0
        self.timed_out = 0
        self._open: set[object] = set()
        #: Connections whose first request has not arrived yet, with their deadline's timer.
        self._fresh: dict[object, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._open)

    def install(self, server: web.Server, on_lost: Callable[[Any], None]) -> None:
        """Watch ``server``'s connections; ``on_lost`` is told of every lost one."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._open.add(handler)
            if len(self._open) > self.cap:
                self.refused += 1
                transport.write(REFUSAL)
                transport.close()
                return
            loop = asyncio.get_running_loop()
            self._fresh[handler] = loop.call_later(
                self.header_timeout, self._expire, handler, transport
            )

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            lost(handler, exc)
            self._open.discard(handler)
            timer = self._fresh.pop(handler, None)
            if timer is not None:
                timer.cancel()
            on_lost(handler)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        metrics.CONNECTIONS.read = lambda: len(self._open)
        metrics.CONNECTIONS_REFUSED.read = lambda: self.refused
        metrics.HEADER_TIMEOUTS.read = lambda: self.timed_out

    def _expire(self, handler: object, transport: asyncio.Transport) -> None:
        if self._fresh.pop(handler, None) is not None:
            self.timed_out += 1
            transport.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request arrived whole (its headers): its connection's deadline is met."""
        timer = self._fresh.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await handler(request)
