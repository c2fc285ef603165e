"""``ac search``: the homeserver's full-text search over the rooms you are in, printed like
``ac listen`` (one record per message, control characters removed; ``--json`` raw). Hits that
are a room's oldest unread messages are marked read (``shown_read``)."""

from __future__ import annotations

import re
import time

from . import render
from .context import Context, out, use_color
from .errors import AcError, ApiError, target_not_found
from .targets import argv_text, normalize_target

#: The longest query the server takes, in characters.
MAX_QUERY = 256

_AGO = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> int:
    """``30m``, ``12h``, ``2d``, ``1w`` (that long ago) or ``YYYY-MM-DD`` /
    ``YYYY-MM-DDTHH:MM`` (local time) → milliseconds since 1970. ValueError otherwise."""
    value = text.strip()
    match = _AGO.match(value)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return int(((time.time() if now is None else now) - seconds) * 1000)
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return int(time.mktime(time.strptime(value, fmt)) * 1000)
        except (ValueError, OverflowError):
            continue
    raise ValueError(f"{text!r} is not a time: use 30m, 12h, 2d, 1w or a date YYYY-MM-DD")


def search(
    ctx: Context,
    query: str,
    *,
    room: str | None,
    sender: str | None,
    since: int | None,
    limit: int,
    as_json: bool,
) -> int:
    """Print the messages matching ``query``, newest first."""
    query = argv_text(query)
    if not query.strip():
        raise AcError("the query is empty: give words to search for")
    if len(query) > MAX_QUERY:
        raise AcError(f"the query is {len(query)} characters; at most {MAX_QUERY}")
    target = normalize_target(room) if room else None
    params: dict[str, object] = {"q": query, "limit": limit}
    if target:
        params["room"] = target
    if sender:
        params["from"] = sender
    if since is not None:
        params["since"] = since
    try:
        client = ctx.authed()
        answer = client.call("GET", "/search", query=params)
    except ApiError as e:
        if e.status == 404 and target:
            raise target_not_found(e, target, join_hint=False) from None
        raise
    results = answer.get("results")
    messages = [m for m in results if isinstance(m, dict)] if isinstance(results, list) else []
    color = not as_json and use_color()
    for msg in messages:
        out(render.message_json(msg) if as_json else render.message_line(msg, color))
    if not messages and not as_json:
        out("(no messages found)")
    from .shown_read import mark_shown_read

    mark_shown_read(client, messages)  # hits' bodies were shown: their senders see read
    return 0
