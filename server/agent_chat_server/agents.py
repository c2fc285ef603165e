"""``agent-chat-server agents list|retire|prune``: the agents the appservice knows, through its
admin routes (authorised by the admin token derived from the as_token, as ``bot add``)."""

from __future__ import annotations

from typing import Any
import argparse
import json
import re
import time

from .accounts import AddParser, admin_call
from .errors import EXIT_USAGE, ServerError
from .paths import DataDir

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds → seconds (at least 1)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a whole number with s, m, h, d or w (e.g. 30d)"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def add_parsers(add: AddParser) -> None:
    p = add("agents", "list agents, retire one, or prune the idle ones")
    p.add_argument("action", choices=["list", "retire", "prune"])
    p.add_argument("name", nargs="?", help="retire: the agent's name (or @user:server)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    p.add_argument(
        "--idle",
        type=duration,
        metavar="DURATION",
        help="prune: retire agents idle longer than this (30d, 12h, 90m, ...)",
    )
    p.add_argument("--dry-run", action="store_true", help="prune: only say whom it would retire")


def _ago(ts_ms: object, now: float) -> str:
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        return "never"
    seconds = max(0.0, now - ts_ms / 1000)
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def _printable(value: object) -> str:
    """Names and labels come from users: no control characters reach the terminal."""
    text = str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


def _table(agents: list[dict[str, Any]]) -> list[str]:
    now = time.time()
    rows = [
        (
            _printable(a.get("nick", "?")),
            _printable(a.get("user_id", "?")),
            _printable(a.get("kind", "?")),
            _ago(a.get("last_active"), now),
            " ".join(_printable(r) for r in a.get("rooms") or []) or "-",
        )
        for a in agents
    ]
    header = ("NICK", "USER ID", "KIND", "LAST ACTIVE", "ROOMS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in [header, *rows]
    ]


def cmd_agents(dd: DataDir, args: argparse.Namespace) -> int:
    if args.action != "retire" and args.name:
        raise ServerError(f"'agents {args.action}' takes no name")
    if args.action != "prune" and (args.idle is not None or args.dry_run):
        raise ServerError("--idle and --dry-run go with 'agents prune'")
    if args.action == "list":
        data = admin_call(dd, "/admin/agents")
        agents = list(data.get("agents") or [])
        if args.json:
            print(json.dumps(agents, indent=2))
        else:
            for line in _table(agents):
                print(line.rstrip())
        return 0
    if args.action == "retire":
        if not args.name:
            raise ServerError("name the agent to retire: agents retire NAME")
        entry = admin_call(dd, "/admin/agents/retire", {"name": args.name})
        left = ", ".join(_printable(r) for r in entry.get("rooms_left") or []) or "no rooms"
        print(
            f"retired {_printable(entry['nick'])} ({_printable(entry['user_id'])}): left "
            f"{left}; its tokens no longer work and the name is free"
        )
        return 0
    if args.idle is None:
        raise ServerError("say how idle: agents prune --idle 30d", EXIT_USAGE)
    data = admin_call(
        dd, "/admin/agents/prune", {"idle_seconds": args.idle, "dry_run": args.dry_run}
    )
    agents = list(data.get("agents") or [])
    verb = "would retire" if args.dry_run else "retired"
    if not agents:
        print("no agent has been idle that long")
        return 0
    now = time.time()
    print(f"{verb} {len(agents)} agent{'' if len(agents) == 1 else 's'}:")
    for a in agents:
        ago = _ago(a.get("last_active"), now)
        active = "never active" if ago == "never" else "last active " + ago
        print(f"  {_printable(a.get('nick'))} ({_printable(a.get('user_id'))}), {active}")
    return 0


COMMANDS = {"agents": cmd_agents}
