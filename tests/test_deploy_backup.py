"""backup → wipe → restore loses nothing: messages, unread counts, agents' tokens, media, secrets;
on SQLite (online backup while running) and on PostgreSQL (pg_dump/pg_restore)."""

from __future__ import annotations

from pathlib import Path
import shutil
import stat
import tarfile
import urllib.request

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.files import load_yaml
from deploy_helpers import (
    kill_leftovers,
    on_ports,
    pg_admin_url,
    pg_drop,
    pg_names,
    pg_url_for,
    run_cli,
)
from helpers import Agent, free_ports, register_at, wait_for

SECRETS = ["homeserver.yaml", "homeserver.signing.key", "registration.yaml", "appservice.yaml"]


def upload_media(config: Config, data: bytes) -> str:
    """Upload ``data`` to Synapse's media store (as the bot); its mxc:// URI."""
    req = urllib.request.Request(
        f"{config.homeserver_url}/_matrix/media/v3/upload?filename=notes.txt",
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {config.as_token}", "Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        import json

        return str(json.loads(resp.read())["content_uri"])


def _download(config: Config, mxc: str) -> bytes:
    server_media = mxc.removeprefix("mxc://")
    req = urllib.request.Request(
        f"{config.homeserver_url}/_matrix/client/v1/media/download/{server_media}",
        headers={"Authorization": f"Bearer {config.as_token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


def _populate(config: Config) -> tuple[Agent, Agent, str]:
    a = register_at(config.api_url, config.registration_token)
    b = register_at(config.api_url, config.registration_token)
    for i in range(3):
        a.send("#general", f"general {i}")
    a.send("#status", "status 0")
    wait_for(lambda: b.count("#general") == 3 and b.count("#status") == 1, what="b's counts")
    mxc = upload_media(config, b"media survives restores\n")
    return a, b, mxc


def _check_restored(config: Config, a: Agent, b: Agent, mxc: str) -> None:
    assert b.count("#general") == 3 and b.count("#status") == 1
    assert b.bodies("#general")[-3:] == ["general 0", "general 1", "general 2"]
    assert b.bodies("#status")[-1:] == ["status 0"]
    assert _download(config, mxc) == b"media survives restores\n"
    a.send("#general", "after the restore")  # old tokens still work, delivery still works
    wait_for(lambda: b.count("#general") == 4, what="delivery after restore")


def test_sqlite_backup_wipe_restore_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "server"
    archive = tmp_path / "backup.tar.gz"
    synapse_port, api_port = free_ports(2)
    try:
        run_cli("start", *on_ports(root, synapse_port, api_port), "--no-client-config", check=True)
        config = Config.load(root / "appservice.yaml")
        a, b, mxc = _populate(config)
        secrets_before = {n: (root / n).read_bytes() for n in SECRETS}

        r = run_cli("backup", "--data-dir", str(root), str(archive), check=True)
        assert "paused the appservice" in r.stdout and "resumed the appservice" in r.stdout
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
        assert {
            "agent-chat-backup/synapse.db",
            "agent-chat-backup/appservice.db",
            "agent-chat-backup/manifest.json",
            "agent-chat-backup/config/homeserver.signing.key",
        } <= names
        assert any(n.startswith("agent-chat-backup/media_store/") for n in names)
        assert run_cli("status", "--data-dir", str(root)).returncode == 0  # resumed

        run_cli("stop", "--data-dir", str(root), check=True)
        shutil.rmtree(root)
        r = run_cli("restore", "--data-dir", str(root), str(archive), check=True)
        assert {n: (root / n).read_bytes() for n in SECRETS} == secrets_before
        for name in [*SECRETS, "homeserver.db", "appservice.db"]:
            assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name

        run_cli("start", "--data-dir", str(root), "--no-client-config", check=True)
        _check_restored(config, a, b, mxc)

        # A second restore over a live or existing server is refused, not merged.
        r = run_cli("restore", "--data-dir", str(root), str(archive))
        assert r.returncode == 1 and "is running: stop it first" in r.stderr
        run_cli("stop", "--data-dir", str(root), check=True)
        r = run_cli("restore", "--data-dir", str(root), str(archive))
        assert r.returncode == 1 and "--force" in r.stderr
    finally:
        run_cli("stop", "--data-dir", str(root))
        kill_leftovers(str(root))


@pytest.mark.postgres
def test_postgres_backup_restore_into_a_new_data_dir(tmp_path: Path) -> None:
    admin = pg_admin_url()
    root, root2 = tmp_path / "server", tmp_path / "moved"
    archive = tmp_path / "backup.tar.gz"
    synapse_port, api_port = free_ports(2)
    with pg_names("ac_backup_syn", "ac_backup_as") as (syn_db, as_db):
        try:
            run_cli(
                "start",
                *on_ports(root, synapse_port, api_port),
                "--no-client-config",
                "--database",
                pg_url_for(admin, as_db),
                "--synapse-database",
                pg_url_for(admin, syn_db),
                check=True,
            )
            config = Config.load(root / "appservice.yaml")
            a, b, mxc = _populate(config)
            r = run_cli("backup", "--data-dir", str(root), str(archive), check=True)
            assert "(pg_dump)" in r.stdout
            with tarfile.open(archive) as tar:
                names = set(tar.getnames())
            assert {
                "agent-chat-backup/synapse.pgdump",
                "agent-chat-backup/appservice.pgdump",
            } <= names

            # Wipe: the data dir and both databases.
            run_cli("stop", "--data-dir", str(root), check=True)
            shutil.rmtree(root)
            pg_drop(admin, syn_db, as_db)

            r = run_cli("restore", "--data-dir", str(root2), str(archive), check=True)
            assert f"created database {syn_db}" in r.stdout
            hs = load_yaml(root2 / "homeserver.yaml")
            assert hs["signing_key_path"] == str(root2 / "homeserver.signing.key")
            assert hs["app_service_config_files"] == [str(root2 / "registration.yaml")]
            assert hs["media_store_path"] == str(root2 / "media_store")
            assert str(root) not in (root2 / "homeserver.log.config").read_text()

            run_cli("start", "--data-dir", str(root2), "--no-client-config", check=True)
            _check_restored(config, a, b, mxc)
            run_cli("stop", "--data-dir", str(root2), check=True)

            # The databases are not empty now: restoring again needs --force.
            shutil.rmtree(root2)
            r = run_cli("restore", "--data-dir", str(root2), str(archive))
            assert r.returncode == 1 and "is not empty: pass --force" in r.stderr
            assert not (root2 / "homeserver.yaml").exists()
        finally:
            for d in (root, root2):
                if d.exists():
                    run_cli("stop", "--data-dir", str(d))
                kill_leftovers(str(d))


def test_backup_of_nothing_and_restore_of_garbage_are_one_line(tmp_path: Path) -> None:
    r = run_cli("backup", "--data-dir", str(tmp_path / "none"), str(tmp_path / "x.tar.gz"))
    assert r.returncode == 1 and "nothing to back up" in r.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    r = run_cli("restore", "--data-dir", str(tmp_path / "new"), str(junk))
    assert r.returncode == 1 and "not a readable backup" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
