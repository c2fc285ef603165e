"""Every ``ac`` command and its arguments, declared once.

Both parsers are built from this table: :mod:`agent_chat.fast_parse` (``ac send`` and
``ac listen`` without argparse) and :mod:`agent_chat.argparser` (help, usage errors, the final
word on syntax). Each command names its handler in :mod:`agent_chat.cli_handlers`. ``ac notify``
never loads this module (:mod:`agent_chat.cli`).
"""

from __future__ import annotations

from . import cli_handlers as handlers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .cli_handlers import Args

    Handler = Callable[[Args], int]

EPILOG = """\
targets: #room (or just room), @Nick, @user:server, !room_id
files:   $AGENT_CHAT_HOME (default ~/.agent-chat): config.toml, credentials.json, state.json
env:     AGENT_CHAT_SERVER (API URL), AGENT_CHAT_NICK (one identity per nick),
         AGENT_CHAT_TOKEN (use this token, touch no files), AGENT_CHAT_HOME, NO_COLOR
exit:    0 ok, 1 error, 2 server unreachable, 3 authentication failed, 4 rate-limited,
         5 timed out (ac wait: nothing new; ac ask: no reply; ac send --wait: not reached),
         6 claimed by someone else (ac claim)"""


class Arg:
    """One argument of a command: a positional (``name``) or an option (``--name``, ``-n``).

    ``action`` is argparse's: ``store`` (a value, converted by ``type``; ``nargs`` for
    positionals), ``store_true``, ``store_const`` or ``append``. The fast path understands
    ``store`` and ``store_true``; a command line using anything else goes to argparse.
    ``type`` raises ValueError with a message on a bad value.
    """

    __slots__ = (
        "action",
        "choices",
        "const",
        "default",
        "dest",
        "help",
        "metavar",
        "names",
        "nargs",
        "type",
    )

    def __init__(
        self,
        *names: str,
        help: str | None = None,
        dest: str | None = None,
        metavar: str | None = None,
        nargs: str | None = None,
        type: Callable[[str], object] | None = None,
        default: object = None,
        action: str = "store",
        const: object = None,
        choices: Sequence[str] | None = None,
    ) -> None:
        self.names = names
        self.help = help
        long = [n for n in names if n.startswith("--")]
        self.dest = dest or (long or names)[0].lstrip("-").replace("-", "_")
        self.metavar = metavar
        self.nargs = nargs
        self.type = type
        self.default = False if action == "store_true" and default is None else default
        self.action = action
        self.const = const
        self.choices = choices

    @property
    def positional(self) -> bool:
        return not self.names[0].startswith("-")


def flag(*names: str, help: str | None) -> Arg:
    """A ``store_true`` option."""
    return Arg(*names, help=help, action="store_true")


class Command:
    """A subcommand: its help, its arguments (a tuple is a mutually exclusive group), and the
    handler that runs it. ``fast`` commands are parsed without argparse when they can be."""

    __slots__ = ("args", "description", "fast", "help", "name", "run")

    def __init__(
        self,
        name: str,
        run: Handler,
        help: str,
        description: str | None = None,
        args: Sequence[Arg | tuple[Arg, ...]] = (),
        fast: bool = False,
    ) -> None:
        self.name = name
        self.run = run
        self.help = help
        self.description = description or help
        self.args = args
        self.fast = fast

    def flat_args(self) -> list[Arg]:
        """Every argument, groups flattened."""
        out: list[Arg] = []
        for item in self.args:
            out.extend(item if isinstance(item, tuple) else (item,))
        return out


def positive(text: str) -> int:
    """``--last``: a whole number from 1 to 1000."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 1 <= value <= 1000:
        raise ValueError("must be between 1 and 1000")
    return value


def seconds(text: str) -> float:
    """``ac wait``'s durations: seconds from 0 to a year."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 31536000:
        raise ValueError("must be from 0 to 31536000 seconds")
    return value


def since_time(text: str) -> int:
    """``--since``: ``30m``/``12h``/``2d``/``1w`` ago or a date (``YYYY-MM-DD``, local time),
    as milliseconds since 1970."""
    from .search import parse_since

    return parse_since(text)


def nick_list(text: str) -> list[str]:
    """``--for``: comma-separated nicks (``BlueLake,@GreenCastle``)."""
    nicks = [n.strip() for n in text.split(",") if n.strip()]
    if not nicks:
        raise ValueError("names nobody")
    return nicks


def search_limit(text: str) -> int:
    """``ac search --limit``: a whole number from 1 to 100."""
    value = positive(text)
    if value > 100:
        raise ValueError("must be between 1 and 100")
    return value


def _json(help: str = "print JSON") -> Arg:
    return flag("--json", help=help)


def command_table() -> tuple[Command, ...]:
    """Every ``ac`` command, in the order ``ac --help`` lists them."""
    return (*fast_commands(), *_other_commands())


def fast_commands() -> tuple[Command, ...]:
    """The commands the fast path parses (``fast``): built alone, so that ``ac send`` does not
    pay for the whole table (~0.2 ms)."""
    return (
        Command(
            "send",
            handlers.send,
            "send a message to a room or a person",
            "Send a message to a room (#general) or a person (@BlueLake, @user:server).\n"
            "MESSAGE '-' reads the message from stdin. --wait shown|woken|read then waits\n"
            "(on the server, no polling) until the recipients reach that stage, prints who\n"
            "reached what and when, and exits 0, or 5 at --timeout with the stages reached.",
            fast=True,
            args=(
                Arg("target", metavar="TARGET", help="#room, @Nick or @user:server"),
                Arg(
                    "message",
                    metavar="MESSAGE",
                    nargs="+",
                    help="the text (several words are joined by spaces); '-' reads stdin",
                ),
                flag("--notice", help="send as a notice (never pushed to phones)"),
                Arg(
                    "--wait",
                    dest="wait_stage",
                    metavar="STAGE",
                    help="wait until the recipients reach shown, woken or read",
                ),
                Arg(
                    "--timeout",
                    metavar="S",
                    type=seconds,
                    help="with --wait: give up after S seconds (default 300)",
                ),
                Arg(
                    "--for",
                    dest="for_nicks",
                    metavar="NICK[,NICK...]",
                    type=nick_list,
                    help="with --wait: only these recipients (default: all of them)",
                ),
                _json("print the server's answer as JSON"),
            ),
        ),
        Command(
            "listen",
            handlers.listen,
            "show recent messages",
            "Show recent messages, oldest first, one record per message (continuation\n"
            "lines indented). Marks what it shows as read, unless --peek.",
            fast=True,
            args=(
                Arg(
                    "room",
                    metavar="TARGET",
                    nargs="?",
                    help="#room, @Nick or @user:server (default: all rooms)",
                ),
                flag("--all", help="all rooms (the default without TARGET)"),
                Arg(
                    "--last",
                    metavar="N",
                    type=positive,
                    default=10,
                    help="how many messages (1-1000, default 10)",
                ),
                flag("--unread", help="only unread messages"),
                _json("JSON lines with ids, timestamps and raw text"),
                flag(
                    "--follow",
                    "-f",
                    help="keep showing new messages as they arrive (Ctrl-C stops)",
                ),
                flag("--peek", help="do not mark messages as read"),
                Arg(
                    "--thread",
                    metavar="EVENT_ID",
                    help="show that message's thread: its root and replies (marks nothing read)",
                ),
            ),
        ),
    )


def _other_commands() -> tuple[Command, ...]:
    return (
        Command(
            "reply",
            handlers.reply,
            "reply to a message in its thread",
            "Reply to a message in a thread (Element shows it as one; a reply to a message\n"
            "in a thread goes into that thread). EVENT_ID comes from 'ac listen --json'.\n"
            "--last replies to the newest message from someone else in TARGET, or in the\n"
            "room of the message 'ac listen' showed last. A first word starting with #, @\n"
            "or ! before the message is the TARGET.",
            args=(
                Arg(
                    "words",
                    metavar="WORD",
                    nargs="+",
                    help="EVENT_ID (unless --last), then [TARGET] MESSAGE",
                ),
                Arg(
                    "--last",
                    dest="latest",
                    action="store_true",
                    help="reply to the newest message from someone else",
                ),
                _json("print the server's answer as JSON"),
            ),
        ),
        Command(
            "receipts",
            handlers.receipts,
            "what became of a message you sent, per recipient",
            "Per recipient of your message: the furthest stage it reached and when.\n"
            "counted: in their unread counts; shown: a line naming the room was put into\n"
            "their model's context (by which session and CLI); woken: a wake started a\n"
            "turn for it; read: its text was returned to them (or a person's read receipt).\n"
            "--last: your newest message (in TARGET, if given).",
            args=(
                Arg("event_id", metavar="EVENT_ID", nargs="?", help="from 'ac send --json'"),
                Arg(
                    "--last",
                    dest="last_target",
                    metavar="TARGET",
                    nargs="?",
                    const="",
                    help="your newest message (in TARGET: #room, @Nick)",
                ),
                _json(),
            ),
        ),
        Command(
            "ask",
            handlers.ask,
            "ask and wait for the answer",
            "Send MESSAGE to TARGET, then wait for the first reply in its thread (in a\n"
            "direct chat: the next message from that person) and print it under a header\n"
            "saying whose words they are. Waits on the server (no polling); marks nothing\n"
            "read. Exits 5 with one line when --timeout passes without a reply.",
            args=(
                Arg("target", metavar="TARGET", help="#room, @Nick or @user:server"),
                Arg("words", metavar="MESSAGE", nargs="+", help="the question"),
                Arg(
                    "--timeout",
                    metavar="S",
                    type=seconds,
                    default=300.0,
                    help="give up after S seconds (default 300)",
                ),
                _json("print the reply as a JSON line (like 'ac listen --json')"),
            ),
        ),
        Command(
            "search",
            handlers.search,
            "search the messages of your rooms",
            "Search the messages of the rooms you are in (the homeserver's full-text search),\n"
            "newest first, one record per message. Words match whole words; several words\n"
            "must all occur.",
            args=(
                Arg("query", metavar="QUERY", nargs="+", help="the words to look for"),
                Arg("--room", metavar="TARGET", help="only this room: #room, @Nick or !room_id"),
                Arg("--from", dest="sender", metavar="NICK", help="only messages from NICK"),
                Arg(
                    "--since",
                    metavar="WHEN",
                    type=since_time,
                    help="only messages after WHEN: 30m, 12h, 2d, 1w ago, or a date YYYY-MM-DD",
                ),
                Arg(
                    "--limit",
                    metavar="N",
                    type=search_limit,
                    default=20,
                    help="at most N results (1-100, default 20)",
                ),
                _json("JSON lines with ids, timestamps and raw text"),
            ),
        ),
        Command(
            "who", handlers.who, "list the members of a room", args=(_target("#room"), _json())
        ),
        Command(
            "notify",
            handlers.notify,
            "unread counts per room (for hooks and status bars)",
            "Unread counts per room and direct chat, never bodies. Prints nothing and\n"
            "exits 0 on any error (unless --verbose).",
            args=(
                (
                    _json('{"#general":{"count":2,"urgent":false},...}'),
                    flag("--oneline", help="#general(2) #alerts(1!)"),
                ),
            ),
        ),
        Command(
            "wait",
            handlers.wait,
            "block until something new arrives (for hooks and scripts)",
            "Block until a message arrives for you, then print the unread counts and exit 0.\n"
            "What is already unread does not end it (unless --any); reading is not news.\n"
            "Exits 5 at --timeout with nothing printed. The server holds one request\n"
            "(up to 300 s at a time): no polling.\n"
            "--session ID keeps a small state file per session, so a hook that runs\n"
            "'ac wait' again and again wakes once per new message, catches what arrived\n"
            "between runs, and wakes at most once per --min-interval (unless urgent).\n"
            "One waiter per session: a newer 'ac wait --session ID' takes over and the\n"
            "older one exits 5 without waking.",
            args=(
                flag("--urgent", help="only urgent messages and mentions"),
                flag("--dm", help="only direct messages (with --urgent: either)"),
                Arg(
                    "--timeout",
                    metavar="S",
                    type=seconds,
                    help="give up after S seconds (default: never)",
                ),
                flag("--any", help="return at once if anything is unread"),
                Arg("--session", metavar="ID", help="loop guard state for this session"),
                Arg(
                    "--min-interval",
                    metavar="S",
                    type=seconds,
                    default=10.0,
                    help="with --session: at most one wake per S seconds unless urgent "
                    "(default 10)",
                ),
                (
                    _json("print JSON like 'ac notify --json'"),
                    flag("--oneline", help="#general(2) #alerts(1!)"),
                ),
            ),
        ),
        Command("status", handlers.status, "check the server and the identity", args=(_json(),)),
        Command("channels", handlers.channels, "list the rooms you are in", args=(_json(),)),
        Command(
            "config",
            handlers.config,
            "show or change settings",
            "Show the settings, or change them in config.toml with --set.",
            args=(
                Arg(
                    "--set",
                    metavar="KEY=VALUE",
                    action="append",
                    default=[],
                    dest="assign",
                    help="server=URL, registration_token=TOKEN or nick=NAME (empty value unsets)",
                ),
                _json(),
            ),
        ),
        Command(
            "register",
            handlers.register,
            "register an agent identity",
            "Register an agent identity with the server and store its token.\n"
            "NAME asks for exactly that name: taken on the server is an error, already\n"
            "stored in this home is not. Without NAME the server picks a free name (or\n"
            "AGENT_CHAT_NICK is used). The first identity stored in a home is its\n"
            "default (what commands use without AGENT_CHAT_NICK); a later one becomes\n"
            "the default only with --default.",
            args=(
                Arg("nick", metavar="NAME", nargs="?", help="the nick to register"),
                _default_flag(),
            ),
        ),
        Command(
            "login",
            handlers.login,
            "log in as a human (asks for the password)",
            "Log in as a human (the password is read from the terminal, or a line of stdin)\n"
            "and store the token. The first identity stored in a home is its default;\n"
            "a later one becomes the default only with --default.",
            args=(Arg("user", metavar="NAME", help="your Matrix user name"), _default_flag()),
        ),
        Command(
            "logout",
            handlers.logout,
            "revoke this identity's token and forget it here",
            "The server revokes the token of the identity commands use here (a human's last\n"
            "one also ends the Matrix session that ac login opened), and it is removed from\n"
            "this home. With AGENT_CHAT_TOKEN set, that token is revoked and no file changes.",
        ),
        Command(
            "whoami",
            handlers.whoami,
            "which identity commands use here, and why",
            "Which identity a plain command would use right now and why (AGENT_CHAT_TOKEN,\n"
            "AGENT_CHAT_NICK, config.toml's identity.nick, or this home's default), the\n"
            "server, and the other identities stored for it. Asks the server nothing.",
            args=(_json(),),
        ),
        Command(
            "create-room",
            handlers.create_room,
            "create a public room",
            args=(
                Arg("alias", metavar="'#name'", help="the room alias, e.g. '#builds'"),
                Arg("--topic", metavar="TEXT", help="the room topic"),
            ),
        ),
        Command(
            "join", handlers.join, "join a room", args=(_target("room alias or id", "'#room'"),)
        ),
        Command(
            "claim",
            handlers.claim,
            "claim files of this repository (exit 6: someone else holds them)",
            "Claim paths of this repository so others' tools warn before they collide.\n"
            "PATTERN is a git-style glob relative to the repository root (*, ?, [a-z],\n"
            "** for any number of folders). Exclusive claims conflict with any overlapping\n"
            "claim of another agent, shared ones only with exclusive ones. A conflict is\n"
            "one line naming the holder, the reason and the expiry, and exit code 6.",
            args=(
                Arg("patterns", metavar="PATTERN", nargs="+", help="e.g. 'src/api/**'"),
                Arg(
                    "--ttl",
                    metavar="DURATION",
                    type=_ttl,
                    default=7200,  # claims.DEFAULT_TTL (test_client_cli_parse checks)
                    help="how long it holds: 30m, 2h (default), 1d; at most 7d",
                ),
                Arg("--reason", metavar="TEXT", help="what you are doing (shown to others)"),
                (
                    flag("--exclusive", help="nobody else may claim these (the default)"),
                    flag("--shared", help="others may claim them shared too"),
                ),
                flag("--force", help="take over others' claims (they get a direct message)"),
                _project_arg(),
                _json(),
            ),
        ),
        Command(
            "claims",
            handlers.claims,
            "list the active claims of this repository",
            "List the active claims of this repository's project, or those covering PATHs.\n"
            "--check-staged is the pre-commit hook's check (see 'ac setup git').",
            args=(
                Arg("paths", metavar="PATH", nargs="*", help="only claims covering these paths"),
                flag("--mine", help="only your own claims"),
                _json(),
                _project_arg(),
                flag(
                    "--check-staged",
                    help="warn about staged files others have claimed (the git hook)",
                ),
                flag(
                    "--strict",
                    help="with --check-staged: fail on a conflict, or when it cannot check",
                ),
            ),
        ),
        Command(
            "release",
            handlers.release,
            "release your claims",
            args=(
                Arg("patterns", metavar="PATTERN", nargs="*", help="the claimed patterns"),
                flag("--all", help="every claim you hold in this project"),
                _project_arg(),
            ),
        ),
        Command(
            "setup",
            handlers.setup,
            "install hooks, skills and commands for an agent CLI",
            "Install the Agent Chat integration for an agent CLI: unread-count hooks,\n"
            "skills or commands, a status line. Merges into existing settings (with a\n"
            "backup), shows what it changed; running it twice changes nothing.\n"
            "'hook' only writes the hook's credentials ($AGENT_CHAT_HOME/hook/).",
            args=(
                Arg(
                    "target",
                    metavar="TARGET",
                    choices=["claude", "codex", "gemini", "tmux", "hook", "git"],
                    help="claude, codex, gemini, tmux, hook or git (a pre-commit claims check)",
                ),
                (
                    Arg(
                        "--user",
                        dest="scope",
                        action="store_const",
                        const="user",
                        help="your user settings, e.g. ~/.claude (the default)",
                    ),
                    Arg(
                        "--project",
                        dest="scope",
                        action="store_const",
                        const="project",
                        help="this directory's settings, e.g. ./.claude",
                    ),
                ),
                flag("--dry-run", help="show the changes, write nothing"),
                flag("--uninstall", help="remove what setup added"),
                flag("--no-mcp", help="do not add (or remove) the 'ac mcp' MCP server entry"),
                flag(
                    "--no-wake",
                    help="claude: do not add (or remove) the hooks that wake an idle session",
                ),
                flag("--strict", help="git: refuse commits touching others' claims"),
                flag("--quiet", help=None),  # for the hook's own bootstrap: not in --help
            ),
        ),
        Command(
            "mcp",
            handlers.mcp,
            "run the MCP server on stdio (chat, ask and claims tools)",
            "Run a Model Context Protocol server on stdin/stdout with the tools send,\n"
            "read, who, notify, ask, claim, claims and release, as this identity.\n"
            "Register it with e.g.\n"
            "claude mcp add agent-chat -- ac mcp\n\n"
            "With --channel it is also a Claude Code channel: new direct messages,\n"
            "mentions and urgent messages are pushed into the running session\n"
            "(claude --dangerously-load-development-channels server:agent-chat), and a\n"
            "reply tool answers them. With --permission-relay HUMAN, Claude Code's\n"
            "permission prompts go to HUMAN as direct messages, answered 'yes ID' / 'no ID'.",
            args=(
                flag("--channel", help="push new messages as Claude Code channel notifications"),
                Arg(
                    "--channel-events",
                    metavar="LIST",
                    default="dm,mention,urgent",
                    help="what is pushed: any of dm,mention,urgent (default: all three)",
                ),
                Arg(
                    "--allow-human",
                    metavar="NAME",
                    action="append",
                    default=[],
                    help="only these humans (user id or its localpart; repeatable) reach the "
                    "session; agents always do",
                ),
                Arg(
                    "--permission-relay",
                    metavar="HUMAN",
                    default=None,
                    help="send Claude Code's permission prompts to HUMAN as direct messages; "
                    "their 'yes ID' / 'no ID' answers them",
                ),
            ),
        ),
        Command(
            "tui",
            handlers.tui,
            "the terminal client for humans (needs agent-chat[tui])",
            "An interactive terminal client for the humans who watch the agents: rooms and\n"
            "direct chats with unread counts, the timeline, threads, mentions, agents and\n"
            "claims, live over the API. Marks read only what was on screen (--peek: nothing).\n"
            "Needs the 'tui' extra: pip install 'agent-chat[tui]'. Press ? for its keys.",
            args=(
                Arg("--nick", metavar="NAME", help="run as this stored identity"),
                flag("--peek", help="mark nothing read"),
                _project_arg(),
            ),
        ),
        Command(
            "run",
            handlers.run,
            "run an agent CLI and wake it when a message arrives while it is idle",
            "Run CLI (codex, gemini, claude, or any other) in a terminal of its own, passed\n"
            "through untouched. When a direct or urgent message arrives (--wake) while the\n"
            "CLI sits quiet at its prompt (no output, no keystroke for a few seconds), the\n"
            "unread counts line is typed into it and submitted: never a message body, once\n"
            "per event, at most once per --min-interval unless urgent (as ac wait --session).\n"
            "Exit status: the CLI's; 127 when it is not found.",
            args=(
                Arg("--nick", metavar="NAME", help="wake for this identity (and give it to CLI)"),
                Arg(
                    "--wake",
                    metavar="WHAT",
                    default="urgent,dm",
                    help="urgent,dm (default), urgent, dm, all or none",
                ),
                Arg(
                    "--min-interval",
                    metavar="S",
                    type=seconds,
                    default=10.0,
                    help="at most one wake per S seconds unless urgent (default 10)",
                ),
                Arg("cli", metavar="-- CLI [ARGS...]", nargs="...", help="the agent CLI"),
            ),
        ),
    )


def _project_arg() -> Arg:
    return Arg(
        "--project",
        metavar="P",
        help="the project (default: the repository's origin URL, else its folder name)",
    )


def _ttl(text: str) -> int:
    from .claims import ttl_seconds

    return ttl_seconds(text)


def _default_flag() -> Arg:
    return flag(
        "--default", help="make it this home's default identity (used without AGENT_CHAT_NICK)"
    )


def _target(help: str = "#room", metavar: str = "TARGET") -> Arg:
    return Arg("target", metavar=metavar, help=help)
