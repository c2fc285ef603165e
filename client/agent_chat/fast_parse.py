"""``ac send`` and ``ac listen`` parsed without argparse.

They are what agents run most, so their plain shapes are parsed straight from the command
table (:mod:`agent_chat.cli_table`) without importing argparse (~8 ms of a cold start);
anything this parser does not understand goes to :mod:`agent_chat.argparser`, which decides.
"""

from __future__ import annotations

from .cli_handlers import Args
from .cli_table import fast_commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cli_table import Arg, Command


def parse_fast_path(argv: list[str]) -> Args | None:
    """A ``fast`` command's plain command line parsed from the table, or None for argparse."""
    if not argv:
        return None
    for command in fast_commands():
        if command.name == argv[0]:
            values = fast_parse(command, argv[1:])
            if values is None:
                return None
            return Args(command=command.name, func=command.run, **values)
    return None


def fast_parse(command: Command, argv: list[str]) -> dict[str, object] | None:
    """``command``'s arguments from ``argv`` as argparse would parse them, or None when the
    line is anything but plain: an unknown, repeated, abbreviated or ``--x=y`` option, a value
    that starts with ``-``, a bad value, a missing argument, an option after a ``nargs="+"``
    positional began, ``--help``... argparse then decides (and words its errors)."""
    options: dict[str, Arg] = {}
    positionals: list[Arg] = []
    values: dict[str, object] = {}
    for item in command.args:
        if isinstance(item, tuple):
            return None  # mutually exclusive groups: argparse's to check
        if item.positional:
            if item.nargs not in (None, "?", "+") or item.choices is not None:
                return None
            positionals.append(item)
        elif item.action in ("store", "store_true"):
            options.update(dict.fromkeys(item.names, item))
        else:
            return None
        values[item.dest] = item.default
    seen: set[str] = set()
    index = 0
    greedy: Arg | None = None  # the nargs="+" positional taking every further word
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        option = token.startswith("-") and token != "-"
        if greedy is not None:
            if option:
                return None
            words = values[greedy.dest]
            assert isinstance(words, list)
            words.append(token)
        elif option:
            arg = options.get(token)
            if arg is None or arg.dest in seen:
                return None
            seen.add(arg.dest)
            if arg.action == "store_true":
                values[arg.dest] = True
                continue
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            try:
                values[arg.dest] = arg.type(argv[i]) if arg.type else argv[i]
            except ValueError:
                return None
            i += 1
        elif index < len(positionals):
            arg = positionals[index]
            index += 1
            if arg.nargs == "+":
                values[arg.dest] = [token]
                greedy = arg
            else:
                values[arg.dest] = token
        else:
            return None
    if any(arg.nargs != "?" for arg in positionals[index:]):
        return None  # a required argument is missing: argparse says so
    return values
