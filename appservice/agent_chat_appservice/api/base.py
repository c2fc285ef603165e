"""What every REST handler shares: the route table, the service context, auth, JSON input."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar
import asyncio
import hmac
import json
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from ..background import Background
from ..config import Config
from ..db import Identity
from ..errors import ErrorAnswer
from ..homeserver import Homeserver
from ..identities import Identities
from ..limits import CALLERS_CAP, Limits, RateLimiter, SharedRateLimiter
from ..loop_guard import LoopGuard, SharedLoopGuard
from ..presence import Presence
from ..recent import RecentMap
from ..rooms import Rooms
from ..waiters import Waiters

routes = web.RouteTableDef()
IDENTITY = "agent_chat.identity"
MAX_JSON = 64 * 1024
TOKEN_CACHE_SECONDS = 30.0
#: Activity (``last_active``) is written at most this often per caller.
TOUCH_SECONDS = 60.0


@dataclass
class Context:
    config: Config
    hs: Homeserver
    rooms: Rooms
    identities: Identities
    send_limiter: RateLimiter | SharedRateLimiter
    #: Room creation, registration, login and webhook limits (``limits.py``).
    limits: Limits = field(default_factory=Limits.default)
    #: Two agents answering each other too fast in a direct chat or thread: 429.
    loop_guard: LoopGuard | SharedLoopGuard = field(default_factory=lambda: LoopGuard(6))
    ready: bool = False
    #: Whether this process applies the homeserver's transactions (one of several replicas
    #: may not; see ``cluster.py``).
    is_writer: Callable[[], bool] = lambda: True
    #: Long-poll waiters of /notify; woken by whatever changes a caller's counts.
    waiters: Waiters = field(default_factory=Waiters)
    #: Agent sessions' presence (working, idle · wakeable, idle · deaf, gone).
    presence: Presence = field(default_factory=Presence)
    #: Work beside the requests (read receipts, ...): drained when the service stops.
    background: Background = field(default_factory=Background)
    #: Read receipts on their way to the homeserver, per (reader, room): the newest event read
    #: since the one in flight was sent (None: nothing newer yet); ``api/messages.py``.
    receipts_in_flight: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _touched: RecentMap[str, None] = field(
        default_factory=lambda: RecentMap(TOUCH_SECONDS, CALLERS_CAP)
    )
    _tokens: RecentMap[str, Identity] = field(
        default_factory=lambda: RecentMap(TOKEN_CACHE_SECONDS, CALLERS_CAP)
    )

    async def identity_for(self, token: str) -> Identity | None:
        """The identity behind an API token, cached briefly: every hook call authenticates.
        A human's dies with the Matrix session it came from (``sessions.py``)."""
        identity = await self._identity_for(token)
        if (
            identity is not None
            and identity.kind == "human"
            and not await self.hs.sessions.alive(self, token, identity)
        ):
            return None
        return identity

    async def _identity_for(self, token: str) -> Identity | None:
        cached = self._tokens.get(token)
        if cached is not None:
            return cached[0]
        identity = await Identity.get_by_token(token)
        if identity is not None:
            self._tokens.set(token, identity)
            if identity.kind == "human":
                # The human may have logged in through another replica since this one read
                # the tokens: the database has their current Matrix token.
                self.hs.user_tokens.update(await Identity.matrix_tokens(identity.user_id))
        return identity

    async def touch(self, identity: Identity) -> None:
        """Record activity for `who`, at most once a minute per caller (notify is hot)."""
        if self._touched.get(identity.user_id) is None:
            self._touched.set(identity.user_id, None)
            await identity.touch()


CONTEXT = web.AppKey("context", Context)
_PUBLIC: set[Handler] = set()
RouteHandler = TypeVar("RouteHandler", bound=Handler)


def public(handler: RouteHandler) -> RouteHandler:
    """Mark a route that needs no token (health, register, the OpenAPI document)."""
    _PUBLIC.add(handler)
    return handler


def is_public(handler: object) -> bool:
    return handler in _PUBLIC


def ctx(request: web.Request) -> Context:
    return request.app[CONTEXT]


def caller(request: web.Request) -> Identity:
    """Who called: set by the auth middleware on every route that is not public."""
    identity = request.get(IDENTITY)
    if not isinstance(identity, Identity):
        raise RuntimeError(f"{request.path} is public: there is no caller to ask for")
    return identity


def check_admin(request: web.Request) -> Context:
    """The context of an operator's request: the admin token (``Config.admin_token``), not an
    identity's; admin routes are public to the auth middleware and call this first."""
    context = ctx(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise ErrorAnswer(
            401, "M_MISSING_TOKEN", "admin routes need 'Authorization: Bearer <admin token>'"
        )
    given = header[7:].strip().encode()
    if not hmac.compare_digest(given, context.config.admin_token.encode()):
        raise ErrorAnswer(403, "M_FORBIDDEN", "admin routes need the operator's admin token")
    return context


async def read_body(request: web.Request, limit: int = MAX_JSON) -> bytes:
    """The whole body, refusing more than ``limit`` bytes without reading past it."""
    too_large = ErrorAnswer(413, "M_TOO_LARGE", f"the request body is over {limit // 1024} KiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    seconds = request.app[CONTEXT].config.body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):  # a body trickled in holds no connection for long
            while chunk := await request.content.read(65536):
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:  # aiohttp then closes the connection (the body is unread)
        raise ErrorAnswer(
            408, "M_TIMEOUT", f"the request body did not arrive within {seconds:g} s"
        ) from None
    return b"".join(chunks)


async def json_body(
    request: web.Request, limit: int = MAX_JSON, nul_ok: Collection[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object, checked by :func:`parse_json`."""
    data = parse_json(await read_body(request, limit), nul_ok=nul_ok)
    if not isinstance(data, dict):
        raise ErrorAnswer(400, "M_BAD_JSON", "the request body must be a JSON object")
    return data


#: How deeply a body's arrays and objects may nest (json.loads itself gives up near 1,000,
#: with an exception that was a 500).
MAX_DEPTH = 64
#: What makes a body worth walking: deep nesting is possible, or a string may hold NUL or
#: half of a surrogate pair (JSON spells both only as escapes; the bytes are decoded strictly).
_WALK = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def parse_json(
    raw: bytes, what: str = "the request body", hint: str = "", nul_ok: Collection[str] = ()
) -> Any:
    """``raw`` as JSON, or a one-line 400 before anything is done with it: not JSON (then
    ``hint`` says what to send), nested deeper than ``MAX_DEPTH``, a lone surrogate in any
    string or key, or NUL in one, which a name, an alias or a topic cannot hold (PostgreSQL
    refuses NUL in text, and a room was left half-created). Only the top-level fields named in
    ``nul_ok`` may hold NUL: a message's body, which Matrix carries and the ledger stores
    without it."""
    try:
        text = raw.decode(json.detect_encoding(raw))  # strict, unlike json.loads(bytes)
        data = json.loads(text)
    except RecursionError:
        raise ErrorAnswer(
            400, "M_BAD_JSON", f"{what} nests deeper than {MAX_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError):
        help = f": {hint}" if hint else ""
        raise ErrorAnswer(400, "M_NOT_JSON", f"{what} is not valid JSON{help}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH or _WALK.search(text):
        _check_tree(data, what, nul_ok)
    return data


def _check_tree(data: Any, what: str, nul_ok: Collection[str]) -> None:
    """Depth, NUL and lone surrogates, walked without recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    if isinstance(data, dict) and nul_ok:  # its fields in nul_ok: lone surrogates only
        stack = [(key, 2) for key in data]
        for key, value in data.items():
            if key in nul_ok and isinstance(value, str):
                _check_text(value.replace("\x00", ""), what)
            else:
                stack.append((value, 2))
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, what)
            continue
        if isinstance(value, dict):
            for key in value:
                _check_text(key, what)
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise ErrorAnswer(400, "M_BAD_JSON", f"{what} nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise ErrorAnswer(400, "M_BAD_JSON", f"{what} has a NUL character (\\u0000) in a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ErrorAnswer(
                400, "M_BAD_JSON", f"{what} has a lone surrogate (half of a \\uD8xx pair)"
            ) from None


def string_field(data: dict[str, Any], key: str, max_len: int = 256, text: bool = False) -> str:
    """A required field: a non-empty string of at most ``max_len`` characters; one line
    without control characters unless ``text`` (a message body: newlines, tabs, escapes)."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ErrorAnswer(400, "M_BAD_JSON", f"'{key}' must be a non-empty string")
    return _checked_string(key, value, max_len, text)


def optional_string_field(
    data: dict[str, Any], key: str, max_len: int = 256, text: bool = False
) -> str | None:
    """An optional field: absent or null is None; otherwise a string (possibly empty), as
    :func:`string_field` checks it."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ErrorAnswer(400, "M_BAD_JSON", f"'{key}' must be a string")
    return _checked_string(key, value, max_len, text)


#: What a one-line field cannot hold: C0 and C1 controls, DEL, line and paragraph separators.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _checked_string(key: str, value: str, max_len: int, text: bool = False) -> str:
    if len(value) > max_len:
        raise ErrorAnswer(413 if max_len > 1024 else 400, "M_TOO_LARGE", f"'{key}' is too long")
    if not text and _CONTROLS.search(value):
        raise ErrorAnswer(400, "M_BAD_JSON", f"'{key}' is one line without control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ErrorAnswer(
            400, "M_BAD_JSON", f"'{key}' is not valid Unicode (lone surrogate)"
        ) from None
    return value


def query_bool(request: web.Request, key: str, default: bool) -> bool:
    value = request.query.get(key)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' must be true or false")


def query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    value = request.query.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' must be a number") from None
    if not lo <= number <= hi:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' must be between {lo} and {hi}")
    return number


def query_seconds(request: web.Request, key: str, hi: float) -> float | None:
    """A number of seconds from 0 to ``hi`` (decimals allowed); None when absent."""
    value = request.query.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' must be a number of seconds") from None
    if not 0 <= number <= hi:  # NaN fails this too
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' must be between 0 and {hi:g} seconds")
    return number


def ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")
