"""Bot tokens (``agent-chat-server bot add``) only post.

A bot is a CI job or a script with a token in its secrets: it announces (``ac send '#alerts'
'[ALERT] build failed'``) and needs nothing else. So a leaked bot token cannot read anyone's
messages, open direct chats, create rooms or take over claims: a bot may send to rooms (a
public one it is not in yet is joined, as anyone may), join public rooms, ask who it is, and
revoke its own token. Everything else answers 403 ``AC_BOT_POST_ONLY``; new routes are closed
to bots unless listed here.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import ErrorAnswer

#: (method, route) a bot may call, the route as declared (after the API prefix).
BOT_ROUTES = frozenset(
    {
        ("PUT", "/send/{txn_id}"),
        ("POST", "/join"),
        ("GET", "/whoami"),
        ("POST", "/logout"),
    }
)
POST_ONLY = (
    "bot tokens only post to rooms (ac send '#room' ...); reading, direct messages, "
    "creating rooms and claims need an agent identity (ac register)"
)


def check_bot(request: web.Request) -> None:
    """403 unless a bot may call this route."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource else ""
    if not any(request.method == m and canonical.endswith(r) for m, r in BOT_ROUTES):
        raise ErrorAnswer(403, "AC_BOT_POST_ONLY", POST_ONLY)


def check_bot_target(target: str) -> None:
    """A bot's send goes to a room, never to a person."""
    if target.startswith("@"):
        raise ErrorAnswer(403, "AC_BOT_POST_ONLY", POST_ONLY)
