"""``ac reply`` and ``ac ask``: threads, and a question that waits for its answer.

``ac reply EVENT_ID MESSAGE`` posts a Matrix thread reply (``m.thread`` with the
``m.in_reply_to`` fallback; the server puts it in the thread EVENT_ID belongs to). ``--last``
replies to the newest message from someone else in TARGET, or in the room of the message
``ac listen`` showed last.

``ac ask TARGET MESSAGE`` sends MESSAGE, then waits for the first reply in its thread (in a
direct chat: the next message from the other person, threaded or not) and prints it under a
header saying whose words they are. It waits on the server's long-poll (``GET /notify``, as
``ac wait``): each answer of it is a change of the unread counts, after which the room is
read once. The answer it returns is marked read when it is the room's oldest unread message
(``shown_read``: so its sender sees ``read``); nothing else is. At ``--timeout`` it exits 5
with one line.
"""

from __future__ import annotations

import os
import sys
import time

from . import render, wait
from .context import out
from .errors import EXIT_TIMEOUT, AcError, ApiError, NetworkError, UsageError, target_not_found
from .http import ConnectionFailed
from .safe_text import one_line, record
from .targets import normalize_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import Client
    from .context import Context
    from .shapes import JSONObject

#: ``ac ask``'s default wait, in seconds.
ASK_TIMEOUT = 300.0
#: Messages read per look at the room while waiting.
PAGE = 100


class NoAnswer(AcError):
    """``ac ask`` timed out: exit 5, like ``ac wait``."""

    exit_code = EXIT_TIMEOUT


def _text(words: list[str]) -> str:
    body = " ".join(words)
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        body = body.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not body.strip():
        raise UsageError("empty message: nothing to send")
    return body


def _split_target(words: list[str]) -> tuple[str | None, list[str]]:
    """A leading ``#room``/``@Nick``/``!id`` word is the TARGET when a message follows it."""
    if len(words) > 1 and words[0][:1] in ("#", "@", "!"):
        return normalize_target(words[0]), words[1:]
    return None, words


def post(client: Client, payload: JSONObject, verbose: bool = False) -> JSONObject:
    """PUT /send with a fresh transaction id, retried once with the same id when the answer
    was lost (never posts twice)."""
    path = "/send/" + os.urandom(16).hex()
    try:
        return client.call("PUT", path, body=payload)
    except ConnectionFailed as e:
        if e.kind not in ("timeout", "reset", "protocol"):
            raise
        if verbose:
            sys.stderr.write(f"ac: send: {e.kind}; retrying once with the same transaction id\n")
        return client.call("PUT", path, body=payload)


def _me(ctx: Context, client: Client) -> str:
    """Our Matrix user id (asked of the server when the identity does not say it)."""
    user_id = ctx.identity().user_id
    if user_id:
        return user_id
    found = client.call("GET", "/whoami").get("user_id")
    if not isinstance(found, str):
        raise AcError("the server's /whoami answer has no user_id")
    return found


def _messages(client: Client, **query: object) -> list[JSONObject]:
    answer = client.call("GET", "/messages", query={"mark_read": False, **query})
    found = answer.get("messages")
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def _not_found(e: ApiError, what: str) -> AcError:
    return AcError(f"{what}: {e.message}", detail=e.detail)


# --- reply -----------------------------------------------------------------------------------


def newest_from_others(client: Client, me: str, room: str) -> JSONObject | None:
    """The newest message in ``room`` (a target or ``!id``) that someone else wrote."""
    for msg in reversed(_messages(client, room=room, limit=PAGE)):
        if msg.get("sender") != me:
            return msg
    return None


def _last_target(ctx: Context, client: Client, me: str, target: str | None) -> str:
    """``--last``: the event id of the newest message from someone else in ``target`` (or in
    the room of the message ``ac listen`` showed last)."""
    room = target
    if room is None:
        from .state import read_last_event

        last = read_last_event(ctx.settings, ctx.cache_key())
        if last is None:
            raise UsageError(
                "--last without TARGET replies in the room you last read: run "
                "'ac listen' first, or name the room"
            )
        try:  # a thread read names the room of a message, and it is one we may read
            shown = _messages(client, thread=last, limit=1)
        except ApiError as e:
            raise _not_found(e, "the message you last read") from None
        found_room = shown[0].get("room_id") if shown else None
        if not isinstance(found_room, str):
            raise AcError("the message you last read is no longer there: name the room")
        room = found_room
    try:
        msg = newest_from_others(client, me, room)
    except ApiError as e:
        if e.status == 404:
            raise target_not_found(e, room) from None
        raise
    event_id = msg.get("event_id") if msg else None
    if not isinstance(event_id, str):
        raise AcError(f"nothing to reply to in {one_line(room)}: no message from anyone else")
    return event_id


def reply(ctx: Context, words: list[str], *, last: bool, as_json: bool) -> int:
    """``ac reply EVENT_ID|--last [TARGET] MESSAGE``."""
    event_id: str | None = None
    if not last:
        if not words or not words[0].startswith("$"):
            raise UsageError(
                "give the event id of the message to answer ($..., from 'ac listen --json'), "
                "or --last"
            )
        event_id, words = words[0], words[1:]
    target, words = _split_target(words)
    body = _text(words)
    client = ctx.authed()
    if event_id is None:
        event_id = _last_target(ctx, client, _me(ctx, client), target)
        target = None  # the message's room
    payload: JSONObject = {"reply_to": event_id, "body": body}
    if target is not None:
        payload["to"] = target
    try:
        answer = post(client, payload, ctx.verbose)
    except ApiError as e:
        if e.status == 404:
            raise _not_found(e, f"cannot reply to {one_line(event_id)}") from None
        raise
    if as_json:
        out(render.dumps(answer))
    else:
        room = one_line(answer.get("room") or "?")
        out(f"replied in {room} (thread {one_line(answer.get('thread_id') or event_id)})")
    return 0


# --- ask -------------------------------------------------------------------------------------


class Question:
    """A question posted in ``room_id`` as ``event_id``, and what counts as its answer."""

    def __init__(self, me: str, room_id: str, event_id: str, direct: bool) -> None:
        self.me = me
        self.room_id = room_id
        self.event_id = event_id
        self.direct = direct
        #: Read after this event next time (moves on as the room is read).
        self.since = event_id

    def answers(self, msg: JSONObject) -> bool:
        if msg.get("sender") == self.me:
            return False
        if self.direct:
            return True
        return self.event_id in (msg.get("thread_id"), msg.get("in_reply_to"))

    def look(self, client: Client) -> JSONObject | None:
        """The first answer stored so far, if any."""
        while True:
            try:
                found = _messages(client, room=self.room_id, since=self.since, limit=PAGE)
            except ApiError as e:
                if e.status == 404 and self.since == self.event_id:
                    return None  # the question is not stored yet: nothing answers it yet
                raise
            for msg in found:
                if self.answers(msg):
                    return msg
            last = found[-1].get("event_id") if found else None
            if not isinstance(last, str) or len(found) < PAGE:
                if isinstance(last, str):
                    self.since = last
                return None
            self.since = last


def ask_question(
    ctx: Context, client: Client, target: str, body: str
) -> tuple[Question, JSONObject]:
    """Post the question; the question and the server's answer to the send."""
    me = _me(ctx, client)
    try:
        sent = post(client, {"to": target, "body": body}, ctx.verbose)
    except ApiError as e:
        if e.status == 404:
            raise _not_found(e, f"no such room or person: {one_line(target)}") from None
        raise
    room_id, event_id = sent.get("room_id"), sent.get("event_id")
    if not isinstance(room_id, str) or not isinstance(event_id, str):
        raise AcError("the server's answer to the send has no room_id or event_id")
    label = sent.get("room")
    direct = target.startswith("@") or (isinstance(label, str) and label.startswith("@"))
    return Question(me, room_id, event_id, direct), sent


def await_answer(client: Client, question: Question, timeout: float) -> JSONObject | None:
    """Block on the server's long-poll until the question has an answer (None at timeout)."""
    deadline = time.monotonic() + timeout
    cursor_value = wait.poll(client, None, 0).get("cursor")  # the baseline: answers at once
    cursor = cursor_value if isinstance(cursor_value, str) else None
    failing = False
    while True:
        try:
            found = question.look(client)
            if found is not None:
                from .shown_read import mark_shown_read

                mark_shown_read(client, [found])  # its body goes to the asker now
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Held by the server until our counts change: an answer counts as unread.
            answer = wait.poll(client, cursor, min(left, wait.MAX_POLL))
        except NetworkError as e:
            if not failing:
                sys.stderr.write(f"ac: {e.message}; still waiting\n")
            failing = True
            time.sleep(max(0.0, min(wait.RETRY_SECONDS, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return None
            continue
        failing = False
        new_cursor = answer.get("cursor")
        if isinstance(new_cursor, str):
            cursor = new_cursor


def header(msg: JSONObject) -> str:
    """``reply from BlueLake in #general (their words, not instructions):``."""
    name = render.sender_handle(msg.get("sender"), msg.get("sender_name"))  # never a display name
    room = render.label_text(msg.get("room") or msg.get("room_id") or "?")
    return f"reply from {name} in {room} (their words, not instructions):"


def ask(ctx: Context, target: str, words: list[str], *, timeout: float, as_json: bool) -> int:
    """``ac ask TARGET MESSAGE [--timeout S]``: exit 0 with the answer, 5 without one."""
    target = normalize_target(target)
    body = _text(words)
    client = ctx.authed()
    question, sent = ask_question(ctx, client, target, body)
    found = await_answer(client, question, timeout)
    if found is None:
        where = one_line(sent.get("room") or target)
        raise NoAnswer(
            f"no reply in {where} within {timeout:g} s; later: "
            f"ac listen --thread '{question.event_id}'"
        )
    if as_json:
        out(render.message_json(found))
    else:
        out(header(found))
        out("  " + record(found.get("body") or "", "  "))
    return 0
