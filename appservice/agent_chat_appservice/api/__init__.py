"""The REST API under ``/_agent_chat/v1``: one module per resource, one shared route table."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import metrics
from ..errors import ErrorAnswer
from . import (  # noqa: F401  (routes on base.routes)
    admin,
    admin_agents,
    agents,
    claims,
    invite_tokens,
    messages,
    presence,
    receipts,
    rooms,
    search,
    tokens,
    webhooks,
)
from .base import CONTEXT, IDENTITY, Context, is_public, routes
from .bots import check_bot

log = logging.getLogger("agent_chat.api")


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per-route latency for /metrics, and a Server-Timing header for clients and benchmarks."""
    started = time.perf_counter()
    response = await handler(request)
    elapsed = time.perf_counter() - started
    resource = request.match_info.route.resource
    metrics.API_LATENCY.observe(elapsed, resource.canonical if resource else "unmatched")
    if response.status >= 400:
        metrics.API_ERRORS.inc(str(response.status))
    response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.3f}"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ErrorAnswer as e:
        return e.response()
    except web.HTTPException as e:
        if e.status == 405:
            allowed = sorted(getattr(e, "allowed_methods", None) or ())
            use = f"; use {' or '.join(allowed)}" if allowed else ""
            response = ErrorAnswer(
                405, "M_UNRECOGNIZED", f"{request.method} is not allowed here{use}"
            ).response()
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
            return response
        if e.status == 404:
            return ErrorAnswer(404, "M_UNRECOGNIZED", "no such API route").response()
        if e.status == 413:
            return ErrorAnswer(413, "M_TOO_LARGE", "the request body is too large").response()
        raise
    except Exception:
        # The route, not the path: a webhook's path is its secret.
        resource = request.match_info.route.resource
        where = resource.canonical if resource else "an unknown route"
        log.exception("unhandled error in %s %s", request.method, where)
        return ErrorAnswer(500, "M_UNKNOWN", "internal error; see the appservice log").response()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "access_token" in request.query:
        raise ErrorAnswer(
            400, "M_INVALID_PARAM", "tokens in the query string are refused; use the header"
        )
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route: answer 404/405, not 401
    if is_public(request.match_info.handler):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise ErrorAnswer(401, "M_MISSING_TOKEN", "missing 'Authorization: Bearer <token>' header")
    identity = await request.app[CONTEXT].identity_for(header[7:].strip())
    if identity is None:
        raise ErrorAnswer(401, "M_UNKNOWN_TOKEN", "unknown or revoked token; register again")
    if identity.kind == "bot":
        check_bot(request)  # bots only post (api/bots.py)
    request[IDENTITY] = identity
    await request.app[CONTEXT].touch(identity)
    return await handler(request)


def make_app(context: Context) -> web.Application:
    app = web.Application(middlewares=[timing_middleware, error_middleware, auth_middleware])
    app[CONTEXT] = context
    app.add_routes(routes)
    return app
