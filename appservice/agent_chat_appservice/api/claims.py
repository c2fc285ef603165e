"""Claims on files: claim (check-and-store, 409 on a conflict), list, check paths, release.

What one request may ask for (an agent chooses both patterns and paths): at most
``MAX_PATTERNS`` patterns of ``MAX_PATTERN`` characters, ``MAX_PATHS`` paths of ``MAX_PATH``
characters (400 beyond), and ``MAX_STEPS`` steps of matching and overlap work (413 beyond:
send fewer paths or patterns at a time). Work past a few milliseconds runs in a worker thread
(see :func:`..claims.bounded`), never on the event loop.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent_chat.globs import MAX_PATTERNS, MAX_STEPS, BadPattern, TooMuchWork, check_all

from ..claims import Claims, bounded, covering, until
from ..db import Claim
from ..errors import ErrorAnswer
from .base import Context, caller, ctx, json_body, ok, optional_string_field, query_bool, routes

#: --ttl: from a second to a week; two hours by default.
MIN_TTL, MAX_TTL, DEFAULT_TTL = 1, 7 * 86400, 7200
#: Paths checked in one request (a client sends more in several), and a path's length.
MAX_PATHS, MAX_PATH = 5000, 4096
TOO_MUCH = (
    f"this takes more than {MAX_STEPS:,} steps of glob matching, the most one request may: "
    "send fewer paths or patterns at a time"
)


def service(context: Context) -> Claims:
    found = getattr(context, "_claims", None)
    if not isinstance(found, Claims):
        found = Claims(context.hs, context.rooms)
        setattr(context, "_claims", found)  # noqa: B010  (one per service, made on first use)
    return found


def _project(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ErrorAnswer(400, "M_BAD_JSON", "'project' must be a non-empty string")
    if len(value) > 512 or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ErrorAnswer(400, "M_BAD_JSON", "'project' is at most 512 characters, no controls")
    return value


def _patterns(value: object, key: str = "patterns") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ErrorAnswer(400, "M_BAD_JSON", f"'{key}' must be a list of strings")
    try:
        return check_all(value, MAX_PATTERNS)
    except BadPattern as e:
        raise ErrorAnswer(400, "M_INVALID_PARAM", str(e)) from None


async def _shown(context: Context, claims: list[Claim]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out = []
    for c in claims:
        if c.user_id not in names:
            names[c.user_id] = await context.rooms.person_name(c.user_id)
        out.append(
            {
                "pattern": c.pattern,
                "holder": c.user_id,
                "holder_name": names[c.user_id],
                "mode": "exclusive" if c.exclusive else "shared",
                "reason": c.reason,
                "created_ts": c.created_at,
                "expires_ts": c.expires_at,
            }
        )
    return out


@routes.post("/claims")
async def claim(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    data = await json_body(request, 1024 * 1024)
    project = _project(data.get("project"))
    patterns = _patterns(data.get("patterns"))
    mode = data.get("mode", "exclusive")
    if mode not in ("exclusive", "shared"):
        raise ErrorAnswer(400, "M_BAD_JSON", "'mode' is exclusive or shared")
    reason = optional_string_field(data, "reason", max_len=500)  # one line, no controls
    ttl = data.get("ttl_seconds", DEFAULT_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
        raise ErrorAnswer(400, "M_BAD_JSON", f"'ttl_seconds' is from {MIN_TTL} to {MAX_TTL}")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'force' must be true or false")
    try:
        result = await service(context).claim(
            project, me.user_id, patterns, mode == "exclusive", reason or None, ttl * 1000, force
        )
    except TooMuchWork:
        raise ErrorAnswer(413, "M_TOO_LARGE", TOO_MUCH) from None
    if result.conflicts:
        conflicts = await _shown(context, result.conflicts)
        first = conflicts[0]
        why = f" ({first['reason']})" if first["reason"] else ""
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        message = (
            f"{first['pattern']} is claimed by {first['holder_name']}{why} until "
            f"{until(first['expires_ts'])}{more}; --force takes it over"
        )
        return web.json_response(
            {"errcode": "AC_CLAIM_CONFLICT", "error": message, "conflicts": conflicts},
            status=409,
        )
    return ok(
        {
            "claims": await _shown(context, result.stored),
            "taken": await _shown(context, result.taken),
        }
    )


@routes.get("/claims")
async def list_claims(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    project = _project(request.query.get("project"))
    mine = query_bool(request, "mine", False)
    claims = await service(context).active(project)
    if mine:
        claims = [c for c in claims if c.user_id == me.user_id]
    return ok({"project": project, "claims": await _shown(context, claims)})


@routes.post("/claims/check")
async def check_paths(request: web.Request) -> web.Response:
    """Which of ``paths`` others' claims cover (``others: false``: anyone's)."""
    context, me = ctx(request), caller(request)
    data = await json_body(request, 4 * 1024 * 1024)
    project = _project(data.get("project"))
    paths = data.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ErrorAnswer(400, "M_BAD_JSON", "'paths' must be a list of strings")
    if len(paths) > MAX_PATHS:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"at most {MAX_PATHS} paths at a time")
    if any(len(p) > MAX_PATH for p in paths):
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"a path is at most {MAX_PATH} characters")
    others = data.get("others", True)
    if not isinstance(others, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'others' must be true or false")
    claims = await service(context).active(project)
    if others:
        claims = [c for c in claims if c.user_id != me.user_id]
    try:
        hits = await bounded(lambda budget: covering(claims, paths, budget))
    except TooMuchWork:
        raise ErrorAnswer(413, "M_TOO_LARGE", TOO_MUCH) from None
    shown = await _shown(context, [c for _, c in hits])
    for (path, _), entry in zip(hits, shown, strict=True):
        entry["path"] = path
    return ok({"project": project, "conflicts": shown})


@routes.post("/claims/release")
async def release(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    data = await json_body(request, 1024 * 1024)
    project = _project(data.get("project"))
    everything = data.get("all", False)
    if not isinstance(everything, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'all' must be true or false")
    if everything == ("patterns" in data):
        raise ErrorAnswer(400, "M_BAD_JSON", "give either 'patterns' or 'all': true")
    patterns = None if everything else _patterns(data.get("patterns"))
    gone = await service(context).release(project, me.user_id, patterns)
    return ok({"released": await _shown(context, gone)})
