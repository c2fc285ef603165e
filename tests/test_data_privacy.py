"""A server's data dir is private to its owner, whatever the umask: folders 0700, files 0600.

homeserver.db holds humans' live Matrix access tokens, appservice.db every message and webhook
secret: with the usual umask 022 both used to be readable by every local user. Each test runs
the real CLI under umask 022 and walks the data dir afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import os
import stat
import subprocess
import sys
import tarfile

from test_deploy_backup import upload_media

from agent_chat_appservice.config import Config
from deploy_helpers import kill_leftovers, on_ports
from helpers import free_ports, register_at, wait_for

USUAL_UMASK = 0o022


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``agent-chat-server ARGS`` started with umask 022, as from a usual login shell."""
    r = subprocess.run(
        [sys.executable, "-m", "agent_chat_server", *args],
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
        umask=USUAL_UMASK,
    )
    if check:
        assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def exposed(root: Path) -> list[str]:
    """Every file, folder (or other non-link) under ``root``, itself included, that its
    group or other users may use."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                found.append(f"{path.relative_to(root.parent)} {oct(stat.S_IMODE(st.st_mode))}")
    return found


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@contextmanager
def started(root: Path) -> Iterator[Config]:
    """init + start with umask 022 on free ports, with some traffic and one upload (so the
    databases, their WAL files, the logs and the media store all exist); stopped after."""
    synapse_port, api_port = free_ports(2)
    try:
        cli("init", *on_ports(root, synapse_port, api_port))
        cli("start", "--data-dir", str(root), "--no-client-config")
        config = Config.load(root / "appservice.yaml")
        a = register_at(config.api_url, config.registration_token)
        b = register_at(config.api_url, config.registration_token)
        a.send("#general", "private on disk")
        wait_for(lambda: b.count("#general") == 1, what="the message counted")
        upload_media(config, b"private media\n")
        yield config
    finally:
        cli("stop", "--data-dir", str(root), check=False)
        kill_leftovers(str(root))


def test_a_new_server_is_private_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "server"
    with started(root):
        present = files_under(root)
        expected = {
            "homeserver.db",
            "homeserver.db-wal",
            "appservice.db",
            "homeserver.yaml",
            "homeserver.log.config",
            "logs/homeserver.log",
            "logs/appservice.log",
            "logs/supervisor.log",
            "run/supervisor.lock",
            "run/supervisor.pid",
            "run/services.json",
        }
        assert expected <= present, expected - present
        assert any(p.startswith("media_store/") for p in present), present
        assert exposed(root) == []
    # What stopping leaves (last-exit) is private too.
    assert (root / "run" / "last-exit").is_file()
    assert exposed(root) == []


def test_an_existing_install_is_made_private_on_the_next_start(tmp_path: Path) -> None:
    """What an older version left (everything readable by all) is fixed by `start`; links
    inside the data dir are not followed out of it."""
    root = tmp_path / "server"
    with started(root):
        pass
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o644)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "notes.txt").write_text("not the server's\n")
    os.chmod(outside, 0o755)
    os.chmod(outside / "notes.txt", 0o644)
    (root / "link-to-a-file").symlink_to(outside / "notes.txt")
    (root / "link-to-a-folder").symlink_to(outside)
    assert len(exposed(root)) > 10

    with started(root):
        assert exposed(root) == []
        log = (root / "logs" / "supervisor.log").read_text()
        assert f"folder(s) in {root} private" in log
        assert cli("status", "--data-dir", str(root)).returncode == 0
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert stat.S_IMODE((outside / "notes.txt").stat().st_mode) == 0o644


def test_backup_and_restore_are_private(tmp_path: Path) -> None:
    root, archive = tmp_path / "server", tmp_path / "backup.tar.gz"
    with started(root):
        cli("backup", "--data-dir", str(root), str(archive))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    loose_members = [f"{m.name} {oct(m.mode)}" for m in members if m.mode & 0o077]
    assert members and loose_members == []

    restored = tmp_path / "restored"
    cli("restore", "--data-dir", str(restored), str(archive))
    assert {"homeserver.db", "appservice.db", "homeserver.signing.key"} <= files_under(restored)
    assert any(p.startswith("media_store/") for p in files_under(restored))
    assert exposed(restored) == []

    # An archive whose members are readable by all (an older backup, or repacked by hand)
    # still restores private.
    loose = tmp_path / "loose.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(loose, "w:gz") as dst:
        for m in src.getmembers():
            m.mode |= 0o055 if m.isdir() else 0o044
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    again = tmp_path / "again"
    cli("restore", "--data-dir", str(again), str(loose))
    assert files_under(again) == files_under(restored)
    assert exposed(again) == []


def test_worker_mode_files_are_private(tmp_path: Path) -> None:
    """`init --workers` writes the workers' configs, log configs, topology and Caddy's router
    config 0600 too (nothing is started: no database is needed to check the files)."""
    root = tmp_path / "server"
    cli(
        "init",
        "--data-dir",
        str(root),
        "--skip-db-check",
        "--workers",
        "2",
        "--redis",
        "redis://127.0.0.1:6379/3",
        "--synapse-database",
        "postgres://synapse@127.0.0.1/synapse",
    )
    present = files_under(root)
    assert {"Caddyfile.workers", "workers/topology.yaml", "workers/generic2.yaml"} <= present
    assert {"workers/persister1.log.config", "homeserver.log.config"} <= present
    assert exposed(root) == []
