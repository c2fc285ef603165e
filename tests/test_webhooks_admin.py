"""Webhooks, as an operator and as an attacker sees them (docs/security.md, threat 7):

* ``agent-chat-server webhook list|remove|rotate``: list never shows a URL; remove and rotate
  make the old URL (and signing secret) stop working at once;
* each hook is rate-limited (429 + Retry-After), its text held to the 32 KiB message limit
  (413), and caller ``html`` ignored: Element shows the HTML of ``text``;
* a signed delivery replayed under a new delivery id posts nothing;
* the hook id (the secret in its URL) never reaches a log, whatever error a request causes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote
import hmac
import json
import urllib.error
import urllib.request

from helpers import (
    Agent,
    Stack,
    agent_chat_server,
    register,
    room_id_of,
    sentinel,
    synapse,
    unique,
    wait_for,
)


def add_webhook(stack: Stack, room: str, *flags: str, name: str | None = None) -> dict[str, Any]:
    """``webhook add``: the hook's name, URL and signing secret (None unless ``--sign``)."""
    name = name or unique("hook-")
    result = agent_chat_server(stack, "webhook", "add", name, "--room", room, *flags)
    assert result.returncode == 0, result.stderr
    return {"name": name, **_printed_secrets(result.stdout)}


def _printed_secrets(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    url = lines[lines.index(next(x for x in lines if x.startswith("URL"))) + 1].strip()
    secret = None
    if any(x.startswith("signing secret") for x in lines):
        secret = lines[lines.index(next(x for x in lines if x.startswith("signing secret"))) + 1]
    return {"url": url, "secret": secret}


def post(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """POST JSON (or raw bytes); (status, JSON answer, response headers)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def sign(secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
    }


def hooks_room(stack: Stack) -> tuple[Agent, str]:
    watcher = register(stack)
    room = "#" + unique("hooks-")
    status, data = watcher.call("POST", "/rooms", {"alias": room})
    assert status == 201, data
    return watcher, room


def posted(watcher: Agent, room: str) -> list[str]:
    mark = sentinel(watcher, room)
    return [body for body in watcher.bodies(room) if body != mark]


def test_list_remove_and_rotate(stack: Stack) -> None:
    watcher, room = hooks_room(stack)
    plain = add_webhook(stack, room)
    signed = add_webhook(stack, room, "--sign", "--state-change")

    listed = agent_chat_server(stack, "webhook", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows[plain["name"]][1:4] == [room, "no", "no"]
    assert rows[signed["name"]][1:4] == [room, "yes", "yes"]
    for hook in (plain, signed):  # list never shows a URL or a secret
        assert hook["url"].rsplit("/", 1)[1] not in listed.stdout
    assert signed["secret"] not in listed.stdout

    # Rotate: a new URL and secret; the old ones stop working at once.
    rotated = agent_chat_server(stack, "webhook", "rotate", signed["name"])
    assert rotated.returncode == 0, rotated.stderr
    new = _printed_secrets(rotated.stdout)
    assert new["url"] != signed["url"] and new["secret"] not in (None, signed["secret"])
    body = json.dumps({"text": "ci is red", "key": "ci", "state": "failing"}).encode()
    assert post(signed["url"], body, sign(signed["secret"], body))[0] == 404
    assert post(new["url"], body, sign(signed["secret"], body))[0] == 401
    status, data, _ = post(new["url"], body, sign(new["secret"], body))
    assert status == 201 and data["posted"] is True, data

    # Remove: the URL stops working, the name is free again.
    removed = agent_chat_server(stack, "webhook", "remove", plain["name"])
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stderr
    status, data, _ = post(plain["url"], {"text": "after removal"})
    assert status == 404, data
    listed = agent_chat_server(stack, "webhook", "list")
    assert plain["name"] not in listed.stdout and signed["name"] in listed.stdout
    again = add_webhook(stack, room, name=plain["name"])
    assert post(again["url"], {"text": "back again"})[0] == 201
    wait_for(lambda: watcher.count(room) == 2, what="two posts")
    assert posted(watcher, room) == ["ci is red", "back again"]

    missing = agent_chat_server(stack, "webhook", "remove", unique("no-such-"))
    assert missing.returncode != 0 and "no webhook called" in missing.stderr
    nameless = agent_chat_server(stack, "webhook", "rotate")
    assert nameless.returncode != 0 and "name the webhook" in nameless.stderr


def test_each_hook_is_rate_limited(stack: Stack) -> None:
    watcher, room = hooks_room(stack)
    flooding, other = add_webhook(stack, room), add_webhook(stack, room)
    answers = [post(flooding["url"], {"text": f"alert {i}", "urgent": True}) for i in range(40)]
    statuses = [status for status, _, _ in answers]
    assert statuses[:10] == [201] * 10, statuses
    limited = [(data, headers) for status, data, headers in answers if status == 429]
    assert len(limited) >= 20, statuses
    data, headers = limited[0]
    assert "posts from this webhook" in data["error"] and int(headers["Retry-After"]) >= 1
    # Another hook into the same room is not held back.
    assert post(other["url"], {"text": "other hook"})[0] == 201
    assert len(posted(watcher, room)) == statuses.count(201) + 1


def test_text_over_the_message_limit_is_413(stack: Stack) -> None:
    watcher, room = hooks_room(stack)
    hook = add_webhook(stack, room)
    status, data, _ = post(hook["url"], {"text": "x" * 40_000})
    assert status == 413 and data["errcode"] == "M_TOO_LARGE", data
    assert "32 KiB" in data["error"] and "40,000 bytes" in data["error"]
    at_limit = json.dumps({"text": "é" * 16_384}).encode()  # 32,768 bytes: at the limit
    assert post(hook["url"], at_limit)[0] == 201
    assert len(posted(watcher, room)) == 1


def test_caller_html_is_ignored(stack: Stack) -> None:
    """Agents read ``text``, people see the HTML: they must say the same thing."""
    watcher, room = hooks_room(stack)
    hook = add_webhook(stack, room)
    status, data, _ = post(hook["url"], {"text": "tests **passed**", "html": "<b>FAILED</b>"})
    assert status == 201 and data["ignored"] == ["html"], data
    room_id = room_id_of(stack, f"{room}:{stack.server_name}")
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/event/"
    status, event = synapse(stack, "GET", path + quote(data["event_id"]))
    assert status == 200, event
    assert "FAILED" not in json.dumps(event["content"])
    assert "<strong>passed</strong>" in event["content"].get("formatted_body", "")
    assert posted(watcher, room) == ["tests **passed**"]


def test_signed_replay_under_a_new_delivery_id_posts_nothing(stack: Stack) -> None:
    watcher, room = hooks_room(stack)
    hook = add_webhook(stack, room, "--sign")
    body = json.dumps({"text": "deployed v1.2"}).encode()
    headers = sign(hook["secret"], body)
    status, data, _ = post(hook["url"], body, {**headers, "X-GitHub-Delivery": "d-1"})
    assert status == 201, data
    first = data["event_id"]
    for replay in ("d-2", "d-3"):  # a captured delivery sent again with a new id
        status, data, _ = post(hook["url"], body, {**headers, "X-GitHub-Delivery": replay})
        assert status == 200 and data["posted"] is False and data["event_id"] == first, data
    assert posted(watcher, room) == ["deployed v1.2"]


def _logs(stack: Stack) -> str:
    return "".join(
        path.read_text(errors="replace")
        for path in Path(stack.dd.logs).rglob("*")
        if path.is_file()
    )


def test_the_hook_id_never_reaches_a_log(any_stack: Stack) -> None:
    watcher, room = hooks_room(any_stack)
    hook = add_webhook(any_stack, room, "--state-change")
    signed = add_webhook(any_stack, room, "--sign")
    secrets_ = [h["url"].rsplit("/", 1)[1] for h in (hook, signed)]
    for payload in (
        b"not json",
        b"[1, 2]",
        {"text": ""},
        {"text": "x" * 40_000},
        {"text": "no key"},
        {"text": "nul", "key": "a\u0000b", "state": "s\u0000"},
        {"text": "bad id", "id": ""},
        {"text": "\ud800", "key": "k", "state": "s"},
    ):
        status, _, _ = post(hook["url"], payload)
        assert status >= 400 or status == 201
    for headers in ({}, {"X-Hub-Signature-256": "sha256=00"}):
        assert post(signed["url"], {"text": "unsigned"}, headers)[0] == 401
    for _ in range(15):  # past the rate limit
        post(signed["url"], {"text": "flood"})
    sentinel(watcher, room)
    logs = _logs(any_stack)
    assert logs, "no logs were written"
    for secret in secrets_:
        assert secret not in logs


def test_a_hook_that_posted_shows_its_bot_active(stack: Stack) -> None:
    """`agents list` shows a webhook's bot as active once it has posted (it said "never")."""
    _, room = hooks_room(stack)
    hook = add_webhook(stack, room)
    status, _, _ = post(hook["url"], {"text": "deploy finished"})
    assert status == 201
    listed = agent_chat_server(stack, "agents", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    bots = [a for a in json.loads(listed.stdout) if a["nick"] == hook["name"]]
    assert bots and bots[0]["last_active"], bots
