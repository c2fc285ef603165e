"""``backup`` and ``restore``: one tar.gz holding everything a server needs to come back.

The archive (mode 0600: it holds every secret; its members too carry no group or other
permission) contains::

    agent-chat-backup/manifest.json     format, date, source data dir, database kinds
    agent-chat-backup/config/           homeserver.yaml, log config, signing key,
                                        registration.yaml, appservice.yaml
    agent-chat-backup/synapse.db        SQLite (online backup API), or synapse.pgdump (pg_dump -Fc)
    agent-chat-backup/appservice.db     SQLite, or appservice.pgdump
    agent-chat-backup/media_store/      Synapse's media

Consistency: when this data dir's supervisor is running, the appservice is paused for the few
seconds of the snapshot (Synapse queues its transactions and delivers them afterwards), so the two
databases agree on what was delivered. Without a supervisor (PM2, systemd units per service,
compose) Synapse is copied before the appservice: anything newer than Synapse's copy is then
either in the appservice's copy already (re-delivery is idempotent) or re-sent by Synapse.

A restore writes private files (0600, folders 0700), whatever the archive's members say and
whatever the umask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile

from agent_chat_appservice.config import Config

from . import control, postgres
from .errors import ServerError
from .files import dump_yaml, private_dir, temp_path, tighten_tree
from .init import check_existing
from .paths import DataDir

FORMAT = 1
TOP = "agent-chat-backup"
CONFIG_MODES = {
    "homeserver.yaml": 0o600,
    "homeserver.log.config": 0o600,
    "homeserver.signing.key": 0o600,
    "registration.yaml": 0o600,
    "appservice.yaml": 0o600,
}


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:PATH`` URL, else None."""
    if not url.startswith(("sqlite:", "sqlite3:")):
        return None
    path = url.split(":", 1)[1]
    if path.startswith("//"):
        path = path[2:]
    return Path(path)


@dataclass
class _Databases:
    """Where a data dir's two databases live: a SQLite file or a PostgreSQL URL each."""

    synapse_sqlite: Path | None
    synapse_pg: str | None
    appservice_sqlite: Path | None
    appservice_pg: str | None


def _databases(hs: dict[str, Any], config: Config) -> _Databases:
    db = hs.get("database") or {}
    args = db.get("args") or {}
    syn_sqlite = syn_pg = None
    if db.get("name") == "psycopg2":
        syn_pg = postgres.PgTarget.from_synapse(args).url(with_password=True)
    else:
        syn_sqlite = Path(str(args.get("database")))
    as_sqlite = sqlite_path(config.database)
    as_pg = config.database if postgres.is_postgres_url(config.database) else None
    if as_sqlite is None and as_pg is None:
        raise ServerError(f"unsupported appservice database {config.database!r}")
    return _Databases(syn_sqlite, syn_pg, as_sqlite, as_pg)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ServerError(
            f"{name} not found: install the PostgreSQL client tools (Debian/Ubuntu: "
            "apt install postgresql-client; macOS: brew install libpq), the same major "
            "version as the server or newer"
        )
    return path


def _pg_env(url: str) -> dict[str, str]:
    return {**os.environ, **postgres.PgTarget.parse(url).libpq_env()}


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        detail = (r.stderr.strip().splitlines() or [f"status {r.returncode}"])[-1]
        raise ServerError(f"{what} failed: {detail}")


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API)."""
    if not src.exists():
        raise ServerError(f"database {src} does not exist")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _pg_dump(url: str, dst: Path) -> None:
    _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(dst)],
        _pg_env(url),
        f"pg_dump of {postgres.PgTarget.parse(url).dbname}",
    )


def _snapshot(dbs: _Databases, work: Path) -> list[str]:
    """Copy the databases into ``work``: Synapse first (see the module docstring)."""
    done = []
    if dbs.synapse_sqlite is not None:
        _sqlite_copy(dbs.synapse_sqlite, work / "synapse.db")
        done.append(f"Synapse database {dbs.synapse_sqlite} (SQLite)")
    else:
        assert dbs.synapse_pg is not None
        _pg_dump(dbs.synapse_pg, work / "synapse.pgdump")
        done.append(f"Synapse database {postgres.redact(dbs.synapse_pg)} (pg_dump)")
    if dbs.appservice_sqlite is not None:
        _sqlite_copy(dbs.appservice_sqlite, work / "appservice.db")
        done.append(f"appservice database {dbs.appservice_sqlite} (SQLite)")
    else:
        assert dbs.appservice_pg is not None
        _pg_dump(dbs.appservice_pg, work / "appservice.pgdump")
        done.append(f"appservice database {postgres.redact(dbs.appservice_pg)} (pg_dump)")
    return done


def backup(dd: DataDir, out: Path, pause: bool = True) -> list[str]:
    """Write a backup of ``dd`` to ``out`` (tar.gz, mode 0600); returns what it did."""
    ex = check_existing(dd) if dd.root.is_dir() else None
    if ex is None or ex.appservice is None or ex.homeserver is None:
        raise ServerError(f"no server config in {dd.root}: nothing to back up")
    if dd.topology_yaml.exists():
        # The archive holds the single-process files only: a restore would lack the workers.
        raise ServerError(
            f"{dd.root} runs Synapse workers: backup does not cover worker mode yet "
            "(pg_dump both databases and copy the data dir, workers/ included)"
        )
    dbs = _databases(ex.homeserver, ex.appservice)
    media = Path(str(ex.homeserver.get("media_store_path") or dd.media_store))
    lines = []
    out = out.expanduser().absolute()
    with tempfile.TemporaryDirectory(prefix="agent-chat-backup-") as tmp:
        work = Path(tmp) / TOP
        (work / "config").mkdir(parents=True)
        for name in CONFIG_MODES:
            shutil.copy2(dd.root / name, work / "config" / name)
        paused = False
        if pause and control.running_pid(dd) is not None:
            control.pause_service(dd, control.APPSERVICE)
            paused = True
            lines.append("paused the appservice for the snapshot (Synapse queues meanwhile)")
        try:
            lines += _snapshot(dbs, work)
        finally:
            if paused:
                control.resume_service(dd, control.APPSERVICE)
                lines.append("resumed the appservice")
        n_media = 0
        if media.is_dir():
            shutil.copytree(media, work / "media_store", symlinks=True)
            n_media = sum(1 for p in (work / "media_store").rglob("*") if p.is_file())
        lines.append(f"media store {media}: {n_media} file(s)")
        manifest = {
            "format": FORMAT,
            "created": datetime.datetime.now(datetime.UTC).isoformat(),
            "data_dir": str(dd.root),
            "server_name": ex.appservice.server_name,
            "synapse_database": "sqlite" if dbs.synapse_sqlite else "postgres",
            "appservice_database": "sqlite" if dbs.appservice_sqlite else "postgres",
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        tmp_out = temp_path(out)
        fd = os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover temp file keeps its mode through O_CREAT
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
                tar.add(work, arcname=TOP, filter=_private_member)
            os.replace(tmp_out, out)
        except BaseException:
            tmp_out.unlink(missing_ok=True)
            raise
    lines.append(
        f"wrote {out} ({out.stat().st_size // 1024} KiB; it holds secrets: keep it private)"
    )
    return lines


def _private_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """No group or other permission in the archive (unpacked by hand, it stays private)."""
    member.mode &= 0o700
    return member


# --- restore -----------------------------------------------------------------------------------


def _rebase(value: Any, old: str, new: str) -> Any:
    """Paths under the old data dir moved under the new one."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    return value


def _restored_homeserver(
    text: str, old: str, dd: DataDir, synapse_database: str | None
) -> tuple[str, dict[str, Any]]:
    hs = load_yaml_text(text)
    if not isinstance(hs, dict):
        raise ServerError("the backup's homeserver.yaml is not a mapping")
    new = str(dd.root)
    changed = False
    for key in ("log_config", "media_store_path", "signing_key_path", "pid_file"):
        if key in hs and _rebase(hs[key], old, new) != hs[key]:
            hs[key] = _rebase(hs[key], old, new)
            changed = True
    files = hs.get("app_service_config_files") or []
    if [_rebase(f, old, new) for f in files] != files:
        hs["app_service_config_files"] = [_rebase(f, old, new) for f in files]
        changed = True
    db = hs.get("database") or {}
    if synapse_database is not None:
        from .synapse_config import synapse_database as section

        try:
            hs["database"] = section(synapse_database, dd)
        except ValueError as e:
            raise ServerError(f"invalid --synapse-database: {e}") from None
        changed = True
    elif db.get("name") != "psycopg2":
        args = db.setdefault("args", {})
        if args.get("database") != str(dd.synapse_db):
            args["database"] = str(dd.synapse_db)
            changed = True
    return (dump_yaml(hs) if changed else text), hs


def load_yaml_text(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def restore(
    dd: DataDir,
    archive: Path,
    force: bool = False,
    database: str | None = None,
    synapse_database: str | None = None,
) -> list[str]:
    """Restore ``archive`` into ``dd`` (which must be empty or absent unless ``force``)."""
    _check_restore_target(dd, archive, force)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="agent-chat-restore-") as tmp:
        work, old = _unpack(archive, Path(tmp))
        # Configs, with paths moved to this data dir and databases as asked.
        texts, hs = _restored_configs(work, old, dd, synapse_database)
        config = _restored_appservice_config(texts["appservice.yaml"], Path(tmp), dd, database)
        dbs = _databases(hs, config)
        pg_jobs = _check_postgres_targets(work, dbs, force, lines)
        _check_sqlite_copies(work, dbs)
        # Write: databases first, configs last (a half-done restore has no config, so it
        # cannot start by accident).
        _empty_data_dir(dd)
        for job in pg_jobs:
            lines.append(_pg_restore(job))
        lines += _restore_sqlite(work, dbs)
        lines += _restore_media(work, hs, dd)
        _write_configs(dd, texts, config)
        tighten_tree(dd.root)  # whatever the archive's members or the umask said
        lines.append(
            f"restored the config into {dd.root}; start it with "
            f"`agent-chat-server start --data-dir {dd.root}`"
        )
    return lines


@dataclass
class _PgJob:
    label: str  # Synapse | appservice
    dump: Path
    url: str


def _check_restore_target(dd: DataDir, archive: Path, force: bool) -> None:
    if control.running_pid(dd) is not None:
        raise ServerError(f"the server in {dd.root} is running: stop it first")
    present = [p.name for p in dd.config_files() if p.exists()]
    if present and not force:
        raise ServerError(
            f"{dd.root} already holds a server ({', '.join(present)}): restore into an empty "
            "data dir, or pass --force to replace it"
        )
    if not archive.is_file():
        raise ServerError(f"no backup at {archive}")


def _unpack(archive: Path, tmp: Path) -> tuple[Path, str]:
    """The unpacked backup's directory, and the data dir it was taken from."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ServerError(f"{archive} is not a readable backup: {e}") from None
    work = tmp / TOP
    try:
        manifest = json.loads((work / "manifest.json").read_text())
    except (OSError, ValueError):
        raise ServerError(f"{archive} is not an agent-chat-server backup") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ServerError(f"{archive}: unknown backup format {found!r}")
    return work, str(manifest["data_dir"])


def _restored_configs(
    work: Path, old: str, dd: DataDir, synapse_database: str | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """The config files' texts for ``dd``, and Synapse's config as a mapping."""
    texts = {name: (work / "config" / name).read_text() for name in CONFIG_MODES}
    texts["homeserver.yaml"], hs = _restored_homeserver(
        texts["homeserver.yaml"], old, dd, synapse_database
    )
    log_conf = load_yaml_text(texts["homeserver.log.config"])
    handler = (log_conf.get("handlers") or {}).get("file") or {}
    if (
        "filename" in handler
        and _rebase(handler["filename"], old, str(dd.root)) != handler["filename"]
    ):
        handler["filename"] = _rebase(handler["filename"], old, str(dd.root))
        texts["homeserver.log.config"] = dump_yaml(log_conf)
    return texts, hs


def _restored_appservice_config(text: str, tmp: Path, dd: DataDir, database: str | None) -> Config:
    """The backup's appservice config, its database moved as asked (or into ``dd``)."""
    config_tmp = tmp / "appservice.yaml"
    config_tmp.write_text(text)
    config = Config.load(config_tmp)
    if database is not None:
        config.database = database
    elif sqlite_path(config.database) is not None:
        config.database = f"sqlite:{dd.appservice_db}"
    return config


def _check_postgres_targets(
    work: Path, dbs: _Databases, force: bool, lines: list[str]
) -> list[_PgJob]:
    """PostgreSQL targets: create if missing; refuse to overwrite data unless forced."""
    jobs = []
    for label, dump, url, for_synapse in (
        ("Synapse", work / "synapse.pgdump", dbs.synapse_pg, True),
        ("appservice", work / "appservice.pgdump", dbs.appservice_pg, False),
    ):
        if not dump.exists():
            if url is not None:
                raise ServerError(
                    f"the backup has a SQLite {label} database but the config names "
                    f"PostgreSQL: migrate it (see docs/deployment.md) or restore without "
                    "--database/--synapse-database"
                )
            continue
        if url is None:
            raise ServerError(
                f"the backup's {label} database is a PostgreSQL dump but the config names SQLite"
            )
        state = postgres.ensure_database(url, for_synapse)
        lines.append(state.message)
        if not postgres.is_empty(url) and not force:
            raise ServerError(
                f"database {postgres.PgTarget.parse(url).dbname} is not empty: pass --force "
                "to replace its contents"
            )
        jobs.append(_PgJob(label, dump, url))
    return jobs


def _check_sqlite_copies(work: Path, dbs: _Databases) -> None:
    for label, name, path in (
        ("Synapse", "synapse.db", dbs.synapse_sqlite),
        ("appservice", "appservice.db", dbs.appservice_sqlite),
    ):
        if path is not None and not (work / name).exists():
            raise ServerError(
                f"the backup has no SQLite {label} database ({name}); pass "
                f"--{'synapse-' if label == 'Synapse' else ''}database with "
                "the PostgreSQL URL to restore its dump into"
            )


def _empty_data_dir(dd: DataDir) -> None:
    """The data dir and its subdirectories (private), without config files."""
    for path in (dd.root, dd.logs, dd.run):
        private_dir(path)
    for p in dd.config_files():
        p.unlink(missing_ok=True)


def _pg_restore(job: _PgJob) -> str:
    _run(
        [
            _tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--clean",
            "--if-exists",
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
            postgres.PgTarget.parse(job.url).dbname,
            str(job.dump),
        ],
        _pg_env(job.url),
        f"pg_restore of the {job.label} database",
    )
    return f"restored the {job.label} database into {postgres.redact(job.url)}"


def _restore_sqlite(work: Path, dbs: _Databases) -> list[str]:
    lines = []
    for name, path in (
        ("synapse.db", dbs.synapse_sqlite),
        ("appservice.db", dbs.appservice_sqlite),
    ):
        if path is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.copy2(work / name, path)
            os.chmod(path, 0o600)
            lines.append(f"restored {path}")
    return lines


def _restore_media(work: Path, hs: dict[str, Any], dd: DataDir) -> list[str]:
    media = Path(str(hs.get("media_store_path") or dd.media_store))
    if not (work / "media_store").is_dir():
        return []
    if media.exists():
        shutil.rmtree(media)
    shutil.copytree(work / "media_store", media, symlinks=True)
    tighten_tree(media)  # also when it lives outside the data dir
    return [f"restored {media}"]


def _write_configs(dd: DataDir, texts: dict[str, str], config: Config) -> None:
    for name, mode in CONFIG_MODES.items():
        if name == "appservice.yaml":
            continue
        target = dd.root / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(texts[name])
    config.save(dd.appservice_yaml)


__all__ = ["backup", "restore", "sqlite_path"]
