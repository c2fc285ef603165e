"""API errors: JSON ``{"errcode", "error"}`` with an honest HTTP status."""

from __future__ import annotations

from typing import Any
import json

from aiohttp import web
from mautrix.errors import (
    MatrixConnectionError,
    MatrixError,
    MatrixRequestError,
    MForbidden,
    MLimitExceeded,
    MNotFound,
)
import aiohttp


def seconds_up(ms: int) -> int:
    """Milliseconds as whole seconds, rounded up: a caller told to wait that long is never
    early (a wait of 200 ms is said as 1 s, not 0 s)."""
    return -(-ms // 1000)


class ErrorAnswer(Exception):
    """The error answer this service gives a caller: ``status``, ``errcode``, ``message`` (the
    client's ``agent_chat.errors.ApiError`` is that answer as received, in the same order)."""

    def __init__(
        self, status: int, errcode: str, message: str, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.retry_after_ms = retry_after_ms

    def response(self) -> web.Response:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.message}
        headers = {}
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
            headers["Retry-After"] = str(max(1, seconds_up(self.retry_after_ms)))
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type="application/json",
            headers=headers,
        )


#: What a call to the homeserver raises when the homeserver refused it, answered nonsense or
#: could not be reached (mautrix's errors, aiohttp's, and the timeout of the client session,
#: which mautrix passes on as it is): the cases :func:`from_matrix` maps. Anything else is a
#: bug of ours: it reaches the API's error middleware, which logs it with its traceback and
#: answers 500.
HOMESERVER_ERRORS: tuple[type[Exception], ...] = (MatrixError, aiohttp.ClientError, TimeoutError)


def from_matrix(e: Exception, doing: str) -> ErrorAnswer:
    """Map a homeserver failure (one of :data:`HOMESERVER_ERRORS`) to what the API caller
    should see."""
    if isinstance(e, MLimitExceeded):
        return ErrorAnswer(429, "M_LIMIT_EXCEEDED", f"the homeserver rate-limited {doing}", 1000)
    if isinstance(e, MForbidden):
        return ErrorAnswer(403, "M_FORBIDDEN", f"the homeserver refused {doing}: {e.message}")
    if isinstance(e, MNotFound):
        return ErrorAnswer(404, "M_NOT_FOUND", f"not found while {doing}")
    if isinstance(e, (MatrixConnectionError, aiohttp.ClientConnectionError, TimeoutError)):
        return ErrorAnswer(
            503, "AC_HOMESERVER_UNREACHABLE", f"the homeserver is unreachable ({doing})"
        )
    if isinstance(e, MatrixRequestError):
        status = getattr(e, "http_status", 502)
        if status == 429:
            return ErrorAnswer(
                429, "M_LIMIT_EXCEEDED", f"the homeserver rate-limited {doing}", 1000
            )
        if 400 <= status < 500:  # the request was wrong (an unknown room id, say), not the server
            reason = getattr(e, "message", "") or getattr(e, "errcode", "") or str(status)
            return ErrorAnswer(400, "M_UNKNOWN", f"the homeserver refused {doing}: {reason}")
        return ErrorAnswer(502, "AC_HOMESERVER_ERROR", f"the homeserver failed {doing} ({status})")
    return ErrorAnswer(502, "AC_HOMESERVER_ERROR", f"the homeserver failed {doing}")
