"""Operations commands: ``backup``, ``restore``, ``invite``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable
import argparse

from .errors import EXIT_OK
from .paths import DataDir

AddParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(add: AddParser) -> None:
    p = add("backup", "write everything the server needs (configs, signing key, both "
            "databases, media) to one tar.gz; safe while running")
    p.add_argument("out", metavar="OUT.tar.gz", help="the archive to write (mode 0600)")
    p.add_argument("--no-pause", action="store_true", help="do not pause the appservice "
                   "during the database snapshot (see docs/deployment.md)")

    p = add("restore", "restore a backup into DIR (empty or absent; the server stopped); "
            "PostgreSQL databases named in the configs are created if missing")
    p.add_argument("archive", metavar="IN.tar.gz")
    p.add_argument("--force", action="store_true", help="replace an existing config in DIR "
                   "and the contents of non-empty PostgreSQL databases")
    p.add_argument("--database", metavar="URL", help="restore the appservice database here "
                   "instead (postgres://...; the backup must hold a PostgreSQL dump)")
    p.add_argument("--synapse-database", metavar="URL", help="restore Synapse's database here "
                   "instead (postgres://...)")


def cmd_backup(dd: DataDir, args: argparse.Namespace) -> int:
    from .backup import backup

    for line in backup(dd, Path(args.out), pause=not args.no_pause):
        print(line)
    return EXIT_OK


def cmd_restore(dd: DataDir, args: argparse.Namespace) -> int:
    from .backup import restore

    for line in restore(dd, Path(args.archive).expanduser(), force=args.force,
                        database=args.database, synapse_database=args.synapse_database):
        print(line)
    return EXIT_OK


COMMANDS = {
    "backup": cmd_backup,
    "restore": cmd_restore,
}
