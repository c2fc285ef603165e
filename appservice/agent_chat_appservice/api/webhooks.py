"""Inbound webhooks: ``POST /hooks/{hook_id}`` posts a CI or monitoring message into a room.

The hook id is an unguessable secret (never logged: errors name the route, not the path); a
hook created with signing also checks GitHub's ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw
body). A delivery posts at most once: an unsigned hook knows a delivery by its id
(``X-GitHub-Delivery``, ``X-Delivery-Id`` or the payload's ``id``); a signed hook by the signed
bytes themselves, because GitHub's scheme signs neither the delivery id nor a time, so a
captured delivery replayed under a new id is still the same bytes. In state-change mode a
payload carries ``key`` and ``state`` and posts only when the state for that key changes, so a
red build alerts once, not on every run.

Each hook posts at most ``webhook_burst`` messages, then ``webhook_per_minute`` (429 with
Retry-After beyond), and a message is held to the 32 KiB limit of any message (413). Caller
``html`` is ignored: Element shows the HTML derived from ``text``, as for any message, so
agents (who read ``text``) and people (who see the HTML) always read the same thing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from ..db import Identity, Webhook
from ..errors import ErrorAnswer
from ..limits import enforce
from ..messaging import MAX_BODY, MAX_SEND_JSON, post_message
from .base import ctx, ok, parse_json, public, read_body, routes

PAYLOAD_HELP = 'send JSON like {"text": "build failed", "urgent": true}'


@routes.post("/hooks/{hook_id}")
@public
async def hook_post(request: web.Request) -> web.Response:
    context = ctx(request)
    raw = await read_body(request, MAX_SEND_JSON)  # a 32 KiB text, JSON-escaped
    hook = await Webhook.get(request.match_info["hook_id"])
    if hook is None:
        raise ErrorAnswer(404, "M_NOT_FOUND", "no such webhook: check the URL")
    await enforce(context.limits.webhooks, "hook:" + hook.name, "posts from this webhook")
    if hook.signing_secret:
        _check_signature(hook.signing_secret, raw, request.headers.get("X-Hub-Signature-256"))
    payload = parse_json(raw, "the payload", PAYLOAD_HELP)
    if not isinstance(payload, dict):
        raise ErrorAnswer(400, "M_BAD_JSON", f"the payload must be a JSON object: {PAYLOAD_HELP}")
    text, urgent = payload.get("text"), payload.get("urgent", False)
    if not isinstance(text, str) or not text.strip():
        raise ErrorAnswer(400, "M_BAD_JSON", f"'text' is missing or empty: {PAYLOAD_HELP}")
    if not isinstance(urgent, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'urgent' must be true or false")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ErrorAnswer(400, "M_BAD_JSON", "'text' is not valid Unicode") from None
    if size > MAX_BODY:
        raise ErrorAnswer(
            413,
            "M_TOO_LARGE",
            f"'text' is {size:,} bytes of UTF-8; a message is at most {MAX_BODY // 1024} KiB "
            f"({MAX_BODY:,} bytes): shorten it or link to the full output",
        )
    if urgent and "[ALERT]" not in text.upper() and "!URGENT" not in text.upper():
        text = "[ALERT] " + text

    delivery = (
        request.headers.get("X-GitHub-Delivery")
        or request.headers.get("X-Delivery-Id")
        or (payload.get("id") if isinstance(payload.get("id"), str) else None)
    )
    if delivery is not None and (not delivery or len(delivery) > 128):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "the delivery id must be 1-128 characters")
    if hook.signing_secret:  # the signed bytes are the delivery (see the module's docstring)
        delivery = "sha256:" + hashlib.sha256(raw).hexdigest()
    txn = "hook-" + (delivery or secrets.token_hex(12))

    change: tuple[str, str] | None = None  # (key, state) of a state-change webhook
    previous_state: str | None = None
    if hook.state_change:
        key, state = payload.get("key"), payload.get("state")
        if not isinstance(key, str) or not key or not isinstance(state, str) or not state:
            raise ErrorAnswer(
                400,
                "M_BAD_JSON",
                "this webhook posts on state changes: send 'key' (e.g. the workflow) and "
                "'state' (e.g. failing or passing) with the text",
            )
        change = (key, state)
        previous_state = await hook.state(key)

    if delivery is not None and not await hook.claim_delivery(delivery):
        event_id = await hook.delivery_event(delivery)
        return ok({"posted": False, "reason": "duplicate delivery", "event_id": event_id})
    if change is not None and not await hook.swap_state(*change):
        if delivery is not None:
            await hook.finish_delivery(delivery, None)
        return ok({"posted": False, "reason": f"state of {change[0]!r} is still {change[1]!r}"})
    try:
        event_id = await post_message(context, hook.user_id, hook.room_id, text, txn)
    except Exception:
        if delivery is not None:
            await hook.finish_delivery(delivery, None)
        if change is not None:
            await hook.restore_state(change[0], previous_state)
        raise
    if delivery is not None:
        await hook.finish_delivery(delivery, event_id)
    bot = await Identity.get(hook.user_id)
    if bot is not None:  # the hook's bot is active when it posts, as any caller is
        await context.touch(bot)
    answer: dict[str, object] = {"posted": True, "event_id": event_id}
    if "html" in payload:
        answer["ignored"] = ["html"]  # Element shows the HTML of 'text'
    return ok(answer, status=201)


def _check_signature(secret: str, raw: bytes, header: str | None) -> None:
    if not header:
        raise ErrorAnswer(
            401,
            "M_MISSING_TOKEN",
            "this webhook needs an X-Hub-Signature-256 header: "
            "sha256=<hex HMAC-SHA256 of the raw body with the hook's signing secret>",
        )
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header.strip().encode(), expected.encode()):
        raise ErrorAnswer(
            401,
            "M_FORBIDDEN",
            "X-Hub-Signature-256 does not match: sign the exact bytes you send, "
            "with the signing secret shown when the webhook was created",
        )
