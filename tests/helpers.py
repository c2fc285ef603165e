"""Test helpers shared by the appservice tests: agents over the REST API, Synapse calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
import os
import secrets
import time

from conftest import Stack, http_json


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy: Synapse pushes a few ms after /send returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(0.02)


@dataclass
class Agent:
    """An identity calling the REST API (``api_base`` ends in ``/_agent_chat/v1``)."""

    api_base: str
    user_id: str
    nick: str
    token: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 10.0,
    ):
        return http_json(method, self.api_base + path, body, token or self.token, timeout)

    def send(self, to: str, body: str, txn: str | None = None) -> dict:
        status, data = self.call(
            "PUT", f"/send/{txn or secrets.token_hex(8)}", {"to": to, "body": body}
        )
        assert status == 200, data
        return data

    def notify(self) -> dict[str, dict]:
        status, data = self.call("GET", "/notify")
        assert status == 200, data
        return {u["room"]: u for u in data["unread"]}

    def count(self, room: str) -> int:
        return self.notify().get(room, {}).get("count", 0)

    def messages(self, **query: Any) -> list[dict]:
        qs = "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
        status, data = self.call("GET", f"/messages?{qs}")
        assert status == 200, data
        return data["messages"]

    def bodies(self, room: str) -> list[str]:
        """Bodies of the room's last messages, oldest first, without marking them read."""
        return [m["body"] for m in self.messages(room=room, limit=1000, mark_read="false")]


def register_at(
    api_url: str, registration_token: str, nick: str | None = None, exact: bool = False
) -> Agent:
    body: dict[str, Any] = {"registration_token": registration_token, "exact": exact}
    if nick:
        body["nick"] = nick
    api_base = api_url + "/_agent_chat/v1"
    status, data = http_json("POST", api_base + "/register", body)
    assert status == 201, data
    return Agent(api_base, data["user_id"], data["nick"], data["token"])


def register(stack: Stack, nick: str | None = None, exact: bool = False) -> Agent:
    return register_at(stack.api_url, stack.registration_token, nick, exact)


def unique(prefix: str) -> str:
    return prefix + secrets.token_hex(3)


def synapse(stack: Stack, method: str, path: str, body: Any = None, as_user: str | None = None):
    """Call Synapse's client API with the as_token (as the bot, or masquerading)."""
    url = stack.synapse_url + path
    if as_user:
        url += ("&" if "?" in url else "?") + "user_id=" + quote(as_user)
    return http_json(method, url, body, stack.as_token)


def room_id_of(stack: Stack, alias: str) -> str:
    status, data = synapse(stack, "GET", f"/_matrix/client/v3/directory/room/{quote(alias)}")
    assert status == 200, data
    return data["room_id"]


def processes_mentioning(needle: str) -> list[int]:
    """Live pids whose command line mentions ``needle`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmd and state != "Z":
            found.append(int(entry.name))
    return found
