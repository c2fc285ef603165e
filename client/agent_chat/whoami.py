"""Who ``ac`` is, in words: ``ac whoami``, the identity lines of ``ac config``, and what to do
when the server rejects the token.

Which identity a plain command uses (:func:`agent_chat.identity.current`):
``AGENT_CHAT_TOKEN`` (its token, no files) > ``AGENT_CHAT_NICK`` > config.toml's
``identity.nick`` > this home's default for the server. The default is the first identity
stored for a server; ``ac register``/``ac login`` change it only with ``--default``.

Imported lazily: the ``ac notify`` hot path never loads this module.
"""

from __future__ import annotations

import sys

from . import identity as ident
from .safe_text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Settings
    from .context import Context
    from .identity import Identity
    from .shapes import IdentityRecord, WhoamiReport

#: Why a plain command uses the identity it does (``source`` in JSON).
SOURCES = ("AGENT_CHAT_TOKEN", "AGENT_CHAT_NICK", "config.toml", "default")


def source(settings: Settings) -> str:
    """Where the identity in use comes from: one of :data:`SOURCES`."""
    if settings.env_token:
        return "AGENT_CHAT_TOKEN"
    if settings.env_nick:
        return "AGENT_CHAT_NICK"
    if settings.config_nick:
        return "config.toml"
    return "default"


def why(settings: Settings) -> str:
    """:func:`source` as a phrase."""
    kind = source(settings)
    if kind == "AGENT_CHAT_TOKEN":
        return "AGENT_CHAT_TOKEN is set: its token is the identity (no stored one is used)"
    if kind == "AGENT_CHAT_NICK":
        return f"AGENT_CHAT_NICK={one_line(settings.env_nick or '')}"
    if kind == "config.toml":
        return f"identity.nick = {one_line(settings.config_nick or '')} in config.toml"
    return "this home's default identity (neither AGENT_CHAT_NICK nor identity.nick is set)"


def _record(found: Identity) -> IdentityRecord:
    return {"nick": found.nick, "user_id": found.user_id, "kind": found.kind}


def _label(found: Identity) -> str:
    return "{} ({}, {})".format(
        one_line(found.nick or found.key or "?"),
        one_line(found.user_id or "?"),
        one_line(found.kind or "agent"),
    )


def report(settings: Settings) -> tuple[WhoamiReport, Identity | None]:
    """The facts (JSON): the identity in use, its ``source``, the default, the others; and
    the stored identity in use, if any."""
    data = ident.load_credentials(settings.home)
    url = settings.server_url
    found = None if settings.env_token else ident.stored_identity(data, url, settings.nick)
    default = ident.default_key(data, url)
    everyone = ident.stored_identities(data, url)
    by_key = {i.key: i for i in everyone}
    default_identity = by_key.get(default) if default is not None else None
    in_use: IdentityRecord | dict[str, str] | None
    if settings.env_token:
        in_use = {"token": "AGENT_CHAT_TOKEN"}
    elif found is not None:
        in_use = _record(found)
    else:
        in_use = None
    return {
        "identity": in_use,
        "source": source(settings),
        "registered": settings.env_token is not None or found is not None,
        "wanted_nick": None if settings.env_token else settings.nick,
        "server": url,
        "server_source": settings.server_source,
        "default": _record(default_identity) if default_identity is not None else None,
        "others": [
            {**_record(i), "default": i.key == default}
            for i in everyone
            if found is None or i.key != found.key
        ],
    }, found


def identity_line(settings: Settings, found: Identity | None) -> str:
    """The identity a plain command uses, as ``ac whoami`` and ``ac config`` say it."""
    if settings.env_token:
        return "the token in AGENT_CHAT_TOKEN ('ac status' asks the server whose it is)"
    if found is not None:
        return _label(found)
    if settings.nick:
        return f"{one_line(settings.nick)}, not registered yet (the first command registers it)"
    return "none yet (the first command registers a name the server picks)"


def whoami(ctx: Context, *, as_json: bool) -> int:
    """``ac whoami``: which identity a plain command would use right now, and why."""
    s = ctx.settings
    facts, found = report(s)
    if as_json:
        from . import render

        sys.stdout.write(render.dumps(facts) + "\n")
        return 0
    lines = [
        f"identity: {identity_line(s, found)}",
        f"why:      {why(s)}",
        f"server:   {s.server_url} ({s.server_source})",
    ]
    others = facts["others"]
    if others:
        names = ", ".join(
            "{} ({}{})".format(
                one_line(o["nick"] or "?"),
                one_line(o["kind"] or "agent"),
                ", the default" if o["default"] else "",
            )
            for o in others
        )
        how = (  # the token overrides AGENT_CHAT_NICK: naming a nick alone would change nothing
            "unset AGENT_CHAT_TOKEN to use one (AGENT_CHAT_NICK=NAME picks it)"
            if s.env_token is not None
            else "use one with AGENT_CHAT_NICK=NAME"
        )
        lines.append(f"others:   {names}; {how}")
    else:
        lines.append("others:   none stored for this server")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def rejected(settings: Settings, found: Identity | None) -> str:
    """What to say when the server rejects the token in use (HTTP 401), and what to do."""
    if settings.env_token:
        return (
            "the server rejects the token in AGENT_CHAT_TOKEN (unknown or revoked): check "
            "AGENT_CHAT_TOKEN and AGENT_CHAT_SERVER; registering cannot fix an env token "
            "(a bot's comes from 'agent-chat-server bot add')"
        )
    name = one_line((found.nick or found.key or "") if found is not None else "") or "NAME"
    if found is not None and found.kind == "bot":
        return (
            f"the server rejects the stored token of the bot {name} (unknown or revoked): "
            "bots cannot register or log in; ask the operator for a new token "
            "('agent-chat-server bot add')"
        )
    if found is not None and found.kind == "human":
        return (
            f"the server rejects the stored token of {name} (revoked, or the server was "
            f"reset): log in again: ac login {name}"
        )
    other = (
        "another name in AGENT_CHAT_NICK"
        if settings.env_nick
        else "another name: ac register NAME --default"
    )
    return (
        f"the server rejects the stored token of {name} (revoked, or the server was reset): "
        f"register again: ac register {name} (if the name is taken, {other})"
    )
