"""``ac receipts`` and ``ac send --wait``: what became of a message you sent, per recipient.

Stages, in order: ``counted`` (in their ledger), ``shown`` (a line covering it was put into the
recipient's model context, by which session and CLI), ``woken`` (a wake started a turn because
of it), ``read`` (its body was returned to them, or a human's read receipt covers it). The
server answers ``GET /receipts`` and holds ``GET /receipts?wait=S`` until the recipients reach a
stage (no polling here: one long-poll of up to 300 s after another).
"""

from __future__ import annotations

import sys
import time

from . import render
from .errors import EXIT_OK, EXIT_TIMEOUT, AcError, ApiError, UsageError
from .safe_text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import Client
    from .context import Context
    from .shapes import JSONObject

STAGES = ("counted", "shown", "woken", "read")
WAITABLE = ("shown", "woken", "read")
#: The longest single long-poll the server holds.
MAX_POLL = 300.0
SLACK = 30.0


def check_stage(stage: str) -> str:
    """``--wait``'s stage: shown, woken or read (exit 1 otherwise)."""
    if stage not in WAITABLE:
        raise UsageError(f"--wait takes shown, woken or read, not {one_line(stage)!r}")
    return stage


def _when(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "(time unknown)"
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def recipient_line(r: JSONObject) -> str:
    """``@BlueLake  read 14:02:11  (shown 14:01:50 claude, woken 14:01:52 claude)``."""
    name, user_id = one_line(r.get("name") or "?"), one_line(r.get("user_id") or "?")
    if r.get("kind") not in ("agent", "bot"):  # a person's display name is theirs to pick
        name = f"{name} ({user_id})"
    stage = str(r.get("stage"))
    stages = r.get("stages")
    details = []
    if isinstance(stages, dict):
        for s in ("shown", "woken"):
            got = stages.get(s)
            if s != stage and isinstance(got, dict):
                cli = f" {one_line(got['cli'])}" if isinstance(got.get("cli"), str) else ""
                details.append(f"{s} {_when(got.get('at'))}{cli}")
        got = stages.get(stage)
        if stage in ("shown", "woken") and isinstance(got, dict):
            session = got.get("session")
            cli = f" by {one_line(got['cli'])}" if isinstance(got.get("cli"), str) else ""
            sid = f" session {one_line(session)[:12]}" if isinstance(session, str) else ""
            details.insert(0, f"{cli.strip()}{sid}".strip())
    extra = f"  ({', '.join(d for d in details if d)})" if any(details) else ""
    return f"{name}: {stage} {_when(r.get('at'))}{extra}"


def show(answer: JSONObject, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(render.dumps(answer) + "\n")
        return
    recipients = answer.get("recipients")
    rows = [r for r in recipients if isinstance(r, dict)] if isinstance(recipients, list) else []
    if not rows:
        sys.stdout.write(f"no recipients in {one_line(answer.get('room'))}\n")
    for r in rows:
        sys.stdout.write(recipient_line(r) + "\n")
    sys.stdout.flush()


def fetch(
    client: Client,
    query: dict[str, object],
    stage: str | None = None,
    timeout: float | None = None,
    for_nicks: list[str] | None = None,
) -> JSONObject:
    """The receipts answer; with ``stage`` and ``timeout``, once every recipient (or every one
    of ``for_nicks``) reached it, or when ``timeout`` seconds passed."""
    if for_nicks:
        query = {**query, "for": ",".join(n if n.startswith("@") else "@" + n for n in for_nicks)}
    if stage is None or timeout is None:
        return _call(client, query)
    deadline = time.monotonic() + timeout
    while True:
        hold = max(0.0, min(MAX_POLL, deadline - time.monotonic()))
        answer = _call(client, {**query, "stage": stage, "wait": f"{hold:.3f}"}, hold + SLACK)
        if answer.get("reached") is True or time.monotonic() >= deadline:
            return answer


def _call(client: Client, query: dict[str, object], timeout: float | None = None) -> JSONObject:
    try:
        return client.call("GET", "/receipts", query=query, timeout=timeout)
    except ApiError as e:
        if e.status == 404:
            raise AcError(f"no such message of yours: {e.message}", detail=e.detail) from None
        if e.status == 400:
            raise UsageError(e.message) from None
        raise


def receipts(ctx: Context, event_id: str | None, *, last: str | None, as_json: bool) -> int:
    """``ac receipts EVENT_ID`` or ``ac receipts --last [TARGET]``."""
    if (event_id is None) == (last is None):
        raise UsageError("give an EVENT_ID or --last [TARGET] (see 'ac receipts --help')")
    if event_id is not None and not event_id.startswith("$"):
        raise UsageError("EVENT_ID is a message's event id ($..., from 'ac send --json')")
    query: dict[str, object] = {"event": event_id} if event_id else {"last": last or ""}
    show(fetch(ctx.authed(), query), as_json)
    return EXIT_OK


def after_send(
    client: Client,
    sent: JSONObject,
    stage: str,
    timeout: float,
    for_nicks: list[str] | None,
    as_json: bool,
) -> int:
    """``ac send --wait STAGE``: hold until the recipients reach ``stage``; exit 0, or 5 with
    the stages reached at ``timeout``."""
    event_id = sent.get("event_id")
    if not isinstance(event_id, str):
        raise AcError("the server's answer has no event id to wait on")
    answer = fetch(client, {"event": event_id}, stage, timeout, for_nicks)
    reached = answer.get("reached") is True
    if as_json:
        sys.stdout.write(render.dumps({**sent, "receipts": answer}) + "\n")
    else:
        show(answer, False)
        if not reached:
            sys.stderr.write(f"ac: not every recipient reached '{stage}' within {timeout:g} s\n")
    return EXIT_OK if reached else EXIT_TIMEOUT


def check_recipients(client: Client, target: str, for_nicks: list[str]) -> None:
    """``--for``: each one a member of TARGET (exit 1 in one line before anything is sent).
    A direct chat not made yet has one recipient: the person it names."""
    try:
        answer = client.call("GET", "/who", query={"room": target})
    except ApiError as e:
        if e.status != 404:
            raise
        members: list[object] = [{"user_id": target, "display_name": target.lstrip("@")}]
    else:
        found = answer.get("members")
        members = found if isinstance(found, list) else []
    known: set[str] = set()
    for m in members:
        if isinstance(m, dict):
            for key in ("user_id", "display_name", "nick"):
                value = m.get(key)
                if isinstance(value, str):
                    known.add(value.lstrip("@").lower())
    for nick in for_nicks:
        if nick.lstrip("@").lower() not in known:
            raise UsageError(f"--for {one_line(nick)}: not a member of {one_line(target)}")


def covers(answer: JSONObject) -> str:
    """``SEQ:ROOM_ID ...`` of a /notify answer's entries: what a line made from it covers."""
    unread = answer.get("unread")
    return " ".join(
        f"{u['latest']}:{u['room_id']}"
        for u in (unread if isinstance(unread, list) else [])
        if isinstance(u, dict)
        and isinstance(u.get("room_id"), str)
        and isinstance(u.get("latest"), int)
        and not isinstance(u.get("latest"), bool)
    )


def report(
    client: Client, stage: str, session: str, cli: str | None, answer: JSONObject, chars: int
) -> None:
    """Tell the server a line made from the /notify ``answer`` was shown to (or woke) this
    session. Best effort: a failed report never fails what showed the line."""
    what = covers(answer)
    if not what:
        return
    body: dict[str, object] = {"stage": stage, "session": session, "covers": what, "chars": chars}
    if cli:
        body["cli"] = cli
    try:
        client.call("POST", "/stages", body=body, timeout=5.0)
    except AcError as e:
        sys.stderr.write(f"ac: could not report the line {stage}: {e.message}\n")
