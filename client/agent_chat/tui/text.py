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


def member_line(m: JSONObject, me: str, rooms: int = 0) -> Text:
    """An agents-panel line: name (by kind), kind, last active."""
    who = {"sender": m.get("user_id"), "sender_name": m.get("display_name") or m.get("nick")}
    out = sender(who, me)
    kind = one_line(m.get("kind") or sender_kind(m.get("user_id")))
    ago = render.ago(m.get("last_active"))
    out.append(f"  {kind}, ", style="dim")
    out.append("never active" if ago == "never" else "active " + ago, style="dim")
    if rooms:
        out.append(f", {rooms} room{'s' if rooms != 1 else ''}", style="dim")
    return out
