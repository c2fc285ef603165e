"""Presence per agent session, on the real stack: a hook call makes it ``working``, a connected
wake waiter ``idle · wakeable``, a waiter gone ``idle · deaf``, the SessionEnd hook ``gone``;
Element sees Matrix presence; a DM to an agent with no live session says so at send time."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote
import json
import os
import subprocess
import urllib.request

from test_appservice_db import _database
from test_delivery_stages import HOOK, agents, hook_env, run_hook
from test_names_and_labels import Person
from test_replicas import Cluster, cluster  # noqa: F401 (the cluster fixture)
import pytest

from agent_chat_appservice.config import Config, ConfigError
from agent_chat_appservice.db import AgentSession
from agent_chat_appservice.presence import DEAF, GONE, WAKEABLE, WORKING, Presence
from helpers import AC, Ac, Stack, run_async, spawn, stop, synapse, unique, wait_for


def sessions(ac: Ac, nick: str) -> dict[str, dict]:
    """``ac who @nick --json``: the agent's sessions by id."""
    data = json.loads(ac.ok("who", "@" + nick, "--json"))
    (member,) = [m for m in data["members"] if m["display_name"] == nick]
    return {s["session"]: s for s in member.get("presence", {}).get("sessions", [])}


def state(ac: Ac, nick: str, sid: str) -> str | None:
    return sessions(ac, nick).get(sid, {}).get("state")


def waiter(ac: Ac, sid: str) -> subprocess.Popen[str]:
    return spawn(
        [AC, "wait", "--urgent", "--dm", "--session", sid, "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ac.env(AGENT_CHAT_CLI="codex"),
    )


def test_session_states_follow_hooks_waiters_and_session_end(
    any_stack: Stack, tmp_path: Path
) -> None:
    sender, s_nick, recipient, r_nick = agents(any_stack, tmp_path)
    # Before any session: the sender is told, on stderr, and the message is still sent.
    r = sender("send", "@" + r_nick, "are you there?")
    assert r.returncode == 0, r
    assert r.stderr == (f"ac: {r_nick} has no running session; it sees this when it next starts\n")
    data = json.loads(sender.ok("send", "@" + r_nick, "again", "--json"))
    assert data["recipient_presence"]["state"] == "gone"
    # A hook call: working, with the CLI, host and the working directory's repository.
    assert run_hook(recipient, "s1").returncode == 0
    s1 = wait_for(lambda: sessions(sender, r_nick).get("s1"), what="session s1")
    assert (s1["state"], s1["cli"], s1["repo"]) == (WORKING, "claude", "webshop")
    shown = sender.ok("who", "@" + r_nick)  # ac who's text: state, CLI, host, repo, since
    assert "working · claude on " in shown and " in webshop since " in shown
    r = sender("send", "@" + r_nick, "working on it?")
    assert r.returncode == 0 and r.stderr == ""
    # Element's dot: Matrix presence set for the agent.
    status, data = synapse(
        any_stack,
        "GET",
        f"/_matrix/client/v3/presence/{quote(recipient.identity()['user_id'])}/status",
        as_user=sender.identity()["user_id"],
    )
    assert status == 200 and data["presence"] == "online", data
    assert data.get("status_msg") == "working · claude", data
    # A session with only a wake waiter: idle · wakeable while it waits, deaf once it is gone.
    w = waiter(recipient, "s2")
    try:
        wait_for(lambda: state(sender, r_nick, "s2") == WAKEABLE, what="s2 wakeable")
        assert sessions(sender, r_nick)["s2"]["cli"] == "codex"
    finally:
        stop(w)
    wait_for(lambda: state(sender, r_nick, "s2") == DEAF, what="s2 deaf after its waiter")
    # The SessionEnd hook: gone.
    end = subprocess.run(
        ["sh", HOOK, "--end"],
        input=json.dumps({"session_id": "s1", "hook_event_name": "SessionEnd"}),
        capture_output=True,
        text=True,
        env=hook_env(recipient),
        timeout=20,
    )
    assert end.returncode == 0 and end.stdout == ""
    wait_for(lambda: state(sender, r_nick, "s1") == GONE, what="s1 gone after SessionEnd")
    # A deaf session (s2) is the liveliest left: the sender is told when it will see it.
    r = sender("send", "@" + r_nick, "still there?")
    assert r.returncode == 0 and "next prompt or tool call" in r.stderr, r
    assert s_nick not in r.stderr
    # /metrics: sessions by state (refreshed every 20 s) and the attention accounting.
    wait_for(
        lambda: (
            'agent_chat_agent_sessions{state="gone"}' in metrics(any_stack)
            and 'agent_chat_agent_sessions{state="gone"} 0\n' not in metrics(any_stack)
        ),
        timeout=60,
        what="gone sessions in /metrics",
    )
    assert "agent_chat_lines_shown_total" in metrics(any_stack)


def metrics(stack: Stack) -> str:
    with urllib.request.urlopen(stack.api_url + "/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_bad_session_ids_are_refused(any_stack: Stack, tmp_path: Path) -> None:
    _, _, recipient, _ = agents(any_stack, tmp_path)
    for sid in ("x" * 129, "a b", "tab\there", "esc\x1b[0m"):
        r = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-"],
            input=(
                f'url = "{any_stack.api_url}/_agent_chat/v1/sessions/end"\n'
                f'header = "Authorization: Bearer {recipient.identity()["token"]}"\n'
                'header = "Content-Type: application/json"\n'
                f"data = {json.dumps(json.dumps({'session': sid}))}\n"
            ),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert r.stdout == "400", (sid, r)


def test_silence_means_gone() -> None:
    """No sign of life for ``gone_after`` seconds: gone, from when the silence passed it."""
    now = 10_000_000
    quiet = AgentSession("@a:x", "s", "claude", None, None, 0, now - 2_000_000, None, None)
    assert Presence(gone_after=1800).view(quiet, now).state == GONE
    assert Presence(gone_after=3600).view(quiet, now).state == DEAF
    recent = AgentSession("@a:x", "s", "claude", None, None, 0, now - 1000, now - 1000, None)
    assert Presence().view(recent, now).state == WORKING


def test_a_short_silence_setting_makes_a_quiet_session_gone(stack: Stack, tmp_path: Path) -> None:
    """appservice.yaml's presence_gone_after_seconds: a session silent that long is gone
    (in ac who and the send-time note), and its next hook call brings it back."""
    original = Config.load(stack.dd.appservice_yaml)
    changed = Config.load(stack.dd.appservice_yaml)
    changed.presence_gone_after_seconds = 3.0
    changed.gone_notice = False
    changed.save(stack.dd.appservice_yaml)
    try:
        stack.stop_appservice()
        stack.start_appservice()
        sender, _, recipient, r_nick = agents(stack, tmp_path)
        sender.ok("send", "@" + r_nick, "hello")  # the direct chat ac who looks at
        assert run_hook(recipient, "quiet").returncode == 0
        wait_for(lambda: state(sender, r_nick, "quiet") is not None, what="session quiet")
        wait_for(
            lambda: state(sender, r_nick, "quiet") == GONE,
            timeout=30,
            what="the silent session gone after 3 s",
        )
        r = sender("send", "@" + r_nick, "still there?")
        assert r.returncode == 0 and "has no running session (gone since " in r.stderr, r
        assert run_hook(recipient, "quiet").returncode == 0
        wait_for(lambda: state(sender, r_nick, "quiet") == WORKING, what="quiet back at work")
        # gone_notice: false: a person writing to a gone agent is not told.
        assert run_end(recipient, "quiet").returncode == 0
        wait_for(lambda: state(sender, r_nick, "quiet") == GONE, what="quiet ended")
        person, agent_id = Person(stack, unique("cy")), recipient.identity()["user_id"]
        room_id = direct_chat(person, agent_id)
        for n, text in enumerate(("anyone?", "hello?"), 1):
            person.send(room_id, text)
            wait_for(
                lambda n=n: f"@{person.localpart}({n})" in recipient.ok("notify", "--oneline"),
                what=f"message {n} counted",
            )
        assert notices(person, room_id, agent_id) == []
    finally:
        original.save(stack.dd.appservice_yaml)
        stack.stop_appservice()
        stack.start_appservice()


def test_bad_silence_and_notice_settings_are_refused(stack: Stack, tmp_path: Path) -> None:
    config = Config.load(stack.dd.appservice_yaml)
    for bad in (0, -5, "soon"):
        config.presence_gone_after_seconds = bad  # type: ignore[assignment]
        config.save(tmp_path / "appservice.yaml")
        with pytest.raises(ConfigError, match="presence_gone_after_seconds must be a number"):
            Config.load(tmp_path / "appservice.yaml")
    config = Config.load(stack.dd.appservice_yaml)
    config.gone_notice = "no"  # type: ignore[assignment]
    config.save(tmp_path / "appservice.yaml")
    with pytest.raises(ConfigError, match="gone_notice must be true or false"):
        Config.load(tmp_path / "appservice.yaml")


def run_end(ac: Ac, sid: str) -> subprocess.CompletedProcess[str]:
    """The SessionEnd hook of session ``sid``, as Claude Code runs it."""
    return subprocess.run(
        ["sh", HOOK, "--end"],
        input=json.dumps({"session_id": sid, "hook_event_name": "SessionEnd"}),
        capture_output=True,
        text=True,
        env=hook_env(ac),
        timeout=20,
    )


def direct_chat(person: Person, agent_id: str) -> str:
    """A direct chat the person opens with the agent, as Element does; once it joined."""
    room_id = person.create_room(is_direct=True, preset="trusted_private_chat", invite=[agent_id])
    members = f"/rooms/{quote(room_id)}/joined_members"
    wait_for(
        lambda: agent_id in person.cs("GET", members)["joined"],
        what="the agent accepting the direct chat",
    )
    return room_id


def notices(person: Person, room_id: str, sender: str) -> list[str]:
    """The m.notice bodies ``sender`` posted in the room, oldest first (as Element shows)."""
    page = person.cs("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=100")
    return [
        e["content"].get("body", "")
        for e in reversed(page["chunk"])
        if e.get("type") == "m.room.message"
        and e.get("sender") == sender
        and e["content"].get("msgtype") == "m.notice"
    ]


def test_a_person_writing_to_a_gone_agent_is_told_once(stack: Stack, tmp_path: Path) -> None:
    """Element: a DM to an agent with no running session earns one m.notice from the agent
    (once an hour per person and agent); none while a session runs."""
    peer, _, agent, nick = agents(stack, tmp_path)
    peer.ok("send", "@" + nick, "hi")  # the direct chat peer's ac who looks at
    agent_id = agent.identity()["user_id"]
    ann, bob = Person(stack, unique("ann")), Person(stack, unique("bob"))

    ann_room, bob_room = direct_chat(ann, agent_id), direct_chat(bob, agent_id)
    # No session ever: Ann is told, once, however often she writes.
    ann.send(ann_room, "are you there?")
    told = f"{nick} has no running session; it sees this when it next starts"
    wait_for(lambda: notices(ann, ann_room, agent_id) == [told], what="the notice to Ann")
    ann.send(ann_room, "hello??")
    # A session at work: Bob's message earns nothing; once it ended, his next one does.
    assert run_hook(agent, "live").returncode == 0
    wait_for(lambda: state(peer, nick, "live") == WORKING, what="the session at work")
    bob.send(bob_room, "can you look at the build?")
    label = "@" + bob.localpart
    wait_for(lambda: label in agent.ok("notify", "--oneline"), what="Bob's message counted")
    assert run_end(agent, "live").returncode == 0
    wait_for(lambda: state(peer, nick, "live") == GONE, what="the session ended")
    bob.send(bob_room, "still there?")
    bob_told = wait_for(lambda: notices(bob, bob_room, agent_id), what="the notice to Bob")
    assert len(bob_told) == 1 and bob_told[0].startswith(
        f"{nick} has no running session (gone since "
    )
    # Bob's notice follows his last message, not the one the working session got.
    page = bob.cs("GET", f"/rooms/{quote(bob_room)}/messages?dir=b&limit=3")
    assert [e["content"].get("body") for e in page["chunk"][:2]][::-1] == [
        "still there?",
        bob_told[0],
    ]
    assert notices(ann, ann_room, agent_id) == [told]  # Ann's second message: no second notice


def test_a_waiter_on_one_replica_is_wakeable_on_every_replica(cluster: Cluster) -> None:  # noqa: F811
    """The wake waiter's connection is held by one API replica; ``ac who`` through any other
    says ``idle · wakeable`` too, and ``idle · deaf`` once it is gone (the session's row)."""
    agent = cluster.register(cluster.ports[0], unique("Waits"))
    watcher = cluster.register(cluster.ports[1], unique("Watch"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(
        AGENT_CHAT_SERVER=cluster.url(cluster.ports[0]),
        AGENT_CHAT_TOKEN=agent.token,
        AGENT_CHAT_CLI="codex",
    )

    def seen_through(port: int) -> dict[str, Any]:
        status, data = cluster.at(watcher, port).call("GET", f"/presence?users={agent.user_id}")
        assert status == 200, data
        (found,) = data["identities"]
        return {s["session"]: s for s in found["sessions"]}

    w = spawn(
        [AC, "wait", "--dm", "--session", "rep-s1", "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for port in cluster.ports:
            wait_for(
                lambda port=port: seen_through(port).get("rep-s1", {}).get("state") == WAKEABLE,
                what=f"rep-s1 wakeable through the replica on {port}",
            )
        there = seen_through(cluster.ports[2])["rep-s1"]
        assert there["cli"] == "codex" and there["since"] is not None, there
    finally:
        stop(w)
    for port in cluster.ports:
        wait_for(
            lambda port=port: seen_through(port)["rep-s1"]["state"] == DEAF,
            what=f"rep-s1 deaf through the replica on {port} once its waiter left",
        )


def test_a_waiter_lease_is_renewed_and_ended_only_by_the_replica_that_wrote_it(
    database_url: str,
) -> None:
    """The session's row carries a connected waiter to the other replicas: written when the
    waiter connects, renewed by the replica holding it, ended by it only if no other replica
    wrote the row since; without renewal it runs out."""
    user = "@_ac_lease:example.org"

    async def go() -> None:
        async with _database(database_url):
            a, b = Presence(), Presence()  # two replicas
            await AgentSession.heard(AgentSession.db, user, "s", "codex", None, None, False)

            async def row() -> AgentSession:
                (found,) = await AgentSession.of_users([user], 0)
                return found

            await a.waiter_connected(user, "s")
            first = await row()
            assert first.waiter_since_ms is not None and first.waiter_until_ms is not None
            assert b.view(first).state == WAKEABLE  # b holds no waiter: the row says so
            assert b.view(first, first.waiter_until_ms + 1).state == DEAF  # the lease ran out
            lease = a._leases[(user, "s")]
            await AgentSession.renew_waiting([(user, "s", lease, lease + 5000)])
            assert (await row()).waiter_until_ms == lease + 5000
            # Another replica wrote the row since (the waiter reconnected there): a's renewal
            # and a's end of the lease leave it alone.
            await AgentSession.waiting(user, "s", first.waiter_since_ms, lease + 9000)
            await AgentSession.renew_waiting([(user, "s", lease + 5000, lease + 7000)])
            await AgentSession.stopped_waiting(user, "s", lease + 5000)
            assert (await row()).waiter_until_ms == lease + 9000
            await AgentSession.stopped_waiting(user, "s", lease + 9000)
            assert (await row()).waiter_until_ms is None
            assert b.view(await row()).state == DEAF

    run_async(go)
