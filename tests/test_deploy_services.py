"""Service managers: PM2 runs both processes from server/ecosystem.config.js; the systemd unit's
ExecStart runs the supervisor (JSON log lines) and stops cleanly on systemd's SIGTERM."""

from __future__ import annotations

from pathlib import Path
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest

from agent_chat_server import control
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from deploy_helpers import REPO, kill_leftovers
from helpers import free_ports, processes_mentioning, register_at, wait_for

VENV = Path(sys.prefix)


def _init(root: Path) -> DataDir:
    synapse_port, api_port = free_ports(2)
    dd = DataDir.at(root)
    init_data_dir(dd, InitOptions(synapse_port=synapse_port, api_port=api_port))
    return dd


def _check_delivery(dd: DataDir) -> None:
    config = control.load_config(dd)
    a = register_at(config.api_url, config.registration_token)
    b = register_at(config.api_url, config.registration_token)
    a.send("#general", "managed")
    wait_for(lambda: b.count("#general") == 1, what="delivery")


# --- PM2 ---------------------------------------------------------------------------------------


def test_pm2_runs_both_services_from_the_ecosystem_file(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot install PM2 for this test")
    prefix = tmp_path / "npm"
    r = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "pm2",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if r.returncode != 0:
        pytest.skip(f"npm install pm2 failed (no registry?): {r.stderr.strip()[-300:]}")
    pm2 = str(prefix / "node_modules" / ".bin" / "pm2")
    dd = _init(tmp_path / "server")
    env = {
        **os.environ,
        "PM2_HOME": str(tmp_path / "pm2-home"),
        "AGENT_CHAT_VENV": str(VENV),
        "AGENT_CHAT_SERVER_DIR": str(dd.root),
    }
    try:
        r = subprocess.run(
            [pm2, "start", str(REPO / "server" / "ecosystem.config.js")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        control.wait_healthy(dd, control.load_config(dd), 60)
        r = subprocess.run([pm2, "jlist"], env=env, capture_output=True, text=True, timeout=30)
        apps = {a["name"]: a for a in json.loads(r.stdout[r.stdout.index("[") :])}
        assert set(apps) == {"agent-chat-synapse", "agent-chat-appservice"}
        for app in apps.values():
            assert app["pm2_env"]["status"] == "online"
            assert app["pm2_env"]["pm_exec_path"] == str(VENV / "bin" / "python")
        _check_delivery(dd)

        # PM2 brings a killed appservice back; Synapse delivers what it queued meanwhile.
        pid = apps["agent-chat-appservice"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: [p for p in processes_mentioning(str(dd.appservice_yaml)) if p != pid],
            timeout=30,
            what="PM2 restarting the appservice",
        )
        control.wait_healthy(dd, control.load_config(dd), 60)
    finally:
        subprocess.run([pm2, "kill"], env=env, capture_output=True, timeout=60)
        kill_leftovers(str(dd.root))
    assert processes_mentioning(str(dd.root)) == []


# --- systemd -----------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def test_systemd_unit_runs_the_supervisor_and_stops_on_sigterm(tmp_path: Path) -> None:
    unit = _unit(REPO / "server" / "systemd" / "agent-chat.service")
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    dd = _init(tmp_path / "server")
    exec_start = (
        service["ExecStart"].replace("@VENV@", str(VENV)).replace("@DATA_DIR@", str(dd.root))
    )
    argv = shlex.split(exec_start)
    assert Path(argv[0]).is_file(), argv[0]
    env = dict(os.environ)
    key, _, value = service["Environment"].partition("=")
    env[key] = value
    # systemd would start it as is: do the same, then stop it the way systemd does.
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        control.wait_healthy(dd, control.load_config(dd), 60, proc)  # type: ignore[arg-type]
        _check_delivery(dd)
        proc.send_signal(signal.SIGTERM)  # KillMode=mixed: SIGTERM to the main process
        out, _ = proc.communicate(timeout=float(service["TimeoutStopSec"]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(str(dd.root))
    assert proc.returncode == 0, out
    records = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    assert all(r["logger"] == "agent-chat-server" and r["ts"] and r["level"] for r in records)
    messages = [r["msg"] for r in records]
    assert any(m.startswith("ready in") for m in messages), messages
    assert any("got SIGTERM" in m for m in messages), messages
    assert processes_mentioning(str(dd.root)) == []


def test_start_can_log_json_too(tmp_path: Path) -> None:
    dd = _init(tmp_path / "server")
    try:
        control.start_background(dd, 60, tie_to_caller=True, log_format="json")
        records = [json.loads(line) for line in dd.supervisor_log.read_text().splitlines()]
        assert any(r["msg"].startswith("started synapse") for r in records)
    finally:
        control.stop(dd)
