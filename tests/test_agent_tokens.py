"""Agents' own Matrix tokens (``agent_tokens.py``, issue 27): a direct chat's createRoom is
made with the sender's own token, so its creator's join does not queue behind the appservice's
other membership changes (Synapse runs ten of one appservice's at a time). The token is stored
sealed, never logged, and one the homeserver refuses is replaced. Against the real stack, on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from agent_chat_appservice.db.sealed import Sealer, is_sealed
from helpers import Agent, Stack, db_value, http_json, register, wait_for

CLIENT = "/_matrix/client/v3"


def _create_room_requests(stack: Stack, user_id: str) -> list[str]:
    """Synapse's access-log lines of ``user_id``'s createRoom requests (a masqueraded one
    names the user in ``?user_id=``; one made with their own token does not)."""
    lines = stack.dd.synapse_log.read_text(errors="replace").splitlines()
    return [
        line
        for line in lines
        if "Processed request" in line and "/createRoom" in line and "{" + user_id + "}" in line
    ]


def _own_token(stack: Stack, user_id: str) -> str | None:
    """``user_id``'s own Matrix token as stored (opened with the appservice's key)."""
    stored = db_value(stack, "SELECT matrix_token FROM identity WHERE user_id=$1", user_id)
    if stored is None:
        return None
    assert is_sealed(stored), "an agent's Matrix token is stored sealed"
    return Sealer(stack.config.token_key).open(stored, user_id)


def _whoami(stack: Stack, token: str) -> tuple[int, Any]:
    return http_json("GET", stack.synapse_url + CLIENT + "/account/whoami", None, token)


def _first_contact(sender: Agent, recipient: Agent, body: str) -> str:
    sent = sender.send("@" + recipient.nick, body)
    wait_for(lambda: recipient.count("@" + sender.nick) >= 1, what="the recipient's count")
    return str(sent["room_id"])


def test_a_direct_chat_is_created_with_the_senders_own_token(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    _first_contact(a, b, "first contact")

    requests = _create_room_requests(any_stack, a.user_id)
    assert len(requests) == 1, requests
    assert "user_id=" not in requests[0], "the createRoom was masqueraded by the appservice"
    # Their own token, stored sealed, is a token of theirs; no log holds it.
    token = _own_token(any_stack, a.user_id)
    assert token is not None
    status, whoami = _whoami(any_stack, token)
    assert status == 200 and whoami["user_id"] == a.user_id, whoami
    assert whoami.get("device_id") == "AGENTCHAT", whoami
    for log in (any_stack.dd.appservice_log, any_stack.dd.synapse_log):
        assert token not in log.read_text(errors="replace"), f"{log.name} holds the token"
    # The recipient is invited and counted from the start, and joins.
    assert b.messages(room="@" + a.nick, unread="true")[0]["body"] == "first contact"


def test_a_refused_own_token_is_replaced_and_the_direct_chat_still_made(
    any_stack: Stack,
) -> None:
    a, b, c = register(any_stack), register(any_stack), register(any_stack)
    _first_contact(a, b, "before the logout")
    old = _own_token(any_stack, a.user_id)
    assert old is not None
    status, data = http_json("POST", any_stack.synapse_url + CLIENT + "/logout", {}, old)
    assert status == 200, data
    assert _whoami(any_stack, old)[0] == 401

    # The refused token costs nothing visible: the chat is made (masqueraded this time)...
    _first_contact(a, c, "after the logout")
    requests = _create_room_requests(any_stack, a.user_id)  # the refused one names nobody
    assert len(requests) == 2 and "user_id=" in requests[1], requests
    # ...and the next one is made with a new token of theirs, stored in its place.
    d = register(any_stack)
    _first_contact(a, d, "with a new token")
    new = _own_token(any_stack, a.user_id)
    assert new is not None and new != old
    assert _whoami(any_stack, new)[0] == 200
    requests = _create_room_requests(any_stack, a.user_id)
    assert len(requests) == 3 and "user_id=" not in requests[2], requests
