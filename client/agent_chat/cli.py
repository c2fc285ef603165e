"""``ac``: the Agent Chat command line.

Exit codes: 0 success; 1 any other error (usage errors included); 2 server unreachable;
3 authentication failed; 4 rate-limited. Errors are one line on stderr; ``--verbose`` adds detail.

``ac notify`` runs before every tool call of an agent, so it takes a fast path that does not
even build the argparse parser; the rest of the commands share one parser built on demand.
"""

import sys

from .errors import EXIT_ERROR, AcError, UsageError

NOTIFY_FLAGS = {"--json", "--oneline"}
VERBOSE_FLAGS = {"--verbose", "-v"}

EPILOG = """\
targets: #room (or just room), @Nick, @user:server, !room_id
files:   $AGENT_CHAT_HOME (default ~/.agent-chat): config.toml, credentials.json, state.json
env:     AGENT_CHAT_SERVER (API URL), AGENT_CHAT_NICK (one identity per nick),
         AGENT_CHAT_TOKEN (use this token, touch no files), AGENT_CHAT_HOME, NO_COLOR
exit:    0 ok, 1 error, 2 server unreachable, 3 authentication failed, 4 rate-limited"""


def main(argv=None):
    """Console-script entry point: run and exit with the command's code."""
    sys.exit(run(sys.argv[1:] if argv is None else list(argv)))


def run(argv):
    """Run one ``ac`` command line; return its exit code."""
    try:
        sys.stdout.reconfigure(errors="replace")
    except (AttributeError, ValueError):
        pass
    verbose = any(a in VERBOSE_FLAGS for a in argv)
    try:
        rest = [a for a in argv if a not in VERBOSE_FLAGS]
        if rest and rest[0] == "notify" and _fast_notify_ok(rest[1:]):
            from .commands import notify_graceful

            return notify_graceful(rest[1:], verbose)
        code = _fast_path(rest, verbose)
        if code is not None:
            return code
        return _dispatch(argv)
    except AcError as e:
        return _report(e.message, e.detail if verbose else None, e.exit_code)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # ConfigFileError, OSError on our own files, ...
        from .errors import ConfigFileError

        if isinstance(e, (ConfigFileError, OSError)):
            return _report(str(e), None, EXIT_ERROR)
        if verbose:
            import traceback

            traceback.print_exc()
        return _report(f"unexpected error: {type(e).__name__}: {e}", None, EXIT_ERROR)


LISTEN_FLAGS = {
    "--all": "all",
    "--unread": "unread",
    "--json": "json",
    "--follow": "follow",
    "-f": "follow",
    "--peek": "peek",
}


def _fast_path(rest, verbose):
    """``send`` and ``listen`` in their plain shapes without building the argparse parser
    (~8 ms of a cold start); anything unusual (other options, errors, help) returns None and
    goes through argparse, which has the final word on syntax and error messages."""
    if len(rest) >= 3 and rest[0] == "send":
        target, words = rest[1], rest[2:]
        if target.startswith("-") or (words != ["-"] and any(w.startswith("-") for w in words)):
            return None
        from . import commands

        return commands.send(commands.Context(verbose), target, words)
    if rest and rest[0] == "listen":
        target = None
        opts = {"all": False, "unread": False, "json": False, "follow": False, "peek": False}
        last = 10
        i = 1
        while i < len(rest):
            arg = rest[i]
            if arg in LISTEN_FLAGS and not opts[LISTEN_FLAGS[arg]]:
                opts[LISTEN_FLAGS[arg]] = True
            elif (
                arg == "--last"
                and i + 1 < len(rest)
                and rest[i + 1].isdigit()
                and 1 <= int(rest[i + 1]) <= 1000
                and rest[i + 1].isascii()
            ):
                last = int(rest[i + 1])
                i += 1
            elif not arg.startswith("-") and target is None and arg:
                target = arg
            else:
                return None
            i += 1
        if target and opts["all"]:
            return None
        from . import commands

        return commands.listen(
            commands.Context(verbose),
            target,
            last,
            opts["unread"],
            opts["json"],
            opts["follow"],
            opts["peek"],
        )
    return None


def _fast_notify_ok(flags):
    return set(flags) <= NOTIFY_FLAGS and len(set(flags)) < 2 and len(flags) <= 1


def _report(message, detail, code):
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()
    from .safe_text import one_line

    sys.stderr.write(f"ac: error: {one_line(message)}\n")
    if detail:
        sys.stderr.write(f"ac: detail: {one_line(str(detail))}\n")
    return code


def _silence_stdout():
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --- argument parsing ------------------------------------------------------------------------


def _parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse that reports usage errors as one line and exit code 1 (2 means network)."""

        def error(self, message):
            raise UsageError(f"{message} (see '{self.prog} --help')")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show requests and error details on stderr",
    )

    def positive(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 1 <= value <= 1000:
            raise argparse.ArgumentTypeError("must be between 1 and 1000")
        return value

    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="ac",
        description="Agent Chat: real-time chat for coding agents and the humans who watch them.",
        epilog=EPILOG,
        formatter_class=fmt,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version="ac " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name, help_text, description=None):
        return sub.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            parents=[common],
            formatter_class=fmt,
        )

    p = command(
        "send",
        "send a message to a room or a person",
        "Send a message to a room (#general) or a person (@BlueLake, @user:server).\n"
        "MESSAGE '-' reads the message from stdin.",
    )
    p.add_argument("target", metavar="TARGET", help="#room, @Nick or @user:server")
    p.add_argument(
        "message",
        metavar="MESSAGE",
        nargs="+",
        help="the text (several words are joined by spaces); '-' reads stdin",
    )
    p.add_argument(
        "--notice", action="store_true", help="send as a notice (never pushed to phones)"
    )
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")

    p = command(
        "listen",
        "show recent messages",
        "Show recent messages, oldest first, one record per message (continuation\n"
        "lines indented). Marks what it shows as read, unless --peek.",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        nargs="?",
        help="#room, @Nick or @user:server (default: all rooms)",
    )
    p.add_argument("--all", action="store_true", help="all rooms (the default without TARGET)")
    p.add_argument(
        "--last",
        metavar="N",
        type=positive,
        default=10,
        help="how many messages (1-1000, default 10)",
    )
    p.add_argument("--unread", action="store_true", help="only unread messages")
    p.add_argument(
        "--json", action="store_true", help="JSON lines with ids, timestamps and raw text"
    )
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep polling for new messages (Ctrl-C stops)"
    )
    p.add_argument("--peek", action="store_true", help="do not mark messages as read")

    p = command("who", "list the members of a room")
    p.add_argument("target", metavar="TARGET", help="#room")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "notify",
        "unread counts per room (for hooks and status bars)",
        "Unread counts per room and direct chat, never bodies. Prints nothing and\n"
        "exits 0 on any error (unless --verbose).",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--json", action="store_true", help='{"#general":{"count":2,"urgent":false},...}'
    )
    group.add_argument("--oneline", action="store_true", help="#general(2) #alerts(1!)")

    p = command("status", "check the server and the identity")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("channels", "list the rooms you are in")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "config",
        "show or change settings",
        "Show the settings, or change them in config.toml with --set.",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="assign",
        help="server=URL, registration_token=TOKEN or nick=NAME (empty value unsets)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "register",
        "register an agent identity",
        "Register an agent identity with the server and store its token.\n"
        "Without NAME the server picks a free name (or AGENT_CHAT_NICK is used).",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="the nick to register")

    p = command("login", "log in as a human (asks for the password)")
    p.add_argument("name", metavar="NAME", help="your Matrix user name")

    p = command("create-room", "create a public room")
    p.add_argument("name", metavar="'#name'", help="the room alias, e.g. '#builds'")
    p.add_argument("--topic", metavar="TEXT", help="the room topic")

    p = command("join", "join a room")
    p.add_argument("target", metavar="'#room'", help="room alias or id")

    p = command(
        "setup",
        "install hooks, skills and commands for an agent CLI",
        "Install the Agent Chat integration for an agent CLI: unread-count hooks,\n"
        "skills or commands, a status line. Merges into existing settings (with a\n"
        "backup), shows what it changed; running it twice changes nothing.\n"
        "'hook' only writes the hook's credentials ($AGENT_CHAT_HOME/hook/).",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        choices=["claude", "codex", "gemini", "tmux", "hook"],
        help="claude, codex, gemini, tmux or hook",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--user",
        dest="scope",
        action="store_const",
        const="user",
        help="your user settings, e.g. ~/.claude (the default)",
    )
    scope.add_argument(
        "--project",
        dest="scope",
        action="store_const",
        const="project",
        help="this directory's settings, e.g. ./.claude",
    )
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p.add_argument("--uninstall", action="store_true", help="remove what setup added")
    p.add_argument(
        "--no-mcp",
        action="store_true",
        help="do not add (or remove) the 'ac mcp' MCP server entry",
    )
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)

    command(
        "mcp",
        "run the MCP server on stdio (send, read, who, notify tools)",
        "Run a Model Context Protocol server on stdin/stdout with the tools send,\n"
        "read, who and notify, as this identity. Needs the 'mcp' extra:\n"
        "pip install 'agent-chat[mcp]'. Register it with e.g.\n"
        "claude mcp add agent-chat -- ac mcp",
    )
    return parser


def _version():
    from . import __version__

    return __version__


def _dispatch(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        raise UsageError("a command is required (see 'ac --help')")
    from . import commands

    ctx = commands.Context(verbose=getattr(args, "verbose", False))
    name = args.command
    if name == "notify":
        flags = ["--json"] if args.json else ["--oneline"] if args.oneline else []
        return commands.notify_graceful(flags, ctx.verbose)
    if name == "send":
        return commands.send(ctx, args.target, args.message, args.notice, args.json)
    if name == "listen":
        if args.target and args.all:
            raise UsageError("give either TARGET or --all (see 'ac listen --help')")
        return commands.listen(
            ctx, args.target, args.last, args.unread, args.json, args.follow, args.peek
        )
    if name == "who":
        return commands.who(ctx, args.target, args.json)
    if name == "status":
        return commands.status(ctx, args.json)
    if name == "channels":
        return commands.channels(ctx, args.json)
    if name == "config":
        return commands.config(ctx, args.assign, args.json)
    if name == "register":
        return commands.register(ctx, args.name)
    if name == "login":
        return commands.login(ctx, args.name)
    if name == "create-room":
        return commands.create_room(ctx, args.name, args.topic)
    if name == "join":
        return commands.join(ctx, args.target)
    if name == "setup":
        from . import setup

        return setup.run(
            ctx,
            args.target,
            args.scope,
            args.dry_run,
            args.uninstall,
            args.quiet,
            mcp=not args.no_mcp,
        )
    if name == "mcp":
        from . import mcp_server

        return mcp_server.main(ctx)
    raise UsageError(f"unknown command {name!r}")
