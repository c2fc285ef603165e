"""Synapse worker mode (issue 15): ``agent-chat-server init --workers N --redis URL`` and the
supervisor running main, the event persister, the generic workers and the appservice processes,
against real processes on PostgreSQL and Redis (AGENT_CHAT_TEST_POSTGRES, AGENT_CHAT_TEST_REDIS).

What a user would notice if this broke: agents' messages not arriving (or arriving twice) once
Synapse runs as several processes, a human's read receipt failing, `status` hiding a dead
worker, one crashed worker taking the whole server down or never coming back, or `init`
half-writing a data dir on bad input.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.files import load_yaml
from agent_chat_server.paths import DataDir
from agent_chat_server.process import pid_alive, read_pid
from deploy_helpers import run_cli
from helpers import (
    Agent,
    WorkerStack,
    free_port_block,
    http_json,
    password_login,
    register_at,
    stop,
    try_send,
    unique,
    wait_for,
)


def api_urls(st: WorkerStack) -> list[str]:
    topo = load_yaml(st.dd.topology_yaml)
    return [f"http://127.0.0.1:{p}" for p in topo["api_ports"]]


def generic_urls(st: WorkerStack) -> list[str]:
    return list(st.config.homeserver_worker_urls)


def synapse_bodies(st: WorkerStack, room_id: str, user_id: str) -> list[str]:
    """A room's message bodies as Synapse stores them (read on main, as ``user_id``)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/messages"
    query = f"?dir=b&limit=1000&user_id={quote(user_id)}"
    status, body = http_json("GET", st.synapse_url + path + query, token=st.as_token)
    assert status == 200, body
    return [e["content"]["body"] for e in body["chunk"] if e["type"] == "m.room.message"]


def agent(st: WorkerStack, replica: int = 0) -> Agent:
    urls = api_urls(st)
    return register_at(urls[replica % len(urls)], st.registration_token)


# --- init's files -------------------------------------------------------------------------


def test_init_writes_the_worker_settings(worker_stack: WorkerStack) -> None:
    st, dd = worker_stack, worker_stack.dd
    hs = load_yaml(dd.homeserver_yaml)
    topo = load_yaml(dd.topology_yaml)
    ports = {p["use"]: p["port"] for p in topo["ports"]}
    assert hs["redis"]["enabled"] is True and hs["redis"]["dbid"] >= 1
    assert hs["stream_writers"] == {"events": "persister1"}
    assert hs["notify_appservices_from_worker"] == "generic1"
    assert set(hs["instance_map"]) == {"main", "persister1"}
    replication = [li for li in hs["listeners"] if li["resources"][0]["names"] == ["replication"]]
    assert [li["bind_addresses"] for li in replication] == [["127.0.0.1"]]
    assert hs["instance_map"]["main"]["port"] == replication[0]["port"]
    for i in (1, 2):
        name = f"generic{i}"
        worker = load_yaml(dd.worker_yaml(name))
        assert worker["worker_app"] == "synapse.app.generic_worker"
        assert worker["worker_name"] == name
        [listener] = worker["worker_listeners"]
        assert listener["resources"][0]["names"] == ["client"]
        assert listener["bind_addresses"] == ["127.0.0.1"]
        assert f"http://127.0.0.1:{listener['port']}" == generic_urls(st)[i - 1]
        assert ports[name] == listener["port"]
    persister = load_yaml(dd.worker_yaml("persister1"))
    [listener] = persister["worker_listeners"]
    assert listener["resources"][0]["names"] == ["replication"]
    assert hs["instance_map"]["persister1"]["port"] == listener["port"]
    # The replication secret: in the 0600 homeserver.yaml only, never printed.
    secret = hs["worker_replication_secret"]
    assert len(secret) >= 32
    assert stat.S_IMODE(dd.homeserver_yaml.stat().st_mode) == 0o600
    assert secret not in st.init_output
    for path in dd.workers_dir.iterdir():
        assert secret not in path.read_text(), path
    assert secret not in dd.router_config.read_text()
    # Two appservice processes: Synapse's transactions go to the ledger writer's port.
    reg = load_yaml(dd.registration_yaml)
    assert st.config.transactions_port is not None
    assert reg["url"] == f"http://127.0.0.1:{st.config.transactions_port}"
    assert topo["api_ports"] == [st.config.port, st.config.port + 1]


def test_the_router_config_routes_what_workers_cannot_serve_to_main(
    worker_stack: WorkerStack,
) -> None:
    text = worker_stack.dd.router_config.read_text()
    main = worker_stack.synapse_url.removeprefix("http://")
    generics = " ".join(u.removeprefix("http://") for u in generic_urls(worker_stack))
    blocks = dict(re.findall(r"\thandle (@\w+) \{\n(.*?)\n\t\}\n", text, re.S))
    matchers = dict(re.findall(r"\t(@\w+) (?:path_regexp|path) (.*)\n", text))
    assert f"reverse_proxy {main}" in blocks["@main_streams"]
    for path in ("receipt/m.read/$e", "read_markers", "typing/@a:b"):
        assert re.search(matchers["@main_streams"], f"/_matrix/client/v3/rooms/!r:s/{path}")
    assert f"reverse_proxy {generics}" in blocks["@sends"]
    assert "lb_policy header Authorization" in blocks["@sends"]
    assert re.search(matchers["@sends"], "/_matrix/client/v3/rooms/!r:s/send/m.room.message/1")
    assert f"reverse_proxy {generics}" in blocks["@sync"]
    assert re.search(matchers["@sync"], "/_matrix/client/v3/sync")
    assert f"reverse_proxy {main}" in blocks["@synapse"]
    for port in load_yaml(worker_stack.dd.topology_yaml)["api_ports"]:
        assert f"127.0.0.1:{port}" in blocks["@agent_chat"]


def test_the_router_serves_a_human_through_caddy(
    worker_stack: WorkerStack, tmp_path: Path
) -> None:
    """The router as init wrote it, run by a real Caddy: a human logs in (main), creates a
    room and sends (a generic worker), sends a read receipt, a read marker and typing (main:
    a generic worker answers those 500), syncs (a worker), and the Agent Chat API answers."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (scripts/caddy.sh installs it): router not run")
    port = free_port_block(1)
    site = worker_stack.dd.router_config.read_text()
    assert re.search(r"^:8080 \{$", site, re.M), "init without --public-url serves :8080"
    # The same routes on a free port; no admin endpoint, so that several may run at once.
    config = tmp_path / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n}\n" + re.sub(r"^:8080 \{$", f":{port} {{", site, flags=re.M)
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    log = (tmp_path / "caddy.log").open("wb")
    proc = subprocess.Popen(
        [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    router = f"http://127.0.0.1:{port}"
    client = router + "/_matrix/client/v3"
    try:

        def up() -> bool:
            try:
                return http_json("GET", router + "/_matrix/client/versions")[0] == 200
            except OSError:
                return False

        wait_for(up, 20, "Caddy routing")
        localpart, password = unique("routed"), secrets.token_urlsafe(12)
        worker_stack.create_human(localpart, password)
        token, user_id = password_login(client, localpart, password)
        status, data = http_json("POST", client + "/createRoom", {"name": "routed"}, token)
        assert status == 200, data
        room = quote(data["room_id"])
        txn = secrets.token_hex(6)
        body = {"msgtype": "m.text", "body": "through the router"}
        status, data = http_json(
            "PUT", f"{client}/rooms/{room}/send/m.room.message/{txn}", body, token
        )
        assert status == 200, data
        event = quote(data["event_id"])
        assert (
            http_json("POST", f"{client}/rooms/{room}/receipt/m.read/{event}", {}, token)[0] == 200
        )
        marker = {"m.fully_read": data["event_id"], "m.read": data["event_id"]}
        assert http_json("POST", f"{client}/rooms/{room}/read_markers", marker, token)[0] == 200
        typing = {"typing": True, "timeout": 1000}
        status, _ = http_json(
            "PUT", f"{client}/rooms/{room}/typing/{quote(user_id)}", typing, token
        )
        assert status == 200
        status, data = http_json("GET", client + "/sync?timeout=0", None, token)
        assert status == 200 and data["rooms"]["join"], data
        status, data = http_json("GET", router + "/_agent_chat/v1/health")
        assert status == 200 and data["status"] == "ok", data
        # The send was served by a generic worker, not by main.
        sent = f"/send/m.room.message/{txn}"
        workers = [worker_stack.dd.worker_log(f"generic{i}") for i in (1, 2)]
        assert any(sent in p.read_text(errors="replace") for p in workers if p.exists())
        assert sent not in worker_stack.dd.synapse_log.read_text(errors="replace")
    finally:
        stop(proc)  # SIGTERM, then killed if Caddy does not end in 10 s
        log.close()


# --- the running stack --------------------------------------------------------------------


def test_status_lists_every_process_with_pid_and_health(worker_stack: WorkerStack) -> None:
    r = run_cli("status", "--data-dir", str(worker_stack.data_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    names = ["synapse", "persister1", "generic1", "generic2", "appservice", "appservice2"]
    for name in names:
        [line] = [li for li in r.stdout.splitlines() if li.startswith(f"{name}: ")]
        pid = int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]
        assert pid_alive(pid) and " is up at " in line, line
        assert read_pid(worker_stack.dd.pid_file(name)) == pid
        if name[:-1] in ("generic", "persister"):  # each worker logs to its own files
            assert worker_stack.dd.worker_log(name).exists()
            assert worker_stack.dd.console_log(name).exists()
    assert "Synapse pings the appservice" in r.stdout


def test_agents_register_send_read_notify_and_dm(worker_stack: WorkerStack) -> None:
    st = worker_stack
    a, b = agent(st, 0), agent(st, 1)  # on different appservice processes
    room = "#" + unique("w-")
    status, body = a.call("POST", "/rooms", {"alias": room})
    assert status == 201, body
    status, body = b.call("POST", "/join", {"room": room})
    assert status == 200, body
    sent = [a.send(room, f"message {i}")["event_id"] for i in range(3)]
    # The ledger counts them: Synapse's transactions (sent by generic1) reached the writer.
    wait_for(lambda: b.count(room) == 3, what="b's count of a's messages")
    assert [m["event_id"] for m in b.messages(room=room, limit=10)] == sent
    assert b.count(room) == 0  # read
    a.send(f"@{b.nick}", "a direct word")
    wait_for(lambda: b.count(f"@{a.nick}") == 1, what="the DM in b's counts")
    status, body = b.call("POST", "/join", {"room": f"@{a.nick}"})
    assert status == 200, body
    assert [m["body"] for m in b.messages(room=f"@{a.nick}", limit=5)] == ["a direct word"]
    # The agents' sends went to the generic workers, each agent's to one worker only.
    senders: dict[str, set[str]] = {}
    for i in (1, 2):
        for line in st.dd.worker_log(f"generic{i}").read_text().splitlines():
            if "/send/" in line and (m := re.search(r"user_id=([^&\s]+)", line)):
                senders.setdefault(m.group(1), set()).add(f"generic{i}")
    assert quote(a.user_id, safe="") in senders or a.user_id in senders, senders
    assert all(len(w) == 1 for w in senders.values()), senders
    assert "/send/" not in "".join(
        li for li in st.dd.synapse_log.read_text().splitlines() if "PUT" in li
    )


def test_a_human_logs_in_with_a_password_and_sends_a_receipt(worker_stack: WorkerStack) -> None:
    st = worker_stack
    human = st.create_human(unique("alice_"))
    # Their Matrix client: a password login on Synapse, /sync and joins on a generic worker.
    status, login = http_json(
        "POST",
        f"{st.synapse_url}/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": human["user_id"]},
            "password": human["password"],
        },
    )
    assert status == 200, login
    token, worker = login["access_token"], generic_urls(st)[1]
    status, joined = http_json(
        "POST", f"{worker}/_matrix/client/v3/join/{quote('#general:' + st.server_name)}", {}, token
    )
    assert status == 200, joined
    room_id = joined["room_id"]
    # ... and `ac login` for the same person: their unread count from the ledger.
    status, body = http_json(
        "POST",
        api_urls(st)[1] + "/_agent_chat/v1/login",
        {"user": human["user_id"], "password": human["password"]},
    )
    assert status == 201, body
    me = Agent(api_urls(st)[1] + "/_agent_chat/v1", body["user_id"], body["nick"], body["token"])
    me.messages(room="#general", limit=1)
    a = agent(st)
    a.send("#general", "one")
    last = a.send("#general", "two")["event_id"]
    wait_for(lambda: me.count("#general") == 2, what="the human's count")
    status, _ = http_json("GET", f"{worker}/_matrix/client/v3/sync?timeout=0", token=token)
    assert status == 200
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/m.read/{quote(last)}"
    # A generic worker cannot write receipts (main writes that stream): the router sends
    # receipts, read markers and typing to main.
    assert http_json("POST", worker + path, {}, token)[0] == 500
    assert http_json("POST", st.synapse_url + path, {}, token)[0] == 200
    wait_for(lambda: me.count("#general") == 0, what="the receipt lowering the count")
    typing = f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(human['user_id'])}"
    assert http_json("PUT", st.synapse_url + typing, {"typing": False}, token)[0] == 200


def test_a_killed_generic_worker_is_restarted_and_nothing_is_lost(
    worker_stack: WorkerStack,
) -> None:
    """SIGKILL generic1 (which also sends every appservice transaction) during a 20-agent
    burst: the supervisor starts it again, every agent is served again, and every
    acknowledged message is counted exactly once."""
    st = worker_stack
    senders = [agent(st, i) for i in range(20)]
    reader = agent(st, 1)
    room = "#" + unique("k-")
    status, created = senders[0].call("POST", "/rooms", {"alias": room})
    assert status == 201, created
    for who in [*senders[1:], reader]:
        assert who.call("POST", "/join", {"room": room})[0] == 200
    acked: list[str] = []
    served_after: dict[str, float] = {}
    killed_at: list[float] = []
    stop = threading.Event()

    def send_loop(who: Agent) -> None:
        n = 0
        while not stop.is_set():
            body, txn = f"{who.nick} {n}", secrets.token_hex(8)
            started = time.monotonic()
            while not stop.is_set():  # the same txn until acknowledged, as `ac` retries
                if try_send(who, room, body, txn) == 200:
                    acked.append(body)
                    if killed_at and started > killed_at[0]:
                        served_after.setdefault(who.nick, time.monotonic())
                    break
                time.sleep(0.2)
            n += 1
            time.sleep(0.25)  # twenty agents at a working pace, not a CPU-bound flood

    threads = [threading.Thread(target=send_loop, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 8, what="sends before the kill")
        pid = read_pid(st.dd.pid_file("generic1"))
        assert pid and pid_alive(pid)
        killed_at.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)
        health = generic_urls(st)[0] + "/health"

        def back() -> bool:
            new_pid = read_pid(st.dd.pid_file("generic1"))
            if not (new_pid and new_pid != pid and pid_alive(new_pid)):
                return False
            try:
                up = http_json("GET", health)[0] == 200
            except OSError:
                return False
            return up and len(served_after) == len(senders)

        # Functional, not a timing target: 10 s is the usual, but a loaded CI machine once took
        # longer to start a Synapse worker again (784f1d1).
        wait_for(back, 30.0, "generic1 restarted and every agent served again")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    # Synapse stored every acknowledged message exactly once (and nothing else).
    stored = Counter(synapse_bodies(st, created["room_id"], reader.user_id))
    assert stored == Counter(acked), "each acknowledged message stored exactly once"
    # ... and the ledger counts each exactly once: what generic1 held unsent when it died is
    # caught up by the appservice once generic1 answers again.
    wait_for(lambda: reader.count(room) >= len(acked), 30, f"a count of {len(acked)}")
    counted = Counter(m["body"] for m in reader.messages(room=room, limit=1000))
    assert (reader.count(room), counted) == (0, stored)
    log = st.dd.supervisor_log.read_text()
    assert "generic1 exited unexpectedly (status -9); starting it again" in log
    assert "stopping everything" not in log.split("generic1 exited unexpectedly")[-1]
    r = run_cli("status", "--data-dir", str(st.data_dir))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_killed_appservice_process_is_restarted_while_the_other_serves(
    worker_stack: WorkerStack,
) -> None:
    st = worker_stack
    pid = read_pid(st.dd.pid_file("appservice"))
    assert pid and pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    a = agent(st, 1)  # the other process serves meanwhile
    room = "#" + unique("r-")
    assert a.call("POST", "/rooms", {"alias": room})[0] == 201

    def back() -> bool:
        new = read_pid(st.dd.pid_file("appservice"))
        if not (new and new != pid and pid_alive(new)):
            return False
        try:
            return http_json("GET", api_urls(st)[0] + "/_agent_chat/v1/health")[0] == 200
        except OSError:
            return False

    wait_for(back, 30.0, "the appservice process started again")
    b = agent(st, 0)
    assert b.call("POST", "/join", {"room": room})[0] == 200
    a.send(room, "after the restart")
    wait_for(lambda: b.count(room) == 1, what="the message counted through the new writer")
    assert "appservice exited unexpectedly (status -9); starting it again" in (
        st.dd.supervisor_log.read_text()
    )
    r = run_cli("status", "--data-dir", str(st.data_dir))
    assert r.returncode == 0, r.stdout + r.stderr


# --- bad input --------------------------------------------------------------------------------


def _init(root: Path, *args: str) -> Any:
    return run_cli("init", "--data-dir", str(root), "--skip-db-check", *args)


def _assert_refused(r: Any, root: Path, words: str, code: int = 1) -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
    written = [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert written == [], f"init wrote {written} although it refused"


SYN_PG = ("--synapse-database", "postgres://u@127.0.0.1:5432/syn")
REDIS = ("--redis", "redis://127.0.0.1:6379/5")
CLASH = ("--synapse-port", "9000", "--api-port", "9003", "--worker-port-base", "9000")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--workers", "2", *REDIS), "--workers needs Synapse on PostgreSQL"),
        (("--workers", "2", *REDIS, "--synapse-database", "sqlite:/tmp/x.db"), "PostgreSQL"),
        (("--workers", "0", *REDIS, *SYN_PG), "invalid --workers 0: want 1-32"),
        (("--workers", "-3", *REDIS, *SYN_PG), "invalid --workers -3"),
        (("--workers", "100000", *REDIS, *SYN_PG), "invalid --workers 100000"),
        (("--workers", "2", *SYN_PG), "--workers needs --redis"),
        (("--workers", "2", *SYN_PG, "--redis", "http://127.0.0.1:6379"), "invalid --redis"),
        (("--workers", "2", *SYN_PG, "--redis", "127.0.0.1:6379"), "invalid --redis"),
        (("--workers", "2", *SYN_PG, "--redis", "redis://127.0.0.1:6379/db"), "a number"),
        (("--workers", "2", *SYN_PG, "--redis", "redis://h:99999/0"), "bad port"),
        ((*REDIS,), "--redis needs --workers"),
        (("--api-replicas", "2"), "--api-replicas needs --workers"),
        (("--workers", "1", *REDIS, *SYN_PG, "--api-replicas", "2"), "appservice on PostgreSQL"),
        (("--workers", "1", *REDIS, *SYN_PG, "--api-replicas", "0"), "invalid --api-replicas"),
        (("--workers", "4", *REDIS, *SYN_PG, *CLASH), "port clash"),
        (
            ("--workers", "2", *REDIS, *SYN_PG, "--worker-port-base", "65534"),
            "out of range",
        ),
    ],
)
def test_bad_worker_options_are_refused_in_one_line(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    root = tmp_path / "data"
    _assert_refused(_init(root, *args), root, words)


def test_a_non_number_of_workers_is_a_usage_error(tmp_path: Path) -> None:
    r = _init(tmp_path / "data", "--workers", "many")
    assert r.returncode == 2 and "--workers" in r.stderr


def test_an_unreachable_redis_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    r = run_cli(
        *("init", "--data-dir", str(root), "--workers", "1", *SYN_PG),
        *("--redis", f"redis://127.0.0.1:{dead}/0"),
    )
    _assert_refused(r, root, f"cannot reach Redis at 127.0.0.1:{dead}")


def test_a_worker_port_in_use_stops_start_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "data"
    base = free_port_block(6)
    r = _init(
        root,
        *("--workers", "2", *REDIS, *SYN_PG, "--synapse-port", str(base)),
        *("--api-port", str(base + 1), "--worker-port-base", str(base + 2)),
    )
    assert r.returncode == 0, r.stderr
    generic2 = load_yaml(DataDir.at(root).worker_yaml("generic2"))["worker_listeners"][0]["port"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", generic2))
        s.listen()
        r = run_cli("start", "--data-dir", str(root), "--no-client-config", "--timeout", "5")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"port {generic2} (generic2) is already in use" in r.stderr
    assert not list((root / "run").glob("*.pid"))


def test_rerunning_init_keeps_the_worker_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    args = ("--workers", "1", *REDIS, *SYN_PG)
    assert _init(root, *args).returncode == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    r = _init(root, *args)
    assert r.returncode == 0 and "wrote" not in r.stdout, r.stdout
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    config = Config.load(root / "appservice.yaml")
    assert len(config.homeserver_worker_urls) == 1 and config.transactions_port is None


def test_backup_refuses_worker_mode_rather_than_lose_the_workers(tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert _init(root, "--workers", "1", *REDIS, *SYN_PG).returncode == 0
    r = run_cli("backup", "--data-dir", str(root), str(tmp_path / "b.tar.gz"))
    assert r.returncode == 1 and "does not cover worker mode" in r.stderr, r.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_a_probe_that_gets_no_http_answer_says_down_instead_of_crashing() -> None:
    """Seen in CI: while a worker starts, probing its port can connect the socket to itself
    and read back its own request. The supervisor's probe must call that "down" and wait on,
    not die with a traceback (which stopped the whole stack)."""
    from agent_chat_server import health

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def echo() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        threading.Thread(target=echo, daemon=True).start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/health"
        probe = health.worker_up("generic1", url)
    assert not probe.ok
    assert "not an HTTP answer" in probe.detail
