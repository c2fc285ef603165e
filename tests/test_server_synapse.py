"""The generated Synapse behaves as Agent Chat needs (real Synapse from the session stack)."""

from __future__ import annotations

import secrets
import time

from helpers import Stack, http_json


def test_human_registration_is_closed(stack: Stack) -> None:
    status, body = http_json(
        "POST",
        f"{stack.synapse_url}/_matrix/client/v3/register",
        {
            "username": "mallory",
            "password": secrets.token_hex(8),
            "auth": {"type": "m.login.dummy"},
        },
    )
    assert status == 403, body


def test_admin_can_register_humans_with_the_shared_secret(stack: Stack) -> None:
    name = f"alice{secrets.token_hex(3)}"
    human = stack.create_human(name)
    assert human["user_id"] == f"@{name}:{stack.server_name}"
    status, body = http_json(
        "GET", f"{stack.synapse_url}/_matrix/client/v3/account/whoami", token=human["access_token"]
    )
    assert status == 200 and body["user_id"] == human["user_id"]


def test_humans_cannot_take_agent_names(stack: Stack) -> None:
    """The exclusive namespace @_ac_* belongs to the appservice, even for the admin API."""
    try:
        stack.create_human(f"_ac_{secrets.token_hex(3)}")
    except AssertionError as e:
        # Synapse refuses both ways: M_EXCLUSIVE (namespace) or M_INVALID_USERNAME (leading _).
        assert "M_EXCLUSIVE" in str(e) or "M_INVALID_USERNAME" in str(e)
    else:
        raise AssertionError("the admin API let a human register in the agents' namespace")


def test_appservice_can_register_its_users(stack: Stack) -> None:
    localpart = f"_ac_probe{secrets.token_hex(3)}"
    status, body = http_json(
        "POST",
        f"{stack.synapse_url}/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": localpart},
        token=stack.as_token,
    )
    assert status == 200, body
    assert body["user_id"] == f"@{localpart}:{stack.server_name}"


def test_federation_is_off(stack: Stack) -> None:
    status, _ = http_json("GET", f"{stack.synapse_url}/_matrix/federation/v1/version")
    assert status == 404


def test_public_rooms_are_listed(stack: Stack) -> None:
    """room_list_publication_rules allows publishing: the appservice's rooms show up."""
    human = stack.create_human(f"bob{secrets.token_hex(3)}")
    wanted = {f"#{r['alias']}:{stack.server_name}" for r in stack.config.rooms}
    deadline = time.monotonic() + 30
    while True:
        status, body = http_json(
            "GET",
            f"{stack.synapse_url}/_matrix/client/v3/publicRooms",
            token=human["access_token"],
        )
        assert status == 200, body
        aliases = {room.get("canonical_alias") for room in body["chunk"]}
        if wanted <= aliases or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= aliases, aliases


def test_rate_limits_suit_agents(stack: Stack) -> None:
    """A human (rate-limited, unlike appservice users) can send a burst of 30 messages."""
    human = stack.create_human(f"carol{secrets.token_hex(3)}")
    token = human["access_token"]
    status, body = http_json(
        "POST",
        f"{stack.synapse_url}/_matrix/client/v3/createRoom",
        {"preset": "private_chat"},
        token=token,
    )
    assert status == 200, body
    room = body["room_id"]
    for i in range(30):
        status, body = http_json(
            "PUT",
            f"{stack.synapse_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"burst {i}"},
            token=token,
        )
        assert status == 200, (i, body)


def test_appservice_restart_keeps_the_stack_healthy(stack: Stack) -> None:
    from agent_chat_server import control

    stack.stop_appservice()
    result = control.status(stack.dd)
    assert result.exit_code == 4, result.lines
    stack.start_appservice()
    assert control.status(stack.dd).exit_code == 0


def test_synapse_restart_keeps_the_stack_healthy(stack: Stack) -> None:
    from agent_chat_server import control

    stack.restart_synapse()
    assert control.status(stack.dd).exit_code == 0
    status, body = http_json("GET", f"{stack.api_base}/health")
    assert status == 200, body
