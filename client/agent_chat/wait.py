"""``ac wait`` and the long-poll under ``ac listen --follow``: block until something new arrives.

Both sit on ``GET /notify?wait=S&since=CURSOR``: the server holds the request until the caller's
counts change (or ``S`` seconds pass) and answers with a new cursor and ``new: true`` when a
message arrived after the old one (a read changes the counts but is not news).

``ac wait`` returns (exit 0, printing the unread line) when something new arrives after it
started; what is already unread does not end it, unless ``--any``. On ``--timeout`` it exits
:data:`~agent_chat.errors.EXIT_TIMEOUT` (5) and prints nothing.

The loop guard, for hooks that wake an agent (``--session ID``): a small state file per
identity, filter and session (``$AGENT_CHAT_HOME/wait/``) keeps the cursor of the last wake, so

- a message that arrived between two runs wakes the next run at once, exactly once;
- nothing new, no wake (reads and the agent's own messages are not news);
- at most one wake per ``--min-interval`` seconds (default 10), unless something became urgent:
  two agents that DM each other cannot wake each other in a storm; a wake held back by the
  interval happens when it ends, if the news is still unread then;
- one waiter per session: a newer ``ac wait --session ID`` takes over, and the older one exits
  (5, no wake) when its long-poll next answers. Claude Code re-arms its wake hook after every
  turn while the previous one may still be waiting; without this a DM would wake it twice.

``AGENT_CHAT_WAIT_WHILE_PID=PID`` (set by the wake hook to the agent CLI's process): renew the
long-poll every :data:`WATCH_POLL` seconds and exit 5 once that process has ended, so a waiter
never outlives its session (Claude Code leaves background hooks running when it is killed).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from . import render, session_state
from .errors import EXIT_OK, EXIT_TIMEOUT, ApiError, NetworkError, UsageError
from .session_state import process_alive, watched_pid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .api import Client
    from .context import Context
    from .shapes import JSONObject

#: The longest single long-poll the server accepts.
MAX_POLL = 300.0
#: Extra seconds the HTTP client waits beyond the server's hold.
SLACK = 30.0
RETRY_SECONDS = 2.0
#: With AGENT_CHAT_WAIT_WHILE_PID: the longest poll between two looks at that process.
WATCH_POLL = 30.0
WAIT_DIR = "wait"
#: Headers naming the session a wake waiter serves, and its CLI (``api/presence.py``).
WAITER_HEADER, CLI_HEADER = "Agent-Chat-Waiter", "Agent-Chat-Cli"


def poll(
    client: Client, cursor: str | None, wait: float, filters: str | None = None
) -> JSONObject:
    """One long-poll: the /notify answer once the counts differ from ``cursor`` (at once
    without one), or after ``wait`` seconds. A cursor the server refuses (400) is dropped and
    a fresh state returned, so callers simply carry on from it."""
    query: dict[str, object] = {"filter": filters}
    if cursor is not None:
        query.update(since=cursor, wait=render.seconds_text(max(0.0, min(wait, MAX_POLL)), 3))
    try:
        answer = client.call("GET", "/notify", query=query, timeout=wait + SLACK)
    except ApiError as e:
        if e.status != 400 or cursor is None:
            raise
        # e.g. the server's key changed, or a session file from another server: start afresh
        answer = client.call("GET", "/notify", query={"filter": filters})
        answer["changed"], answer["new"] = True, False
    return answer


def next_change(client: Client, cursor: str | None, wait: float = MAX_POLL) -> str | None:
    """Block until the caller's counts change (at most ``wait`` s); the new cursor. Used by
    ``ac listen --follow``: the first call (no cursor) answers at once."""
    cursor_out = poll(client, cursor, wait).get("cursor")
    return cursor_out if isinstance(cursor_out, str) else None


def _urgent_rooms(answer: JSONObject) -> set[str]:
    unread = answer.get("unread")
    if not isinstance(unread, list):
        return set()
    return {
        str(u.get("room_id"))
        for u in unread
        if isinstance(u, dict) and u.get("urgent") is True and u.get("room_id")
    }


class SessionState(session_state.SessionState):
    """The loop guard's memory for one session (:mod:`agent_chat.session_state`), in JSON
    written by the ``json`` module."""

    def __init__(self, path: str | None) -> None:
        super().__init__(path, json.loads, json.dumps)


def _state_path(ctx: Context, token: str, filters: str | None, session: str) -> str:
    import hashlib  # here: it loads OpenSSL (~6 MiB), which `ac run` does not need

    key = "\n".join((ctx.cache_key(), hashlib.sha256(token.encode()).hexdigest(), str(filters)))
    digest = hashlib.sha256(f"{key}\n{session}".encode()).hexdigest()[:24]
    return str(ctx.settings.path(os.path.join(WAIT_DIR, digest + ".json")))


def _show(answer: JSONObject, fmt: str) -> str:
    entries = render.unread_entries(answer)
    if fmt == "json":
        text = render.notify_json(entries)
    elif fmt == "oneline":
        text = render.notify_oneline(entries)
    else:
        text = "\n".join(render.notify_lines(entries))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return text


def wait(
    ctx: Context,
    *,
    urgent: bool = False,
    dm: bool = False,
    timeout: float | None = None,
    fmt: str = "words",
    any_unread: bool = False,
    session: str | None = None,
    min_interval: float = 10.0,
) -> int:
    """``ac wait``: exit 0 with the unread line once something new arrives, 5 on timeout."""
    if timeout is not None and not 0 <= timeout < 1e9:
        raise UsageError("--timeout is a number of seconds, 0 or more")
    if not 0 <= min_interval <= 86400:
        raise UsageError("--min-interval is a number of seconds from 0 to 86400")
    if session is not None and not session.strip():
        raise UsageError("--session needs a non-empty ID")
    filters = ",".join(name for name, on in (("urgent", urgent), ("dm", dm)) if on) or None
    client = ctx.authed()
    deadline = None if timeout is None else time.monotonic() + timeout
    token = client.token or ""
    state = SessionState(_state_path(ctx, token, filters, session) if session else None)
    if session:
        state.waiter = f"{os.getpid()}-{os.urandom(6).hex()}"
        state.save()
        client.headers.update(_waiter_headers(session))  # its presence: idle · wakeable

    watch = watched_pid(os.environ.get("AGENT_CHAT_WAIT_WHILE_PID", ""))

    def remaining() -> float:
        return MAX_POLL if deadline is None else deadline - time.monotonic()

    cursor = state.cursor
    if cursor is None or any_unread:
        first = poll(client, None, 0, filters)  # network errors here: exit 2, said once
        if any_unread and render.unread_entries(first):
            return _wake(state, first, fmt, client)
        if cursor is None:
            first_cursor = first.get("cursor")
            cursor = first_cursor if isinstance(first_cursor, str) else None
            state.cursor, state.urgent = cursor, _urgent_rooms(first)
            state.save()
    answer = next_news(
        client,
        state,
        cursor,
        filters,
        remaining,
        min_interval if session else 0.0,
        MAX_POLL if watch is None else WATCH_POLL,
        stop=None if watch is None else lambda: not process_alive(watch),
    )
    return EXIT_TIMEOUT if answer is None else _wake(state, answer, fmt, client)


def next_news(
    client: Client,
    state: SessionState,
    cursor: str | None,
    filters: str | None,
    remaining: Callable[[], float],
    min_interval: float = 0.0,
    longest: float = MAX_POLL,
    stop: Callable[[], bool] | None = None,
    on_failure: Callable[[NetworkError | None], None] | None = None,
) -> JSONObject | None:
    """The loop guard's long-poll: block until something new arrives after ``cursor`` and
    return the server's answer (the caller records the wake), or None when ``remaining()``
    runs out, a newer waiter took ``state`` over, or ``stop()`` says so (checked after each
    poll of at most ``longest`` s). At most one wake per ``min_interval`` seconds since
    ``state.last_wake`` unless something became urgent. Network errors: ``on_failure(e)``
    once per outage (default: one line on stderr), ``on_failure(None)`` when it ends; it
    retries every :data:`RETRY_SECONDS`. Shared by ``ac wait`` and ``ac run``."""
    failing = False
    while remaining() > 0:
        try:
            answer = poll(client, cursor, min(remaining(), longest), filters)
        except NetworkError as e:
            if not failing:
                if on_failure is None:
                    sys.stderr.write(f"ac: {e.message}; still waiting\n")
                else:
                    on_failure(e)
            failing = True
            time.sleep(max(0.0, min(RETRY_SECONDS, remaining())))
            continue
        if failing and on_failure is not None:
            on_failure(None)
        failing = False
        if state.superseded():
            return None  # a newer waiter for this session carries on
        if stop is not None and stop():
            return None  # e.g. the session it would wake is gone
        if answer.get("new") is True:
            fresh_urgent = _urgent_rooms(answer) - state.urgent
            hold = state.last_wake + min_interval - time.time()
            if hold > 0 and not fresh_urgent:
                # Too soon after the last wake: wait the interval out, then look again.
                if hold >= remaining():
                    time.sleep(max(0.0, remaining()))
                    return None  # the news stays new for the next run
                time.sleep(hold)
                if state.superseded():
                    return None
                continue  # same cursor: the next poll answers at once if it is still news
            return answer
        new_cursor = answer.get("cursor")
        if isinstance(new_cursor, str):
            cursor = new_cursor
        if answer.get("changed") is True:  # a read, a leave...: the new baseline
            state.cursor, state.urgent = cursor, _urgent_rooms(answer)
            state.save()
    return None


def record_wake(state: SessionState, answer: JSONObject) -> None:
    """Remember a wake: its cursor (what is news next time), its time (the interval), and
    the rooms urgent then (what counts as newly urgent)."""
    cursor = answer.get("cursor")
    state.cursor = cursor if isinstance(cursor, str) else state.cursor
    state.last_wake = time.time()
    state.urgent = _urgent_rooms(answer)
    state.save()


def _wake(state: SessionState, answer: JSONObject, fmt: str, client: Client | None = None) -> int:
    record_wake(state, answer)
    text = _show(answer, fmt)
    if client is not None and WAITER_HEADER in client.headers:
        _report_woken(client, answer, len(text))
    return EXIT_OK


def _waiter_headers(session: str) -> dict[str, str]:
    """What a wake waiter tells /notify about its session (the server shows it ``idle ·
    wakeable`` while it waits): the session id and the CLI (AGENT_CHAT_CLI, which the wake
    hook sets), both reduced to the server's safe sets."""
    headers = {WAITER_HEADER: re.sub(r"[^\x21-\x7e]", "_", session)[:128]}
    cli = os.environ.get("AGENT_CHAT_CLI", "")
    if re.fullmatch(r"[A-Za-z0-9._-]{1,32}", cli):
        headers[CLI_HEADER] = cli
    return headers


def _report_woken(client: Client, answer: JSONObject, chars: int) -> None:
    """A wake of a session starts a turn (the hook exits 2): the rooms it names reach
    ``woken``, for their senders to see. Best effort: a failed report never stops the wake."""
    from .receipts import report

    session = client.headers[WAITER_HEADER]
    report(client, "woken", session, client.headers.get(CLI_HEADER), answer, chars)
