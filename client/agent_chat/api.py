"""The appservice REST API (``/_agent_chat/v1``, see appservice/.../api/openapi.yaml).

Maps HTTP answers to the client's errors: 401 → :class:`AuthError` (exit 3), 429 →
:class:`RateLimited` (exit 4), 502/503/504 → :class:`NetworkError` (exit 2), any other error →
:class:`ApiError` (exit 1). Error texts from the server are made terminal-safe.
"""

from __future__ import annotations

import json
import sys
import time

from . import http
from .errors import AcError, ApiError, AuthError, NetworkError, RateLimited
from .wire import API_PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Unpack

    from .shapes import JSONObject, RequestOptions


class Client:
    """One server, optionally one token; every call is one HTTP request.

    Args:
        server_url: the API base, e.g. ``http://127.0.0.1:8009``.
        token: the caller's bearer token, or None for unauthenticated routes.
        verbose: log each request (method, URL, status, time) to stderr.
        timeout: seconds for connecting and for each read.
    """

    def __init__(
        self,
        server_url: str,
        token: str | None = None,
        verbose: bool = False,
        timeout: float = http.DEFAULT_TIMEOUT,
    ) -> None:
        self.server_url = server_url
        self.base = server_url + API_PREFIX
        self.token = token
        self.verbose = verbose
        self.timeout = timeout
        #: Rewrites a 401 into what the caller should do (set by ``Context.authed``).
        self.on_rejected: Callable[[AuthError], AuthError] | None = None
        #: Sent with every request (e.g. the session a wake waiter serves).
        self.headers: dict[str, str] = {}

    def url(self, path: str, query: Mapping[str, object] | None = None) -> str:
        url = self.base + path
        if query:
            qs = http.urlencode(query)
            if qs:
                url += "?" + qs
        return url

    def raw(
        self,
        method: str,
        path: str,
        query: Mapping[str, object] | None = None,
        body: Mapping[str, object] | None = None,
        auth: bool = True,
        timeout: float | None = None,
    ) -> http.Response:
        """Send one request; return the :class:`~agent_chat.http.Response` whatever its status."""
        url = self.url(path, query)
        headers = dict(self.headers)
        if auth and self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        start = time.perf_counter() if self.verbose else 0.0
        try:
            resp = http.request(method, url, data, headers, timeout or self.timeout)
        except http.ConnectionFailed as e:
            if self.verbose:
                log(f"{method} {url} -> {e.kind} ({(time.perf_counter() - start) * 1000:.0f} ms)")
            raise
        except ValueError as e:  # malformed server URL
            raise ApiError(
                0, "", f"bad server URL {self.server_url!r}: {e} (see `ac config`)"
            ) from None
        if self.verbose:
            ms = (time.perf_counter() - start) * 1000
            log(f"{method} {url} -> {resp.status} ({ms:.0f} ms, {len(resp.body)} bytes)")
        return resp

    def call(self, method: str, path: str, **options: Unpack[RequestOptions]) -> JSONObject:
        """Send one request (``options`` as for :meth:`raw`) and return the answer's JSON
        object (``{}`` for an empty body), or raise the mapped error. Every API answer is an
        object; anything else is an ApiError. Its fields are unchecked: callers check each one
        they use."""
        resp = self.raw(method, path, **options)
        if 200 <= resp.status < 300:
            if not resp.body:
                return {}
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            raise ApiError(
                resp.status,
                "",
                f"the server sent an answer that is not a JSON object (is {self.server_url} the "
                "Agent Chat API?)",
                detail=repr(resp.body[:200]),
            )
        error = error_for(resp, self.server_url)
        if isinstance(error, AuthError) and self.on_rejected is not None:
            error = self.on_rejected(error)
        raise error


def error_for(resp: http.Response, server_url: str = "") -> AcError:
    """The client error for a non-2xx answer."""
    from .safe_text import one_line

    errcode = ""
    message = ""
    retry_ms: object = None
    try:
        data = resp.json()
        if isinstance(data, dict):
            errcode = str(data.get("errcode") or "")
            message = str(data.get("error") or "")
            retry_ms = data.get("retry_after_ms")
    except (ValueError, UnicodeDecodeError):
        pass
    errcode = one_line(errcode)[:80]
    message = one_line(message)[:300]
    detail = f"HTTP {resp.status} {one_line(resp.reason)[:60]} {errcode} {message}"
    status = resp.status
    if status == 401:
        return AuthError(f"authentication failed: {message or 'token rejected'}", detail=detail)
    if status == 429:
        retry: float | None = None
        if isinstance(retry_ms, (int, float)) and not isinstance(retry_ms, bool):
            retry = retry_ms / 1000.0
        else:
            header = resp.headers.get("retry-after", "")
            if header.strip().isdigit():
                retry = float(header.strip())
        text = "rate limited"
        if errcode == "AC_LOOP_GUARD" and message:  # says why, and when it may go on
            text = message
        elif retry:
            from .render import seconds_text

            text += f": retry after {seconds_text(retry)} s"
        return RateLimited(text, retry_after=retry, detail=detail)
    if status in (502, 503, 504):
        return NetworkError(
            f"server unavailable (HTTP {status}): "
            + (message or "the homeserver is not answering"),
            detail=detail,
        )
    if status == 404 and not errcode and not message:
        return ApiError(
            status, errcode, f"not found: is {server_url} the Agent Chat API?", detail=detail
        )
    text = message or resp.reason or f"HTTP {status}"
    return ApiError(status, errcode, f"{text} ({errcode or f'HTTP {status}'})", detail=detail)


def log(text: str) -> None:
    """A ``--verbose`` line on stderr."""
    try:
        sys.stderr.write(f"ac: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
