"""The handlers: a parsed command line (:class:`Args`) to its command's function.

Each handler checks what only the combination of flags can tell, and calls the command with
its flags as keyword arguments. They import their command's module when they run, so parsing
``ac send`` loads nothing of ``ac claim``.
"""

from __future__ import annotations

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import Context

    Handler = Callable[["Args"], int]


class Args:
    """A parsed command line: argparse fills one (``namespace=``), and so does the fast path.

    Each command sets only its own attributes (plus ``func``, ``command`` and ``verbose``).
    """

    func: Handler
    command: str | None
    verbose: bool
    json: bool
    # send, who, join, setup
    target: str
    # send
    message: list[str]
    notice: bool
    wait_stage: str | None
    for_nicks: list[str] | None
    # receipts
    event_id: str | None
    last_target: str | None
    # listen
    room: str | None
    all: bool
    last: int
    unread: bool
    follow: bool
    peek: bool
    thread: str | None
    # reply, ask
    words: list[str]
    latest: bool
    # notify, wait
    oneline: bool
    # wait
    urgent: bool
    dm: bool
    timeout: float | None
    any: bool
    session: str | None
    min_interval: float
    # search (and listen's room)
    query: list[str]
    sender: str | None
    since: int | None
    limit: int
    # config
    assign: list[str]
    # register (nick), login (user), create-room (alias, topic)
    default: bool
    nick: str | None
    user: str
    alias: str
    topic: str | None
    # setup
    scope: str | None
    dry_run: bool
    uninstall: bool
    no_mcp: bool
    no_wake: bool
    quiet: bool
    # claim, claims, release
    patterns: list[str]
    paths: list[str]
    ttl: int
    reason: str | None
    shared: bool
    exclusive: bool
    force: bool
    project: str | None
    mine: bool
    check_staged: bool
    strict: bool
    # run
    cli: list[str]
    wake: str
    # mcp
    channel: bool
    channel_events: str
    allow_human: list[str]
    permission_relay: str | None

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def _context(args: Args) -> Context:
    from .context import Context

    return Context(verbose=args.verbose)


def send(args: Args) -> int:
    from . import commands

    return commands.send(
        _context(args),
        args.target,
        args.message,
        notice=args.notice,
        as_json=args.json,
        wait=args.wait_stage,
        timeout=args.timeout,
        for_nicks=args.for_nicks,
    )


def listen(args: Args) -> int:
    from . import commands

    if args.room and args.all:
        raise UsageError("give either TARGET or --all (see 'ac listen --help')")
    if args.thread is not None and (args.room or args.all or args.unread or args.follow):
        raise UsageError("--thread shows one thread: no TARGET, --all, --unread or --follow")
    return commands.listen(
        _context(args),
        args.room,
        last=args.last,
        unread=args.unread,
        as_json=args.json,
        follow=args.follow,
        peek=args.peek,
        thread=args.thread,
    )


def reply(args: Args) -> int:
    from . import ask

    return ask.reply(_context(args), args.words, last=args.latest, as_json=args.json)


def receipts(args: Args) -> int:
    from . import receipts

    return receipts.receipts(
        _context(args), args.event_id, last=args.last_target, as_json=args.json
    )


def ask(args: Args) -> int:
    from . import ask

    timeout = ask.ASK_TIMEOUT if args.timeout is None else args.timeout
    return ask.ask(_context(args), args.target, args.words, timeout=timeout, as_json=args.json)


def search(args: Args) -> int:
    from . import search

    return search.search(
        _context(args),
        " ".join(args.query),
        room=args.room,
        sender=args.sender,
        since=args.since,
        limit=args.limit,
        as_json=args.json,
    )


def who(args: Args) -> int:
    from . import commands

    return commands.who(_context(args), args.target, as_json=args.json)


def notify(args: Args) -> int:
    from . import commands

    flags = ["--json"] if args.json else ["--oneline"] if args.oneline else []
    return commands.notify_graceful(flags, verbose=args.verbose)


def wait(args: Args) -> int:
    from . import wait

    return wait.wait(
        _context(args),
        urgent=args.urgent,
        dm=args.dm,
        timeout=args.timeout,
        fmt="json" if args.json else "oneline" if args.oneline else "words",
        any_unread=args.any,
        session=args.session,
        min_interval=args.min_interval,
    )


def status(args: Args) -> int:
    from . import commands

    return commands.status(_context(args), as_json=args.json)


def channels(args: Args) -> int:
    from . import commands

    return commands.channels(_context(args), as_json=args.json)


def config(args: Args) -> int:
    from . import commands

    return commands.config(_context(args), args.assign, as_json=args.json)


def register(args: Args) -> int:
    from . import commands

    return commands.register(_context(args), args.nick, make_default=args.default)


def login(args: Args) -> int:
    from . import commands

    return commands.login(_context(args), args.user, make_default=args.default)


def logout(args: Args) -> int:
    from . import commands

    return commands.logout(_context(args))


def whoami(args: Args) -> int:
    from . import whoami

    return whoami.whoami(_context(args), as_json=args.json)


def create_room(args: Args) -> int:
    from . import commands

    return commands.create_room(_context(args), args.alias, topic=args.topic)


def join(args: Args) -> int:
    from . import commands

    return commands.join(_context(args), args.target)


def claim(args: Args) -> int:
    from . import claims

    request = claims.ClaimRequest(
        args.patterns,
        ttl=args.ttl,
        reason=args.reason,
        shared=args.shared,
        force=args.force,
        project=args.project,
    )
    return claims.claim(_context(args), request, as_json=args.json)


def claims(args: Args) -> int:
    from . import claims

    if args.check_staged:
        return claims.check_staged(_context(args), strict=args.strict, project=args.project)
    return claims.claims(
        _context(args), args.paths, mine=args.mine, as_json=args.json, project=args.project
    )


def release(args: Args) -> int:
    from . import claims

    return claims.release(_context(args), args.patterns, everything=args.all, project=args.project)


def setup(args: Args) -> int:
    if args.target == "git":
        from . import claims

        return claims.setup_git(uninstall=args.uninstall, dry_run=args.dry_run, strict=args.strict)
    from . import setup

    return setup.run(
        _context(args),
        args.target,
        scope=args.scope,
        dry_run=args.dry_run,
        uninstall=args.uninstall,
        quiet=args.quiet,
        mcp=not args.no_mcp,
        wake=not args.no_wake,
    )


def mcp(args: Args) -> int:
    from . import mcp_server

    return mcp_server.main(
        _context(args),
        channel=args.channel,
        events=args.channel_events,
        allow_humans=tuple(args.allow_human),
        permission_relay=args.permission_relay,
    )


def tui(args: Args) -> int:
    from . import tui

    return tui.main(nick=args.nick, peek=args.peek, project=args.project)


def run(args: Args) -> int:
    from . import run

    argv = list(args.cli)
    if not argv or argv[0] != "--" or len(argv) < 2:
        raise UsageError("ac run needs -- and the command to run: ac run [OPTIONS] -- CLI")
    return run.main(
        _context(args), argv[1:], wake=args.wake, min_interval=args.min_interval, nick=args.nick
    )


def no_command(args: Args) -> int:
    raise UsageError("a command is required (see 'ac --help')")
