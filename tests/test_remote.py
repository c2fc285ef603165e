"""Agents on other machines: a server host S and agent hosts A and B in network namespaces,
every byte between them through a proxy that adds 50 ms each way (tests/netns.py,
tests/netproxy.py), over TLS with the private CA ``init`` made, set up with the line
``agent-chat-server invite`` prints.

Skipped (with the reason) where network namespaces cannot be made: not root, no ``ip netns``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid

import netns
import pytest

from agent_chat.setup import hook_script
from helpers import wait_for

AC = str(Path(sys.executable).with_name("ac"))
SERVER_CLI = str(Path(sys.executable).with_name("agent-chat-server"))
PUBLIC = netns.ROUTER_IP  # the agents reach S through the proxy on the router
CLIENT_PORT, API_PORT = 8443, 8444
MISMATCH = "the server's certificate does not match the invite"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(home), **extra)
    return env


@dataclass
class Remote:
    net: netns.Net
    data_dir: Path
    tmp: Path
    control: Path
    invite_line: str
    nicks: dict[str, str] = field(default_factory=dict)

    def server_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.net.run(
            "s", SERVER_CLI, *args, "--data-dir", str(self.data_dir), env=_env(self.tmp / "s")
        )

    def home(self, host: str, name: str = "") -> Path:
        return self.tmp / f"home-{host}{name}"

    def ac(
        self,
        host: str,
        *args: str,
        home: Path | None = None,
        nick: str | None = None,
        timeout: float = 90,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        extra = dict(env)
        if nick or host in self.nicks:
            extra["AGENT_CHAT_NICK"] = nick or self.nicks[host]
        return self.net.run(
            host, AC, *args, env=_env(home or self.home(host), **extra), timeout=timeout
        )

    def start_ac(self, host: str, *args: str) -> subprocess.Popen[str]:
        env = _env(self.home(host), AGENT_CHAT_NICK=self.nicks[host])
        return self.net.start(host, AC, *args, env=env)

    def setup_host(self, host: str, line: str, home: Path | None = None) -> None:
        """Run the invite's one line on ``host``, as printed."""
        argv = shlex.split(line)
        assert argv[:2] == ["ac", "config"]
        done = self.ac(host, *argv[1:], home=home)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    netns.require()
    tmp = tmp_path_factory.mktemp("remote")
    net = netns.Net("rm")
    data_dir = tmp / "server"
    try:
        s_ip = net.add_host("s", 1)
        net.add_host("a", 2)
        net.add_host("b", 3)
        started = net.run(
            "s",
            SERVER_CLI,
            "start",
            "--data-dir",
            str(data_dir),
            "--bind",
            s_ip,
            "--public-url",
            f"https://{PUBLIC}:{CLIENT_PORT}",
            "--no-client-config",
            env=_env(tmp / "s"),
            timeout=180,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        control = tmp / "proxy.sock"
        net.proxy(
            [f"{PUBLIC}:{p}={s_ip}:{p}" for p in (CLIENT_PORT, API_PORT)], control, delay=0.05
        )
        remote = Remote(net, data_dir, tmp, control, "")
        invite = remote.server_cli("invite", "--note", "hosts A and B")
        assert invite.returncode == 0, invite.stderr
        [line] = [x for x in invite.stdout.splitlines() if x.startswith("ac config")]
        remote.invite_line = line
        run = uuid.uuid4().hex[:6]
        remote.nicks = {"a": f"Ann{run}", "b": f"Bob{run}"}
        for host in ("a", "b"):
            remote.setup_host(host, line)
        yield remote
    finally:
        if data_dir.exists():
            net.run("s", SERVER_CLI, "stop", "--data-dir", str(data_dir), env=_env(tmp / "s"))
        net.close()


def test_invite_line_sets_up_a_remote_agent_over_tls(remote: Remote) -> None:
    line = remote.invite_line
    assert f"server=https://{PUBLIC}:{API_PORT}" in line
    assert "registration_token=aci_" in line and "ca_fingerprint=sha256:" in line
    first = remote.ac("b", "notify", "--oneline")  # B registers (and joins #general) first
    assert first.returncode == 0, first.stderr
    sent = remote.ac("a", "send", "#general", "hello from host A")
    assert sent.returncode == 0, sent.stderr
    # the CA the fingerprint names is kept (0600) and verifies every later connection
    ca = remote.home("a") / "server-ca.pem"
    assert ca.read_bytes().strip() == (remote.data_dir / "tls" / "ca.pem").read_bytes().strip()
    assert ca.stat().st_mode & 0o777 == 0o600
    notify = remote.ac("b", "notify", "--oneline")
    assert notify.returncode == 0 and "#general(" in notify.stdout, notify.stderr
    shown = remote.ac("b", "listen", "#general", "--last", "5")
    assert "hello from host A" in shown.stdout, shown.stderr
    listed = remote.server_cli("invite", "--list")
    assert "hosts A and B" in listed.stdout and "valid" in listed.stdout


def test_wait_ask_claims_and_the_wake_hook_across_the_link(remote: Remote) -> None:
    a, b = remote.nicks["a"], remote.nicks["b"]
    remote.ac("b", "notify", "--oneline")
    # ac wait on B returns when A's direct message arrives
    waiter = remote.start_ac("b", "wait", "--dm", "--timeout", "60", "--oneline")
    time.sleep(1.0)  # let the long-poll reach the server (it would return at once otherwise)
    assert remote.ac("a", "send", f"@{b}", "wake up, B").returncode == 0
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip(), "ac wait printed no line"
    # ac ask on A gets B's answer
    asker = remote.start_ac("a", "ask", f"@{b}", "what is 6*7?", "--timeout", "60")

    def asked() -> bool:
        got = remote.ac("b", "listen", f"@{a}", "--last", "3", "--peek")
        return "what is 6*7?" in got.stdout

    wait_for(asked, timeout=60, what="A's question on B")
    assert remote.ac("b", "send", f"@{a}", "42").returncode == 0
    out, err = asker.communicate(timeout=60)
    assert asker.returncode == 0 and "42" in out, err
    # claims: A holds src/**, B is refused (exit 6) and sees A's claim
    project = f"remote-{uuid.uuid4().hex[:6]}"
    mine = remote.ac("a", "claim", "src/**", "--project", project, "--reason", "refactor")
    assert mine.returncode == 0, mine.stderr
    theirs = remote.ac("b", "claim", "src/app.py", "--project", project)
    assert theirs.returncode == 6, theirs.stdout + theirs.stderr
    listed = remote.ac("b", "claims", "--project", project)
    assert a in listed.stdout, listed.stdout
    # the wake hook on B (curl, verifying with the pinned CA) shows A's new message
    curl_files = list((remote.home("b") / "hook").glob("*.curl"))
    assert curl_files and all("cacert = " in f.read_text() for f in curl_files)
    assert remote.ac("a", "send", "#general", "for the hook").returncode == 0
    hook_env = _env(remote.home("b"), AGENT_CHAT_NICK=b, AGENT_CHAT_HOOK_TTL="0")
    stdin = json.dumps({"session_id": "remote-s1", "hook_event_name": "UserPromptSubmit"})

    def hook_line() -> str:
        done = remote.net.run("b", "sh", hook_script(), env=hook_env, input=stdin, timeout=20)
        return done.stdout if "#general" in done.stdout else ""

    assert wait_for(hook_line, timeout=30, what="the hook's line on B")
    # no files (AGENT_CHAT_TOKEN): curl verifies with AGENT_CHAT_CA_FILE, else refuses
    creds = json.loads((remote.home("b") / "credentials.json").read_text())
    entry = next(iter(creds["servers"].values()))
    token = entry["identities"][entry["default"]]["token"]
    bare = _env(
        remote.tmp / "bare-b",
        AGENT_CHAT_TOKEN=token,
        AGENT_CHAT_SERVER=f"https://{PUBLIC}:{API_PORT}",
        AGENT_CHAT_HOOK_TTL="0",
    )
    unverified = remote.net.run("b", "sh", hook_script(), env=bare, input=stdin, timeout=20)
    assert unverified.stdout == "", unverified.stdout
    ca_file = str(remote.home("b") / "server-ca.pem")
    verified = remote.net.run(
        "b", "sh", hook_script(), env={**bare, "AGENT_CHAT_CA_FILE": ca_file}, input=stdin
    )
    assert "#general" in verified.stdout, verified.stderr


def _keeper_status(sock: Path) -> dict[str, Any]:
    """The connection keeper's counts (``GET /.relay`` on its socket, answered by the keeper)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(b"GET /.relay HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    status: dict[str, Any] = json.loads(body)
    return status


def _header_timeouts(remote: Remote) -> float:
    """The server's count of connections closed for sending no request in time (/metrics
    answers loopback callers: asked on S itself, on the API's plain loopback port)."""
    code = (
        "import sys, urllib.request\n"
        "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
    )
    url = "http://127.0.0.1:8009/metrics"
    done = remote.net.run("s", sys.executable, "-c", code, url)
    assert done.returncode == 0, done.stderr
    name = "agent_chat_header_timeouts_total"
    [line] = [x for x in done.stdout.splitlines() if x.startswith(name)]
    return float(line.split()[-1])


def _keeper_pids(sock: Path) -> list[int]:
    """Processes whose command line names the keeper's socket."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(sock).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_a_connection_keeper_carries_commands_and_leaves_when_idle(remote: Remote) -> None:
    """The first command on a host starts the keeper; later ones go through its warm
    connections (no handshake of their own); it leaves when idle or when turned off."""
    b = remote.nicks["b"]
    assert remote.ac("b", "notify", "--oneline").returncode == 0  # B is known
    home = remote.home("a", "-keeper")
    remote.setup_host("a", remote.invite_line, home=home)
    first = remote.ac(
        "a", "notify", "--oneline", home=home, nick="Keep1", AGENT_CHAT_RELAY_IDLE="25"
    )
    assert first.returncode == 0, first.stderr
    relay = home / "relay"
    [sock] = wait_for(lambda: list(relay.glob("*.sock")), timeout=20, what="the keeper's socket")
    assert relay.stat().st_mode & 0o777 == 0o700 and sock.stat().st_mode & 0o777 == 0o600
    wait_for(lambda: _keeper_status(sock)["warm"] >= 1, timeout=20, what="a warm connection")
    before = _keeper_status(sock)
    sent = remote.ac("a", "send", f"@{b}", "through the keeper", home=home, nick="Keep1")
    assert sent.returncode == 0, sent.stderr
    shown = remote.ac("a", "listen", f"@{b}", "--last", "1", home=home, nick="Keep1")
    assert "through the keeper" in shown.stdout, shown.stderr
    after = _keeper_status(sock)
    assert after["spliced"] >= before["spliced"] + 2, (before, after)
    assert after["server"] == f"https://{PUBLIC}:{API_PORT}" and after["failure"] is None
    told = remote.ac("a", "config", home=home, nick="Keep1")
    assert f"connection keeper:  {sock} (running)" in told.stdout, told.stdout
    # turned off: the command connects by itself and the keeper sees nothing of it
    off = remote.ac("a", "notify", "--oneline", home=home, nick="Keep1", AGENT_CHAT_RELAY="off")
    assert off.returncode == 0, off.stderr
    assert _keeper_status(sock)["spliced"] == after["spliced"]
    # warm connections are renewed before the server's 15 s header timeout closes them: the
    # keeper is not a slow client to it
    timeouts = _header_timeouts(remote)
    time.sleep(17)
    assert _header_timeouts(remote) == timeouts
    assert _keeper_status(sock)["warm"] >= 1
    # idle for AGENT_CHAT_RELAY_IDLE seconds: the keeper exits and removes its socket
    [pid] = _keeper_pids(sock)
    wait_for(lambda: not sock.exists(), timeout=40, what="the idle keeper to leave")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, what="its process to end")


def test_wrong_ca_untrusted_certificate_and_plain_http_are_refused(remote: Remote) -> None:
    from agent_chat_server import tls

    other = tls.make_private_ca(remote.tmp / "other-ca", [PUBLIC])
    assert other.ca is not None
    wrong = remote.invite_line.split("ca_fingerprint=")[0] + (
        "ca_fingerprint=" + tls.fingerprint(other.ca.read_bytes())
    )
    home = remote.home("a", "-wrong")
    remote.setup_host("a", wrong, home=home)
    sent = remote.ac("a", "send", "#general", "never sent", home=home, nick="Wrong1")
    assert sent.returncode == 2 and MISMATCH in sent.stderr, sent.stderr
    # no pin at all: the system's trust store does not know the private CA
    unpinned = remote.invite_line.split(" --set ca_fingerprint=")[0]
    home = remote.home("a", "-unpinned")
    remote.setup_host("a", unpinned, home=home)
    sent = remote.ac("a", "send", "#general", "never sent", home=home, nick="Wrong2")
    assert sent.returncode == 2 and MISMATCH in sent.stderr, sent.stderr
    # plain HTTP to another machine: refused, or allowed with a warning
    home = remote.home("a", "-plain")
    plain = f"http://{PUBLIC}:{API_PORT}"
    refused = remote.ac("a", "send", "#general", "x", home=home, AGENT_CHAT_SERVER=plain)
    assert refused.returncode == 1 and "refusing plain HTTP" in refused.stderr
    allowed = remote.ac(
        "a",
        "send",
        "#general",
        "x",
        home=home,
        AGENT_CHAT_SERVER=plain,
        AGENT_CHAT_ALLOW_INSECURE_HTTP="1",
    )
    assert "warning: plain HTTP" in allowed.stderr and allowed.returncode != 0


def test_expired_and_revoked_invites_say_what_to_do(remote: Remote) -> None:
    made = remote.server_cli("invite", "--expires", "1s", "--note", "short")
    assert made.returncode == 0, made.stderr
    [line] = [x for x in made.stdout.splitlines() if x.startswith("ac config")]
    short_id = made.stdout.split("--revoke ")[1].split(")")[0]

    def expired() -> bool:
        listed = remote.server_cli("invite", "--list").stdout.splitlines()
        return any(x.startswith(short_id) and " expired " in x for x in listed)

    wait_for(expired, timeout=20, what="the invite to expire")
    home = remote.home("b", "-expired")
    remote.setup_host("b", line, home=home)
    done = remote.ac("b", "send", "#general", "late", home=home, nick="Late1")
    assert done.returncode == 3, done.stderr
    assert "expired" in done.stderr and "agent-chat-server invite" in done.stderr
    made = remote.server_cli("invite", "--note", "to revoke")
    [line] = [x for x in made.stdout.splitlines() if x.startswith("ac config")]
    invite_id = made.stdout.split("--revoke ")[1].split(")")[0]
    assert remote.server_cli("invite", "--revoke", invite_id).returncode == 0
    home = remote.home("b", "-revoked")
    remote.setup_host("b", line, home=home)
    done = remote.ac("b", "send", "#general", "revoked", home=home, nick="Late2")
    assert done.returncode == 3 and "revoked" in done.stderr, done.stderr


@pytest.mark.fault
def test_a_link_cut_and_resets_lose_no_message_and_double_none(remote: Remote) -> None:
    run = uuid.uuid4().hex[:6]
    count = 24
    bodies = [f"cut-{run}-{i}" for i in range(count)]
    remote.ac("b", "notify", "--oneline")
    assert netns.control(remote.control, "reset 0.01") == "ok"
    follower = remote.start_ac("b", "listen", "#general", "--follow", "--json", "--last", "1")
    codes: list[int] = []
    errors: list[str] = []

    def sender() -> None:
        for i, body in enumerate(bodies):
            if i == 6:
                assert netns.control(remote.control, "cut 10") == "ok"
            done = remote.ac("a", "send", "#general", body, timeout=120)
            codes.append(done.returncode)
            if done.returncode:
                errors.append(done.stderr)

    thread = threading.Thread(target=sender)
    thread.start()
    thread.join(timeout=240)
    try:
        assert not thread.is_alive()
        assert codes == [0] * count, errors  # every send went through (retried)

        def server_truth() -> list[str] | None:
            got = remote.ac("b", "listen", "#general", "--last", "200", "--json", "--peek")
            seen = [json.loads(x)["body"] for x in got.stdout.splitlines() if x.startswith("{")]
            mine = [x for x in seen if x.startswith(f"cut-{run}-")]
            return mine if len(set(mine)) == count else None

        posted = wait_for(server_truth, timeout=60, what="every message on the server")
        assert sorted(posted) == sorted(bodies)  # each exactly once: no double post

        def followed() -> bool:
            return all(_has_line(follower_out, body) for body in bodies)

        follower_out: list[str] = []
        reader = threading.Thread(target=_drain, args=(follower, follower_out), daemon=True)
        reader.start()
        wait_for(followed, timeout=60, what="B's listen --follow to see every message")
        assert all(sum(_is(line, b) for line in follower_out) == 1 for b in bodies)
    finally:
        netns.control(remote.control, "reset 0")
        follower.kill()


def _drain(proc: subprocess.Popen[str], out: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)


def _is(line: str, body: str) -> bool:
    try:
        return bool(json.loads(line).get("body") == body)
    except ValueError:
        return False


def _has_line(lines: list[str], body: str) -> bool:
    return any(_is(line, body) for line in list(lines))


def test_init_with_https_and_a_public_bind_serves_tls_and_keeps_its_ca(tmp_path: Path) -> None:
    """No namespaces needed: the files ``init`` writes for TLS, private and kept on re-runs."""
    from agent_chat_appservice.config import Config
    from agent_chat_server import tls
    from agent_chat_server.files import load_yaml

    dd = tmp_path / "dd"
    argv = [
        SERVER_CLI,
        "init",
        "--data-dir",
        str(dd),
        "--public-url",
        "https://chat.lan:8443",
        "--bind",
        "10.0.0.5",
        "--skip-db-check",
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    hs = load_yaml(dd / "homeserver.yaml")
    plain, secure = hs["listeners"]
    assert (plain["bind_addresses"], plain["tls"]) == (["127.0.0.1"], False)
    assert (secure["bind_addresses"], secure["port"], secure["tls"]) == (["10.0.0.5"], 8443, True)
    config = Config.load(dd / "appservice.yaml")
    assert (config.host, config.tls_host, config.tls_port) == ("127.0.0.1", "10.0.0.5", 8444)
    assert (dd / "tls").stat().st_mode & 0o777 == 0o700
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert (dd / "tls" / name).stat().st_mode & 0o777 == 0o600, name
    first = tls.ca_fingerprint(dd)
    assert first and first in done.stdout
    subprocess.run(argv, capture_output=True, text=True, check=True)
    assert tls.ca_fingerprint(dd) == first  # agents' pins stay valid
    # without a public --bind, an https URL still means a reverse proxy in front
    proxied = tmp_path / "proxied"
    subprocess.run(
        [
            SERVER_CLI,
            "init",
            "--data-dir",
            str(proxied),
            "--public-url",
            "https://chat.lan",
            "--skip-db-check",
        ],
        check=True,
        capture_output=True,
    )
    assert len(load_yaml(proxied / "homeserver.yaml")["listeners"]) == 1
    assert not (proxied / "tls").exists()
    half = subprocess.run(
        [*argv[:3], str(tmp_path / "half"), "--public-url", "https://h:8443", "--tls-cert", "x"],
        capture_output=True,
        text=True,
    )
    assert half.returncode == 1 and "--tls-cert and --tls-key go together" in half.stderr
