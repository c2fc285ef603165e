"""Remote access: `init --bind`, `invite` (what a remote agent runs, run as printed), the Caddy
example's routes."""

from __future__ import annotations

from pathlib import Path
import os
import re
import shlex
import socket
import subprocess
import sys

from agent_chat_appservice.config import Config
from agent_chat_server.files import load_yaml
from deploy_helpers import REPO, kill_leftovers, on_ports, run_cli
from helpers import free_ports, register_at, wait_for

BIND = (
    "127.0.0.2"  # a loopback address other than 127.0.0.1: tells "bound there" from "everywhere"
)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_bind_address_and_invite_command_work_for_a_remote_agent(tmp_path: Path) -> None:
    root = tmp_path / "server"
    synapse_port, api_port = free_ports(2)
    try:
        ports = on_ports(root, synapse_port, api_port)
        run_cli("start", *ports, "--bind", BIND, "--no-client-config", check=True)
        hs = load_yaml(root / "homeserver.yaml")
        assert hs["listeners"][0]["bind_addresses"] == [BIND]
        assert hs["public_baseurl"] == f"http://{BIND}:{synapse_port}/"
        config = Config.load(root / "appservice.yaml")
        assert config.host == BIND and config.api_url == f"http://{BIND}:{api_port}"
        assert load_yaml(root / "registration.yaml")["url"] == f"http://{BIND}:{api_port}"
        for port in (synapse_port, api_port):
            assert _listening(BIND, port)
            assert not _listening("127.0.0.1", port), f"port {port} also on 127.0.0.1"
        assert run_cli("status", "--data-dir", str(root)).returncode == 0

        r = run_cli("invite", "--data-dir", str(root), check=True)
        [command] = [line for line in r.stdout.splitlines() if line.startswith("ac config")]
        assert f"server=http://{BIND}:{api_port}" in command
        assert "registration_token=aci_" in command  # an invite token, not the server's own
        assert f"homeserver URL http://{BIND}:{synapse_port}" in r.stdout
        assert "loopback" in r.stderr  # 127.0.0.2 is still loopback: says so

        # The remote agent: a fresh client home, the printed command as is, then a send.
        home = tmp_path / "remote-agent"
        env = {**os.environ, "AGENT_CHAT_HOME": str(home)}
        env.pop("AGENT_CHAT_SERVER", None)
        ac = [str(Path(sys.executable).parent / "ac")]
        argv = shlex.split(command)
        subprocess.run(ac + argv[1:], env=env, check=True, capture_output=True, timeout=30)
        reader = register_at(config.api_url, config.registration_token)
        sent = subprocess.run(
            [*ac, "send", "#general", "hello from afar"],
            env={**env, "AGENT_CHAT_NICK": "FarAway"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: reader.count("#general") == 1, what="the remote agent's message")
        assert reader.bodies("#general")[-1] == "hello from afar"
    finally:
        run_cli("stop", "--data-dir", str(root))
        kill_leftovers(str(root))


def test_invite_behind_a_proxy_uses_the_public_url(tmp_path: Path) -> None:
    root = tmp_path / "server"
    run_cli(
        "init",
        "--data-dir",
        str(root),
        "--public-url",
        "https://chat.example.com",
        "--skip-db-check",
        check=True,
    )
    hs = load_yaml(root / "homeserver.yaml")
    assert hs["public_baseurl"] == "https://chat.example.com/"
    assert hs["listeners"][0]["x_forwarded"] is True
    assert hs["listeners"][0]["bind_addresses"] == ["127.0.0.1"]  # only the proxy is public
    r = run_cli("invite", "--data-dir", str(root), check=True)
    assert "ac config --set server=https://chat.example.com --set registration_token=" in r.stdout
    assert r.stderr == ""
    r = run_cli("invite", "--data-dir", str(root), "--url", "http://100.64.0.7:8009/", check=True)
    assert "server=http://100.64.0.7:8009 " in r.stdout


def test_bad_bind_is_one_line(tmp_path: Path) -> None:
    r = run_cli("init", "--data-dir", str(tmp_path / "s"), "--bind", "not-an-ip")
    assert r.returncode == 1 and "invalid --bind" in r.stderr
    assert not (tmp_path / "s" / "homeserver.yaml").exists()


def test_caddyfile_routes_match_the_default_ports() -> None:
    text = (REPO / "server" / "Caddyfile").read_text()
    routes: dict[str, str] = {}
    for m in re.finditer(r"handle (\S+) \{\s*(reverse_proxy (\S+)|respond)", text):
        routes[m.group(1)] = m.group(3) or "respond"
    assert routes["/_matrix/*"] == "127.0.0.1:8008"
    assert routes["/_synapse/client/*"] == "127.0.0.1:8008"
    assert routes["/_agent_chat/*"] == "127.0.0.1:8009"
    assert routes["/_synapse/admin/*"] == "respond"  # the admin API is not published
    assert "/metrics" not in routes
    # Caddy picks the most specific matcher, but keep the 404s before the catch-all anyway.
    assert text.index("handle /_synapse/admin/*") < text.index("handle /_matrix/*")
