"""Others' words as Rich ``Text``: inert, whatever they contain.

Every string that came from someone else (bodies, names, room labels, topics, claim reasons) is
cleaned by :mod:`agent_chat.safe_text` (escape sequences, control, bidi and invisible characters
removed) and then *appended* to a ``Text`` as plain text. Nothing here builds a markup string,
so ``[b]``, ``[link=...]`` or ``[@click=...]`` in a body stay the characters they are.
"""

from __future__ import annotations

from rich.text import Text

from .. import render
from ..safe_text import clean, one_line
from .session import sender_kind, text_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject

#: How each kind of sender looks: agents, humans and the service never look alike.
KIND_STYLE = {"agent": "bold cyan", "human": "bold green", "service": "bold magenta"}
KIND_MARK = {"agent": "", "human": "", "service": " [service]"}
PREFIX_STYLE = {
    "STATUS": "bold cyan",
    "DONE": "bold green",
    "BLOCKED": "bold black on yellow",
    "ALERT": "bold white on red",
}
SELF_STYLE = "bold yellow"


def sender_label(msg: JSONObject) -> str:
    """Who wrote it, as every human-facing output of the client says it
    (:func:`agent_chat.render.sender_label`: a human's display name always with their user id,
    the service by its id, never by a name anyone can take)."""
    return render.sender_label(msg.get("sender"), msg.get("sender_name"))


def sender(msg: JSONObject, me: str) -> Text:
    """The sender, styled by kind, with a textual mark (colour is not the only cue)."""
    user_id = msg.get("sender")
    if user_id == me and me:
        return Text(sender_label(msg), style=SELF_STYLE)
    kind = sender_kind(user_id)
    out = Text(sender_label(msg), style=KIND_STYLE[kind])
    mark = KIND_MARK[kind]
    if mark:
        out.append(mark, style="dim")
    return out


def body(msg: JSONObject, nick: str = "") -> Text:
    """The body: its prefix tag styled, the rest plain (newlines kept, nothing else)."""
    text = clean(msg.get("body") or "")
    prefix = msg.get("prefix")
    out = Text()
    if isinstance(prefix, str) and prefix in PREFIX_STYLE:
        tag = f"[{prefix}]"
        stripped = text.lstrip()
        if stripped[: len(tag)].upper() == tag:
            text = stripped[len(tag) :]
        out.append(tag, style=PREFIX_STYLE[prefix])
        if text and not text.startswith(" "):
            out.append(" ")
    out.append(text)
    if nick:
        out.highlight_words([f"@{nick}"], style="reverse", case_sensitive=False)
    return out


def message(msg: JSONObject, me: str, nick: str = "", room: bool = False) -> Text:
    """One timeline entry: ``14:32 BlueLake: [STATUS] body`` (``↳`` for a thread reply,
    the room's label first with ``room``)."""
    out = Text(render.clock(msg.get("ts")), style="dim")
    out.append(" ")
    if room:
        out.append(one_line(msg.get("room") or msg.get("room_id") or "?"), style="bold blue")
        out.append(" ")
    if msg.get("thread_id"):
        out.append("↳ ", style="bold blue")
    out.append_text(sender(msg, me))
    out.append(": ")
    if msg.get("urgent") is True and msg.get("sender") != me:
        out.append("! ", style="bold red")
    out.append_text(body(msg, nick))
    return out


def room_entry(label: str, count: int, urgent: bool, invited: bool = False) -> Text:
    """A room list line: ``#general  3`` (``3!`` when something urgent is unread)."""
    out = Text(one_line(label), style="bold" if count else "")
    if invited:  # reading it accepts the invitation
        out.append(" ✉", style="bold yellow")
    if count:
        out.append(f" {count}", style="bold reverse red" if urgent else "bold reverse")
        if urgent:
            out.append("!", style="bold red")
    elif urgent:
        out.append(" !", style="bold red")
    return out


def plain(value: object) -> Text:
    """Someone else's one-line text (a topic, a reason) as an inert Text."""
    return Text(one_line(value))


def topic_line(label: str, topic: object) -> Text:
    out = Text(one_line(label), style="bold")
    t = one_line(topic)
    if t:
        out.append("  ")
        out.append(t, style="dim")
    return out


def claim_line(c: JSONObject, me: str) -> Text:
    """``src/api/** BlueLake (exclusive) until 14:05: reason``, yours marked."""
    mine = c.get("holder") == me
    out = Text("★ " if mine else "  ", style="bold yellow")
    out.append(one_line(c.get("pattern") or "?"), style="bold")
    out.append(" ")
    holder = {"sender": c.get("holder"), "sender_name": c.get("holder_name")}
    out.append_text(sender(holder, me))
    out.append(f" ({one_line(c.get('mode') or '?')})", style="dim")
    expires = c.get("expires_ts")
    out.append(f" until {render.clock(expires)}", style="dim")
    reason = text_of(c.get("reason"))
    if reason:
        out.append(": ")
        out.append(one_line(reason))
    return out


#: How each presence state looks (the words are the server's; the colour only helps).
STATE_STYLE = {
    "working": "bold green",
    "idle · wakeable": "cyan",
    "idle · deaf": "yellow",
    "gone": "dim",
}
#: Sessions listed per agent in the agents panel (the liveliest first).
SESSIONS_SHOWN = 2


def sessions_of(presence: object) -> list[JSONObject]:
    """An agent's sessions from a ``presence`` object (``/who``, ``/presence``), liveliest
    first, as the server orders them."""
    if not isinstance(presence, dict):
        return []
    found = presence.get("sessions")
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def session_line(s: JSONObject) -> Text:
    """``working · claude on devbox in webshop since 14:02``: the state styled, the rest
    (the CLI, host and repository the agent reported) inert."""
    from ..presence import session_text

    state = one_line(s.get("state") or "?")
    rest = session_text(s)
    out = Text(state, style=STATE_STYLE.get(state, "bold"))
    out.append(rest[len(state) :] if rest.startswith(state) else " " + rest)
    return out


def member_line(m: JSONObject, me: str, rooms: int = 0) -> Text:
    """An agents-panel entry: name (by kind), kind, last active; for an agent, under it,
    each session's presence state, CLI and since when (``no session seen`` without one)."""
    who = {"sender": m.get("user_id"), "sender_name": m.get("display_name") or m.get("nick")}
    out = sender(who, me)
    kind = one_line(m.get("kind") or sender_kind(m.get("user_id")))
    ago = render.ago(m.get("last_active"))
    out.append(f"  {kind}, ", style="dim")
    out.append("never active" if ago == "never" else "active " + ago, style="dim")
    if rooms:
        out.append(f", {rooms} room{'s' if rooms != 1 else ''}", style="dim")
    sessions = sessions_of(m.get("presence"))
    if "presence" not in m or (m.get("kind") != "agent" and not sessions):
        return out  # a person, or a bot (the service, a webhook) that runs no session
    if not sessions:
        out.append("\n  no session seen", style="dim")
    for s in sessions[:SESSIONS_SHOWN]:
        out.append("\n  ")
        out.append_text(session_line(s))
    if len(sessions) > SESSIONS_SHOWN:
        out.append(f"\n  +{len(sessions) - SESSIONS_SHOWN} more", style="dim")
    return out


def presence_state(m: JSONObject) -> str:
    """The liveliest session's state (``gone`` without one): what the panel sorts by."""
    presence = m.get("presence")
    state = presence.get("state") if isinstance(presence, dict) else None
    return state if isinstance(state, str) else "gone"


#: Receipt stages, in order (``GET /receipts``); from ``shown`` on, a recipient has seen it.
STAGE_ORDER = ("counted", "shown", "woken", "read")


def recipients_of(answer: object) -> list[JSONObject]:
    """A receipts answer's recipients, the service left out (a room member that reads
    nothing: counting it would keep every room message short of ``read``)."""
    if not isinstance(answer, dict):
        return []
    found = answer.get("recipients")
    rows = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
    return [r for r in rows if sender_kind(r.get("user_id")) != "service"]


def _at_least(r: JSONObject, stage: str) -> bool:
    got = r.get("stage")
    return got in STAGE_ORDER and STAGE_ORDER.index(got) >= STAGE_ORDER.index(stage)


def all_reached(answer: object, stage: str) -> bool:
    """Every recipient of the receipts ``answer`` reached ``stage`` (True without any)."""
    return all(_at_least(r, stage) for r in recipients_of(answer))


def stages(answer: object) -> Text | None:
    """One of our messages' stages, inline: ``✓ read`` (one recipient), ``✓ shown 2 · read 1
    of 3`` (several), ``✓ sent`` (nobody shown it yet); None without recipients."""
    rows = recipients_of(answer)
    if not rows:
        return None
    shown = sum(1 for r in rows if _at_least(r, "shown"))
    read = sum(1 for r in rows if _at_least(r, "read"))
    if len(rows) == 1:
        word = one_line(rows[0].get("stage") or "?")
        word = "sent" if word == "counted" else word
        style = "green" if read else "cyan" if shown else "dim"
        return Text(f"✓ {word}", style=style)
    if not shown:
        return Text(f"✓ sent to {len(rows)}", style="dim")
    out = Text(f"✓ shown {shown}", style="cyan")
    if read:
        out.append(f" · read {read}", style="green")
    out.append(f" of {len(rows)}", style="dim")
    return out


def stages_detail(answer: object, limit: int = 4) -> str:
    """Per recipient, for the status bar when one of our messages is highlighted:
    ``BlueLake: read 14:02:11; GreenCastle: shown 14:01:50 (claude)``."""
    from ..receipts import recipient_line

    rows = recipients_of(answer)
    lines = [recipient_line(r) for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"+{len(rows) - limit} more")
    return "; ".join(lines)
