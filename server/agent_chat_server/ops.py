"""Operations commands: ``backup``, ``restore``, ``migrate-db``, ``invite``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
import argparse

from .errors import EXIT_OK
from .paths import DataDir

AddParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(add: AddParser) -> None:
    p = add(
        "backup",
        "write everything the server needs (configs, signing key, both "
        "databases, media) to one tar.gz; safe while running",
    )
    p.add_argument("out", metavar="OUT.tar.gz", help="the archive to write (mode 0600)")
    p.add_argument(
        "--no-pause",
        action="store_true",
        help="do not pause the appservice during the database snapshot (see docs/deployment.md)",
    )

    p = add(
        "restore",
        "restore a backup into DIR (empty or absent; the server stopped); "
        "PostgreSQL databases named in the configs are created if missing",
    )
    p.add_argument("archive", metavar="IN.tar.gz")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing config in DIR "
        "and the contents of non-empty PostgreSQL databases",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="restore the appservice database here "
        "instead (postgres://...; the backup must hold a PostgreSQL dump)",
    )
    p.add_argument(
        "--synapse-database",
        metavar="URL",
        help="restore Synapse's database here instead (postgres://...)",
    )

    p = add(
        "migrate-db",
        "move the appservice's SQLite database to PostgreSQL (the server "
        "stopped; Synapse's own tool is synapse_port_db, see docs/deployment.md)",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgres://user:pass@host/db (created if missing; must hold no appservice data)",
    )
    p.add_argument("--skip-db-check", action="store_true", help="do not create the database")

    p = add(
        "invite",
        "make an invite token (it expires; --revoke ends it) and print the one line a new "
        "machine runs to join: `ac config --set server=... --set registration_token=... "
        "[--set ca_fingerprint=...]`; the server must be running",
    )
    p.add_argument(
        "--expires",
        type=_duration,
        default=7 * 86400,
        metavar="DURATION",
        help="how long the invite token works: 30m, 12h, 7d, 2w (default: 7d)",
    )
    p.add_argument("--note", default="", metavar="TEXT", help="whom or what the invite is for")
    p.add_argument("--list", action="store_true", help="list the invites and their state")
    p.add_argument("--revoke", metavar="ID", help="revoke the invite with this id (see --list)")
    p.add_argument(
        "--url",
        metavar="URL",
        help="the API URL remote agents use (default: from "
        "the bind address and public_baseurl; e.g. https://chat.example.com behind "
        "Caddy, http://100.x.y.z:8009 on Tailscale)",
    )


def cmd_backup(dd: DataDir, args: argparse.Namespace) -> int:
    from .backup import backup

    for line in backup(dd, Path(args.out), pause=not args.no_pause):
        print(line)
    return EXIT_OK


def cmd_restore(dd: DataDir, args: argparse.Namespace) -> int:
    from .backup import restore

    for line in restore(
        dd,
        Path(args.archive).expanduser(),
        force=args.force,
        database=args.database,
        synapse_database=args.synapse_database,
    ):
        print(line)
    return EXIT_OK


def invite_url(dd: DataDir, url: str | None = None) -> tuple[str, list[str]]:
    """The API URL remote agents should use, and warnings about reaching it."""
    import socket

    from .init import load_appservice_config, load_homeserver

    config = load_appservice_config(dd)
    hs = load_homeserver(dd)
    warnings: list[str] = []
    if url is None and config.tls_port is not None:  # init --public-url https://HOST:PORT
        host = urlsplit(str(hs.get("public_baseurl") or "")).hostname or config.tls_host or ""
        url = f"https://{f'[{host}]' if ':' in host else host}:{config.tls_port}"
    if url is None:
        public = str(hs.get("public_baseurl") or "").rstrip("/")
        parts = urlsplit(public)
        listener_ports = {
            lst.get("port") for lst in hs.get("listeners") or [] if isinstance(lst, dict)
        }
        if public and parts.port not in listener_ports:
            url = public  # a reverse proxy serves /_matrix and /_agent_chat on one host name
        else:
            host = parts.hostname or config.host
            if config.host in ("0.0.0.0", "::") and _is_loopback(host):
                host = socket.getfqdn()
                warnings.append(
                    f"using this machine's name {host!r}: pass --url with the "
                    "address remote agents reach it at (LAN or Tailscale IP)"
                )
            if ":" in host:
                host = f"[{host}]"
            url = f"http://{host}:{config.port}"
    if _is_loopback(urlsplit(url).hostname or ""):
        warnings.append(
            f"{url} is this machine's loopback address: other machines cannot reach it. "
            "Re-run init with --bind 0.0.0.0 (or a Tailscale 100.x.y.z address), put a "
            "reverse proxy in front (docs/deployment.md), or pass --url"
        )
    return url.rstrip("/"), warnings


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _duration(text: str) -> int:
    from .agents import duration

    return duration(text)


def _invite_table(invites: list[dict[str, object]]) -> list[str]:
    import time

    def when(ms: object) -> str:
        if not isinstance(ms, int):
            return "-"
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))

    lines = [f"{'ID':<9} {'STATE':<8} {'EXPIRES (UTC)':<17} {'USES':>4}  NOTE"]
    for i in invites:
        lines.append(
            f"{i.get('id')!s:<9} {i.get('state')!s:<8} {when(i.get('expires_at')):<17} "
            f"{i.get('uses')!s:>4}  {i.get('note') or ''}"
        )
    return lines


def _new_invite(dd: DataDir, seconds: int, note: str) -> dict[str, Any] | None:
    """A new invite token from the running appservice; None when it is not running."""
    from .accounts import admin_call
    from .errors import EXIT_APPSERVICE, ServerError

    try:
        invite: dict[str, Any] = admin_call(
            dd, "/admin/invites", {"expires_seconds": seconds, "note": note}
        )
    except ServerError as e:
        if e.exit_code == EXIT_APPSERVICE:
            return None
        raise
    return invite


def cmd_invite(dd: DataDir, args: argparse.Namespace) -> int:
    import shlex
    import sys

    from .accounts import admin_call
    from .init import load_appservice_config, load_homeserver
    from .tls import ca_fingerprint

    if args.list:
        for line in _invite_table(admin_call(dd, "/admin/invites")["invites"]):
            print(line)
        return EXIT_OK
    if args.revoke:
        entry = admin_call(dd, "/admin/invites/revoke", {"id": args.revoke})
        print(f"revoked invite {entry['id']}: its token no longer registers anyone")
        print("# agents already registered with it keep their own tokens")
        return EXIT_OK
    url, warnings = invite_url(dd, args.url)
    config = load_appservice_config(dd)
    public = str(load_homeserver(dd).get("public_baseurl") or "").rstrip("/")
    invite = _new_invite(dd, args.expires, args.note)
    fingerprint = ca_fingerprint(dd.root) if url.startswith("https://") else None
    if url.startswith("http://") and not _is_loopback(urlsplit(url).hostname or ""):
        warnings.append(
            "plain HTTP: `ac` refuses it unless the machine sets allow_insecure_http=true "
            "(fine on Tailscale, which encrypts); for TLS re-run init with "
            "--public-url https://HOST:PORT (docs/remote.md)"
        )
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if invite is None:
        print(
            "# The server is not running: this is its permanent registration token (it works "
            "until appservice.yaml changes); start the server for an invite that expires."
        )
        token = config.registration_token
    else:
        expires = _invite_table([invite])[1].split()[2:4]
        print(
            f"# Invite {invite['id']}, valid until {' '.join(expires)} UTC "
            f"(revoke: agent-chat-server invite --revoke {invite['id']})"
        )
        token = invite["token"]
    print("# On the agent's machine (with `ac` installed):")
    line = (
        f"ac config --set server={shlex.quote(url)} --set registration_token={shlex.quote(token)}"
    )
    if fingerprint:
        line += f" --set ca_fingerprint={fingerprint}"
    print(line)
    print("# then, in each agent session: AGENT_CHAT_NICK=BlueLake ac send '#general' 'hello'")
    print("#")
    print(
        f"# Humans in Element: homeserver URL {public or url}, server name {config.server_name};"
    )
    print(f"# accounts come from: agent-chat-server user add NAME --data-dir {dd.root}")
    return EXIT_OK


def cmd_migrate_db(dd: DataDir, args: argparse.Namespace) -> int:
    from .migrate import migrate_appservice_db

    for line in migrate_appservice_db(dd, args.to, args.skip_db_check):
        print(line)
    return EXIT_OK


COMMANDS = {
    "migrate-db": cmd_migrate_db,
    "invite": cmd_invite,
    "backup": cmd_backup,
    "restore": cmd_restore,
}
