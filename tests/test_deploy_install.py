"""scripts/install.sh on a fresh HOME, twice: the second run installs nothing, changes no config
or secret, finds the server running, and still ends with a working `ac send`."""

from __future__ import annotations

from pathlib import Path
import hashlib
import os
import shutil
import subprocess
import sys

from deploy_helpers import REPO, kill_leftovers, run_cli
from helpers import free_ports

VENV = Path(sys.prefix)


def _shim_venv(where: Path) -> Path:
    """A venv for install.sh that shares this one's packages without being it: pyvenv.cfg and
    lib/ from the test venv, bin/ entries symlinked, and an install stamp for the current
    pyproject.toml. install.sh then installs nothing (that first install takes minutes and the
    network) and never touches the shared test venv."""
    where.mkdir()
    shutil.copy2(VENV / "pyvenv.cfg", where / "pyvenv.cfg")
    (where / "lib").symlink_to(VENV / "lib")
    (where / "bin").mkdir()
    for entry in (VENV / "bin").iterdir():
        (where / "bin" / entry.name).symlink_to(entry)
    with open(REPO / "pyproject.toml", "rb") as f:
        sums = subprocess.run(
            ["cksum"], stdin=f, capture_output=True, text=True, check=True
        ).stdout.strip()
    (where / ".agent-chat-installed").write_text(f"server {sums}\n")
    return where


def _snapshot(home: Path, venv: Path) -> dict[str, tuple[str, float]]:
    """Every config/secret file install.sh may write: content hash and mtime."""
    out = {}
    server = home / ".agent-chat-server"
    paths = [
        server / n
        for n in (
            "homeserver.yaml",
            "homeserver.log.config",
            "homeserver.signing.key",
            "registration.yaml",
            "appservice.yaml",
        )
    ]
    paths += [home / ".agent-chat" / "config.toml"]
    paths.append(venv / ".agent-chat-installed")
    for p in paths:
        out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
    return out


def test_install_twice_on_a_fresh_home(tmp_path: Path) -> None:
    venv = _shim_venv(tmp_path / "venv")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENT_CHAT_") or k == "AGENT_CHAT_TEST_POSTGRES"
    }
    env.update(HOME=str(home), AGENT_CHAT_VENV=str(venv), PYTHONUNBUFFERED="1")
    synapse_port, api_port = free_ports(2)
    argv = [
        str(REPO / "scripts" / "install.sh"),
        "--synapse-port",
        str(synapse_port),
        "--api-port",
        str(api_port),
    ]
    data_dir = home / ".agent-chat-server"
    try:
        first = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert "installing agent-chat" not in first.stdout
        assert f"client config: wrote {home / '.agent-chat' / 'config.toml'}" in first.stdout
        assert "BlueLake: hello from BlueLake" in first.stdout
        # The demo agents are not the user's: a plain `ac` in the user's home has no identity
        # yet (its first command registers a name of its own), and BlueLake lives in demo/.
        whoami = subprocess.run(
            [str(venv / "bin" / "ac"), "whoami", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert "BlueLake" not in whoami.stdout + whoami.stderr
        assert "GreenCastle" not in whoami.stdout + whoami.stderr
        assert not (home / ".agent-chat" / "credentials.json").exists()
        assert (home / ".agent-chat" / "demo" / "credentials.json").exists()
        before = _snapshot(home, venv)

        second = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "installing agent-chat" not in second.stdout
        assert "already running" in second.stdout and "left alone" in second.stdout
        assert "wrote" not in second.stdout
        assert _snapshot(home, venv) == before
        # Both greetings are there: the second run's send worked too.
        assert second.stdout.count("BlueLake: hello from BlueLake") == 2, second.stdout
    finally:
        if data_dir.is_dir():
            run_cli("stop", "--data-dir", str(data_dir))
        kill_leftovers(str(data_dir))
