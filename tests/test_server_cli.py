"""agent-chat-server's commands, run as a user would (subprocesses), against a real Synapse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.files import load_yaml
from agent_chat_server.paths import DataDir
from agent_chat_server.process import pid_alive, read_pid
from agent_chat_server.states import CRASH_LOOP_ENV
from deploy_helpers import run_cli
from helpers import (
    Agent,
    Stack,
    free_ports,
    http_json,
    processes_mentioning,
    register,
    shared_room,
    spawn,
    try_send,
    wait_for,
)

EXIT_SYNAPSE = 3
EXIT_APPSERVICE = 4
SECRET_FILES = [
    "homeserver.yaml",
    "homeserver.signing.key",
    "registration.yaml",
    "appservice.yaml",
]


@dataclass
class Server:
    """A data dir with its own ports for one test."""

    root: Path
    home: Path
    synapse_port: int
    api_port: int

    @property
    def dd(self) -> DataDir:
        return DataDir.at(self.root)

    def cli(self, command: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {"AGENT_CHAT_HOME": str(self.home)}
        return run_cli(command, "--data-dir", str(self.root), *args, env=env, **kw)

    def init(self) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "init", "--synapse-port", str(self.synapse_port), "--api-port", str(self.api_port)
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        r = self.cli(
            "start", "--synapse-port", str(self.synapse_port), "--api-port", str(self.api_port)
        )
        assert r.returncode == 0, r.stderr + r.stdout
        return r

    def pids(self) -> list[int]:
        return processes_mentioning(str(self.root))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    synapse_port, api_port = free_ports(2)
    srv = Server(tmp_path / "server", tmp_path / "home", synapse_port, api_port)
    try:
        yield srv
    finally:
        if srv.root.is_dir():
            run_cli("stop", "--data-dir", str(srv.root))
        for pid in srv.pids():  # never leave anything behind, even when a test failed
            os.kill(pid, signal.SIGKILL)


def assert_one_line_error(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("agent-chat-server: ")
    assert "Traceback" not in r.stderr


# --- init ------------------------------------------------------------------------------------


def test_init_writes_everything_with_0600_secrets(server: Server) -> None:
    r = server.init()
    assert r.returncode == 0, r.stderr
    for name in [*SECRET_FILES, "homeserver.log.config"]:
        assert (server.root / name).is_file(), name
        assert f"wrote {server.root / name}" in r.stdout
    for name in SECRET_FILES:
        mode = stat.S_IMODE((server.root / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"

    hs = load_yaml(server.root / "homeserver.yaml")
    assert hs["server_name"] == "agent-chat.local"
    assert hs["trusted_key_servers"] == []
    assert hs["federation_domain_whitelist"] == []
    assert hs["enable_registration"] is False
    assert hs["room_list_publication_rules"] == [{"action": "allow"}]
    assert len(hs["registration_shared_secret"]) >= 32
    [listener] = hs["listeners"]
    assert listener["port"] == server.synapse_port
    assert listener["bind_addresses"] == ["127.0.0.1"]
    assert [n for res in listener["resources"] for n in res["names"]] == ["client"]
    assert hs["rc_message"]["per_second"] >= 10
    assert hs["app_service_config_files"] == [str(server.root / "registration.yaml")]

    reg = load_yaml(server.root / "registration.yaml")
    config = Config.load(server.root / "appservice.yaml")
    assert reg["id"] == "agent-chat"
    assert reg["url"] == f"http://127.0.0.1:{server.api_port}"
    assert reg["sender_localpart"] == "_ac_bot"
    assert reg["rate_limited"] is False and reg["receive_ephemeral"] is True
    assert (reg["as_token"], reg["hs_token"]) == (config.as_token, config.hs_token)
    assert reg["as_token"] != reg["hs_token"]
    assert config.database == f"sqlite:{server.root / 'appservice.db'}"
    assert config.homeserver_url == f"http://127.0.0.1:{server.synapse_port}"
    assert config.port == server.api_port and config.registration_token

    [users] = reg["namespaces"]["users"]
    assert users["exclusive"] is True
    user_re = users["regex"]
    assert re.match(user_re, "@_ac_bluelake:agent-chat.local")
    assert re.match(user_re, "@_ac_bot:agent-chat.local")
    assert not re.match(user_re, "@alice:agent-chat.local")
    assert not re.match(user_re, "@_ac_x:agent-chat.local.evil.org")
    assert not re.match(user_re, "@_ac_x:agent-chatXlocal")
    [aliases] = reg["namespaces"]["aliases"]
    assert aliases["exclusive"] is False
    assert re.match(aliases["regex"], "#general:agent-chat.local")
    assert not re.match(aliases["regex"], "#general:agent-chat.local.evil")
    assert reg["namespaces"]["rooms"] == []


def test_init_rerun_keeps_secrets_and_says_so(server: Server) -> None:
    assert server.init().returncode == 0
    before = {name: (server.root / name).read_bytes() for name in SECRET_FILES}
    r = server.cli("init", "--api-port", str(server.api_port + 1))
    assert r.returncode == 0, r.stderr
    assert {name: (server.root / name).read_bytes() for name in SECRET_FILES} == before
    for name in SECRET_FILES:
        assert f"left alone {server.root / name}" in r.stdout
    assert "ignored --api-port" in r.stdout

    # A lost registration is rebuilt from the appservice config's tokens.
    (server.root / "registration.yaml").unlink()
    r = server.cli("init")
    assert r.returncode == 0, r.stderr
    assert f"wrote {server.root / 'registration.yaml'}" in r.stdout
    reg = load_yaml(server.root / "registration.yaml")
    config = Config.load(server.root / "appservice.yaml")
    assert (reg["as_token"], reg["hs_token"]) == (config.as_token, config.hs_token)
    assert reg["url"] == f"http://127.0.0.1:{server.api_port}"


# --- start / status / stop -------------------------------------------------------------------


def test_start_status_stop_leaves_no_process(server: Server) -> None:
    t0 = time.monotonic()
    r = server.start()  # runs init first
    elapsed = time.monotonic() - t0
    print(f"start to healthy: {elapsed:.2f} s")
    assert f"API: http://127.0.0.1:{server.api_port}" in r.stdout
    assert (server.root / "homeserver.yaml").exists()
    assert len(server.pids()) == 3  # supervisor, Synapse, appservice

    client_config = server.home / "config.toml"
    assert client_config.is_file()
    assert stat.S_IMODE(client_config.stat().st_mode) == 0o600
    text = client_config.read_text()
    assert f'url = "http://127.0.0.1:{server.api_port}"' in text
    assert Config.load(server.root / "appservice.yaml").registration_token in text

    s = server.cli("status")
    assert s.returncode == 0, s.stdout + s.stderr
    assert "Synapse is up" in s.stdout and "appservice is up" in s.stdout

    pids = server.pids()
    r = server.cli("stop")
    assert r.returncode == 0, r.stderr
    assert server.pids() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not any((server.root / "run").glob("*.pid"))

    s = server.cli("status")
    assert s.returncode == EXIT_SYNAPSE
    assert "Synapse is down" in s.stdout

    r = server.cli("stop")  # idempotent
    assert r.returncode == 0 and "not running" in r.stdout


def test_start_twice_does_not_start_a_second_copy(server: Server) -> None:
    server.start()
    pids = sorted(server.pids())
    r = server.start()
    assert "already running" in r.stdout
    assert sorted(server.pids()) == pids
    assert "left alone" in r.stdout  # client config exists already


def _pid(server: Server, name: str) -> int | None:
    return read_pid(server.dd.pid_file(name))


def wait_supervised(server: Server) -> None:
    """Wait until the supervisor has every service RUNNING (it says so in run/services.json):
    before that, a death still counts as one during startup (which stops everything)."""

    def running() -> bool:
        try:
            services = json.loads(server.dd.services_file.read_text())["services"]
        except (OSError, ValueError, KeyError):
            return False
        return all(rec["state"] == "running" for rec in services.values())

    wait_for(running, 60, "the supervisor to see every service running")


def _stack_of(server: Server) -> Stack:
    hs = load_yaml(server.dd.homeserver_yaml)
    return Stack(
        server.dd, Config.load(server.dd.appservice_yaml), hs["registration_shared_secret"]
    )


@pytest.mark.parametrize("victim, other", [("appservice", "synapse"), ("synapse", "appservice")])
def test_a_killed_service_is_restarted_and_the_other_keeps_running(
    server: Server, victim: str, other: str
) -> None:
    """kill -9 of either process: the supervisor starts it again after a short back-off, the
    other process is never stopped (same pid), everything serves again (a message sent after
    the restart is counted), and `status` shows the restart."""
    server.start()  # returns once the supervisor, too, has seen everything up
    st = _stack_of(server)
    a, b = register(st), register(st)
    room = shared_room(a, b)
    a.send(room, "before the kill")
    wait_for(lambda: b.count(room) == 1, what="the first message counted")
    dead, survivor = _pid(server, victim), _pid(server, other)
    assert dead and survivor
    os.kill(dead, signal.SIGKILL)

    def back() -> bool:
        new = _pid(server, victim)
        return (
            bool(new and new != dead and pid_alive(new)) and server.cli("status").returncode == 0
        )

    wait_for(back, 90, f"{victim} started again and everything healthy")
    assert _pid(server, other) == survivor and pid_alive(survivor)
    assert try_send_until_ok(a, room, "after the restart")
    wait_for(lambda: b.count(room) == 2, 60, "the message sent after the restart counted")
    assert b.bodies(room)[-2:] == ["before the kill", "after the restart"]

    log = server.dd.supervisor_log.read_text()
    assert f"{victim} exited unexpectedly (status -9); starting it again in 0.5 s" in log
    assert "stopping everything" not in log and f"stopped {other}" not in log
    s = server.cli("status")
    assert s.returncode == 0, s.stdout
    assert re.search(
        rf"^{victim}: restarted 1 time, last at [0-9-]+ [0-9:]+; running$", s.stdout, re.M
    ), s.stdout
    assert f"{other}: " not in s.stdout  # nothing to say about the one that kept running


def try_send_until_ok(agent: Agent, room: str, body: str, timeout: float = 60) -> bool:
    """Send with one txn id until it is acknowledged (a restarted Synapse may answer 5xx for a
    moment), as `ac send` retries."""
    txn = secrets.token_hex(8)
    return bool(wait_for(lambda: try_send(agent, room, body, txn) == 200, timeout, "a send"))


def test_concurrent_starts_run_one_copy(server: Server) -> None:
    assert server.init().returncode == 0
    env = {**os.environ, "AGENT_CHAT_HOME": str(server.home)}
    procs = [
        spawn(  # killed when the test ends if one hangs
            [sys.executable, "-m", "agent_chat_server", "start", "--data-dir", str(server.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in results), results
    assert len(server.pids()) == 3, results
    assert server.cli("status").returncode == 0


def test_status_names_the_dead_appservice(server: Server) -> None:
    """While Synapse lives and the appservice is gone, status says so (exit 4)."""
    from agent_chat_server import control

    server.start()
    control.pause_service(server.dd, "appservice")
    s = server.cli("status")
    assert s.returncode == EXIT_APPSERVICE, s.stdout
    assert "appservice is down" in s.stdout
    control.resume_service(server.dd, "appservice")
    assert server.cli("status").returncode == 0


@contextmanager
def running_in_foreground(
    server: Server, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``agent-chat-server run`` on an initialised data dir, once it is healthy; killed after
    the block if it is still running."""
    assert server.init().returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_chat_server", "run", "--data-dir", str(server.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: server.cli("status").returncode == 0, 60, "run to be healthy")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_foreground_stops_cleanly_on_sigterm(server: Server) -> None:
    with running_in_foreground(server) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert server.pids() == []


def test_a_crash_loop_stops_the_supervisor_with_the_reason(server: Server) -> None:
    """The appservice cannot start again (its config broke after it started): after 5 deaths
    within the window the supervisor gives up, stops Synapse, exits 4 and says why, in its log
    and in `status`. (The window is widened so a loaded machine's slow restarts still make a
    loop; the 5-in-60-s default is checked in tests/test_supervisor.py.)"""
    env = {**os.environ, CRASH_LOOP_ENV: "5/600"}
    with running_in_foreground(server, env) as proc:
        wait_supervised(server)
        synapse_pid = _pid(server, "synapse")
        config = server.root / "appservice.yaml"
        good = config.read_text()
        config.write_text("server_name: [unclosed\n")
        pid = _pid(server, "appservice")
        assert pid
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(300) == EXIT_APPSERVICE
        out = proc.stdout.read().decode() if proc.stdout else ""
    reason = "appservice is crash-looping: it exited unexpectedly 5 times within 600 s"
    [line] = [x for x in out.splitlines() if "crash-looping" in x] or [out]
    assert reason in line and "giving up, stopping everything" in line, out
    assert out.count("starting it again") == 4, out
    assert server.pids() == [] and synapse_pid and not pid_alive(synapse_pid)
    config.write_text(good)  # status reads the config too
    s = server.cli("status")
    assert s.returncode == EXIT_SYNAPSE
    assert "supervisor: not running (last exit: " in s.stdout and reason in s.stdout, s.stdout


# --- bad input -------------------------------------------------------------------------------


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    for command in ("init", "start", "run"):
        r = run_cli(command, "--data-dir", str(blocker / "server"))
        assert_one_line_error(r)
        assert "cannot create data dir" in r.stderr
    assert blocker.read_text() == "not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "server"
    path.write_text("x")
    r = run_cli("init", "--data-dir", str(path))
    assert_one_line_error(r)
    assert path.read_text() == "x"


def test_port_in_use(server: Server) -> None:
    assert server.init().returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", server.synapse_port))
        busy.listen()
        r = server.cli("start")
        assert_one_line_error(r)
        assert f"port {server.synapse_port}" in r.stderr and "in use" in r.stderr
        assert server.pids() == []
        assert not any((server.root / "run").glob("*.pid"))
        r = server.cli("run")
        assert_one_line_error(r)
    assert server.pids() == []


@pytest.mark.parametrize(
    "name, garbage",
    [
        ("appservice.yaml", "server_name: [unclosed\n"),
        ("homeserver.yaml", "- just\n- a list\n"),
        ("registration.yaml", "id: agent-chat\n"),
        ("homeserver.signing.key", "nonsense\n"),
    ],
)
def test_corrupt_config(server: Server, name: str, garbage: str) -> None:
    assert server.init().returncode == 0
    (server.root / name).write_text(garbage)
    before = {p.name: p.read_bytes() for p in server.root.iterdir() if p.is_file()}
    for command in ("init", "start", "status"):
        r = server.cli(command)
        assert_one_line_error(r)
        assert name in r.stderr
    after = {p.name: p.read_bytes() for p in server.root.iterdir() if p.is_file()}
    assert after == before  # nothing rewritten, no temp files left
    assert server.pids() == []


def test_bad_options(tmp_path: Path) -> None:
    r = run_cli("init", "--data-dir", str(tmp_path / "s"), "--database", "mysql://x/y")
    assert_one_line_error(r)
    r = run_cli("init", "--data-dir", str(tmp_path / "s"), "--server-name", "bad name!")
    assert_one_line_error(r)
    r = run_cli(
        "init", "--data-dir", str(tmp_path / "s"), "--synapse-port", "9", "--api-port", "9"
    )
    assert_one_line_error(r)
    assert not (tmp_path / "s" / "homeserver.yaml").exists()


@pytest.mark.parametrize("command", ["start", "run"])
def test_a_malformed_crash_loop_setting_is_refused(server: Server, command: str) -> None:
    assert server.init().returncode == 0
    env = {"AGENT_CHAT_HOME": str(server.home), CRASH_LOOP_ENV: "often"}
    r = run_cli(command, "--data-dir", str(server.root), env=env)
    assert_one_line_error(r)
    assert f"invalid {CRASH_LOOP_ENV}='often': want COUNT/SECONDS" in r.stderr
    assert server.pids() == []


def test_help_documents_exit_codes() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "exit codes" in r.stdout and "Synapse died" in r.stdout


# --- the session fixture itself ---------------------------------------------------------------


def test_stack_fixture_basics(stack: Stack) -> None:
    status, body = http_json("GET", f"{stack.api_base}/health")
    assert status == 200, body
    status, body = http_json(
        "POST",
        f"{stack.synapse_url}/_matrix/client/v1/appservice/agent-chat/ping",
        {},
        token=stack.as_token,
    )
    assert status == 200 and "duration_ms" in body
