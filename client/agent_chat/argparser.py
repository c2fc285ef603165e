"""The ``ac`` argparse parser, built from the command table (:mod:`agent_chat.cli_table`).

It has the final word on syntax and writes ``--help`` and the usage errors (one line, exit
code 1). Only command lines the fast path (:mod:`agent_chat.fast_parse`) declines load it.
"""

from __future__ import annotations

import argparse

from .cli_handlers import Args, no_command
from .cli_table import EPILOG, command_table
from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from .cli_table import Arg


def parse(argv: list[str]) -> Args:
    """``argv`` parsed by argparse (usage errors raise UsageError, ``--help`` exits)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv, namespace=Args(command=None, func=no_command))
    if extra:  # argparse words this as the main parser's: point to the command's own help
        prog = f"ac {args.command}" if args.command else "ac"
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prog} --help')")
    return args


def build_parser() -> argparse.ArgumentParser:
    """The ``ac`` parser, built from :func:`command_table`."""
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse that reports usage errors as one line and exit code 1 (2 means network)."""

        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{message} (see '{self.prog} --help')")

    common = Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show requests and error details on stderr",
    )
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
    for command in command_table():
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            parents=[common],
            formatter_class=fmt,
        )
        for item in command.args:
            if isinstance(item, tuple):
                group = p.add_mutually_exclusive_group()
                for arg in item:
                    _add_argument(group, arg)
            else:
                _add_argument(p, item)
        p.set_defaults(func=command.run)
    return parser


def _add_argument(parser: argparse._ActionsContainer, arg: Arg) -> None:
    import argparse

    # argparse's keywords differ by action (store_true takes no type or metavar): only the
    # ones set are passed, so their values are of several types.
    kwargs: dict[str, Any] = {"action": arg.action}
    kwargs["help"] = argparse.SUPPRESS if arg.help is None else arg.help
    if not arg.positional:
        kwargs["dest"] = arg.dest
    for key in ("metavar", "nargs", "choices", "const"):
        value = getattr(arg, key)
        if value is not None:
            kwargs[key] = value
    if arg.type is not None:
        kwargs["type"] = _argparse_type(arg.type)
    if arg.action in ("store", "append") and arg.default is not None:
        kwargs["default"] = arg.default
    parser.add_argument(*arg.names, **kwargs)


def _argparse_type(convert: Callable[[str], object]) -> Callable[[str], object]:
    """``convert`` with its ValueError turned into argparse's error (its message is shown)."""
    import argparse

    def check(text: str) -> object:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    check.__name__ = convert.__name__
    return check


def _version() -> str:
    from . import __version__

    return __version__
