"""Operator commands for people and bots: ``user add``, ``bot add``,
``webhook add|list|remove|rotate``.

Humans get ordinary Synapse accounts through the shared-secret admin API (registration stays
closed); bots and webhooks are created by the running appservice through its admin routes,
authorised by the admin token derived from the as_token in appservice.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
import argparse
import getpass
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request

from agent_chat.wire import API_PREFIX

from .errors import EXIT_APPSERVICE, EXIT_ERROR, EXIT_SYNAPSE, ServerError
from .init import load_appservice_config, load_homeserver
from .paths import DataDir

AddParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(add: AddParser) -> None:
    p = add("user", "manage human accounts (people using Element or `ac login`)")
    p.add_argument(
        "action",
        choices=["add", "revoke"],
        help="add: create the account; revoke: end every `ac` token of it (and the Matrix "
        "session `ac login` opened)",
    )
    p.add_argument("name", help="the account's user name, e.g. alice")
    p.add_argument(
        "--password",
        help="the password (default: prompt; or read from stdin when stdin is not a terminal)",
    )
    p.add_argument("--admin", action="store_true", help="make a Synapse server admin")

    p = add("bot", "manage bot identities (CI jobs posting with AGENT_CHAT_TOKEN)")
    p.add_argument("action", choices=["add"])
    p.add_argument("name", help="the bot's name, e.g. ci-bot")

    p = add("webhook", "manage inbound webhooks (POST JSON to post into a room)")
    p.add_argument(
        "action",
        choices=["add", "list", "remove", "rotate"],
        help="add one; list them (never their URLs); remove one (its URL stops working); "
        "rotate one's URL and signing secret (the old ones stop working)",
    )
    p.add_argument("name", nargs="?", help="the webhook's name; it posts as a bot of that name")
    p.add_argument("--room", default="#alerts", help="where it posts (default: %(default)s)")
    p.add_argument(
        "--sign",
        action="store_true",
        help="require an X-Hub-Signature-256 "
        "HMAC signature (GitHub's scheme); a signing secret is generated",
    )
    p.add_argument(
        "--state-change",
        action="store_true",
        help="post only when the payload's "
        "'state' for its 'key' changes (failing → passing and back)",
    )


def request_json(
    url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    """POST ``body`` as JSON (GET without one); (status, parsed answer or None). A server that
    cannot be reached raises ConnectionError."""
    if body is None:
        req = urllib.request.Request(url)
    else:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(str(getattr(e, "reason", e))) from None


def _error_text(data: Any) -> str:
    return data.get("error", "") if isinstance(data, dict) else ""


def _read_password(args: argparse.Namespace) -> str:
    if args.password:
        return str(args.password)
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ServerError("the passwords differ; nothing was created")
    if len(password) < 8:
        raise ServerError("a password needs at least 8 characters; nothing was created")
    return password


def cmd_user(dd: DataDir, args: argparse.Namespace) -> int:
    if args.action == "revoke":
        data = admin_call(dd, "/admin/users/revoke", {"name": args.name})
        print(f"revoked every ac token of {data['user_id']}")
        return 0
    hs = load_homeserver(dd)
    config = load_appservice_config(dd)
    name = args.name.lower()
    if name.startswith(config.user_prefix):
        raise ServerError(f"names starting with {config.user_prefix!r} belong to agents")
    password = _read_password(args)
    url = f"{config.homeserver_url}/_synapse/admin/v1/register"
    try:
        req = urllib.request.Request(url)
        with urllib.request.urlopen(req, timeout=10) as resp:
            nonce = json.loads(resp.read())["nonce"]
        mac = hmac.new(hs["registration_shared_secret"].encode(), digestmod=hashlib.sha1)
        kind = b"admin" if args.admin else b"notadmin"
        mac.update(b"\x00".join([nonce.encode(), name.encode(), password.encode(), kind]))
        status, data = request_json(
            url,
            {
                "nonce": nonce,
                "username": name,
                "password": password,
                "admin": args.admin,
                "mac": mac.hexdigest(),
            },
        )
    except ConnectionError as e:
        raise ServerError(
            f"Synapse is not reachable at {config.homeserver_url} ({e}); start the server first",
            EXIT_SYNAPSE,
        ) from None
    except urllib.error.URLError as e:
        raise ServerError(
            f"Synapse is not reachable at {config.homeserver_url} ({e.reason}); "
            "start the server first",
            EXIT_SYNAPSE,
        ) from None
    if status != 200:
        raise ServerError(f"could not create {name}: {_error_text(data) or f'HTTP {status}'}")
    print(f"created {data['user_id']}")
    print(f"Element: homeserver {config.homeserver_url}, user {name}")
    print(f"shell:   ac login {name}")
    return 0


def admin_call(dd: DataDir, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An admin route of the running appservice (GET without a body, POST with one): its
    answer, or ServerError with its error. The one way the server commands call the API."""
    config = load_appservice_config(dd)
    url = f"{config.api_url}{API_PREFIX}{path}"
    try:
        status, data = request_json(url, body, config.admin_token)
    except ConnectionError as e:
        raise ServerError(
            f"the appservice is not reachable at {config.api_url} ({e}); start the server first",
            EXIT_APPSERVICE,
        ) from None
    if status not in (200, 201):
        raise ServerError(
            _error_text(data) or f"the appservice answered HTTP {status}", EXIT_ERROR
        )
    return dict(data)


def cmd_bot(dd: DataDir, args: argparse.Namespace) -> int:
    data = admin_call(dd, "/admin/bots", {"nick": args.name})
    config = load_appservice_config(dd)
    print(f"created bot {data['nick']} ({data['user_id']})")
    print("token (shown once; keep it in your CI's secrets):")
    print(data["token"])
    print(
        f"use: AGENT_CHAT_SERVER={config.api_url} AGENT_CHAT_TOKEN=<token> "
        "ac send '#alerts' '[ALERT] build failed: ...'"
    )
    return 0


def _printable(value: object) -> str:
    """Names and rooms come from users: no control characters reach the terminal."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _webhook_list(dd: DataDir) -> int:
    hooks = list(admin_call(dd, "/admin/webhooks", None).get("webhooks") or [])
    if not hooks:
        print("no webhooks; add one with: agent-chat-server webhook add NAME --room '#room'")
        return 0
    rows = [("NAME", "ROOM", "SIGNED", "STATE-CHANGE", "LAST POST")]
    for h in hooks:
        last = h.get("last_delivery")
        when = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(last / 1000))
            if isinstance(last, int) and not isinstance(last, bool)
            else "-"
        )
        rows.append(
            (
                _printable(h.get("name", "?")),
                _printable(h.get("room", "?")),
                "yes" if h.get("signed") else "no",
                "yes" if h.get("state_change") else "no",
                when,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_webhook(dd: DataDir, args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name:
            raise ServerError("'webhook list' takes no name")
        return _webhook_list(dd)
    if not args.name:
        raise ServerError(f"name the webhook: webhook {args.action} NAME")
    if args.action == "remove":
        data = admin_call(dd, "/admin/webhooks/remove", {"name": args.name})
        print(f"removed webhook {_printable(data['name'])}: its URL no longer works")
        return 0
    if args.action == "rotate":
        data = admin_call(dd, "/admin/webhooks/rotate", {"name": args.name})
        print(f"rotated webhook {data['name']}: the old URL and signing secret no longer work")
    else:
        data = admin_call(
            dd,
            "/admin/webhooks",
            {
                "name": args.name,
                "room": args.room,
                "sign": args.sign,
                "state_change": args.state_change,
            },
        )
        print(f"created webhook {data['name']} posting to {data['room']}")
    config = load_appservice_config(dd)
    print("URL (the path is a secret; keep it in your CI's secrets):")
    print(config.api_url + data["path"])
    if data.get("signing_secret"):
        print("signing secret (X-Hub-Signature-256 = sha256=HMAC-SHA256(body, secret)):")
        print(data["signing_secret"])
    if data.get("state_change"):
        print(
            'payload: {"text": "...", "key": "ci/main", "state": "failing"}'
            " (posts only when the state changes)"
        )
    else:
        print('payload: {"text": "build failed on main", "urgent": true}')
    return 0


COMMANDS = {"user": cmd_user, "bot": cmd_bot, "webhook": cmd_webhook}
