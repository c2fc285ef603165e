"""agent_chat.cli_table: the fast path and argparse, built from one command table, agree.

The fast path parses ``ac send`` and ``ac listen`` without importing argparse; whenever it
accepts a command line, argparse must read that line the same way (and whenever it declines,
argparse decides). These run every short combination of each fast command's flags, values and
words through both.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from agent_chat import argparser, cli, cli_handlers, cli_table, fast_parse
from agent_chat.errors import UsageError
from helpers import free_port

TABLE = {c.name: c for c in cli_table.command_table()}
FAST = [c for c in cli_table.command_table() if c.fast]

#: Words that are no flag of any command, odd shapes argparse has rules for.
ODD = ["--bogus", "-x", "--", "-5", "", "-", "--json=1", "--la", "-fv", "-h"]


def vocabulary(command: cli_table.Command) -> list[str]:
    words = ["#room", "hello"]
    for arg in command.flat_args():
        if arg.positional:
            continue
        words.extend(arg.names)
        if arg.action == "store":
            words.extend(["5", "0", "1001", "x"])
    return sorted(set(words + ODD))


PARSER = argparser.build_parser()


def argparse_values(command: cli_table.Command, argv: list[str]) -> dict[str, object] | None:
    """What argparse makes of ``ac COMMAND ARGV`` (None: a usage error or help)."""
    try:
        args = PARSER.parse_args([command.name, *argv], namespace=cli_handlers.Args())
    except (UsageError, SystemExit):
        return None
    return {arg.dest: getattr(args, arg.dest) for arg in command.flat_args()}


@pytest.mark.parametrize("command", FAST, ids=[c.name for c in FAST])
def test_fast_path_agrees_with_argparse(
    command: cli_table.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    words = vocabulary(command)
    accepted = 0
    for n in range(4):
        for argv in itertools.product(words, repeat=n):
            fast = fast_parse.fast_parse(command, list(argv))
            if fast is None:
                continue
            accepted += 1
            assert fast == argparse_values(command, list(argv)), argv
    capsys.readouterr()  # argparse's --help output
    assert accepted > 100  # the fast path does take the plain shapes


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "#room", "hello", "world"],
        ["send", "@Nick", "-"],
        ["send", "--notice", "#room", "hi"],
        ["listen"],
        ["listen", "--last", "20"],
        ["listen", "#room", "--unread", "--peek"],
        ["listen", "--json", "-f"],
    ],
)
def test_plain_shapes_take_the_fast_path(argv: list[str]) -> None:
    args = fast_parse.parse_fast_path(argv)
    assert args is not None and args.func is TABLE[argv[0]].run


def test_fast_commands_are_the_tables_fast_ones() -> None:
    assert [c.name for c in cli_table.fast_commands()] == [c.name for c in FAST]
    assert all(c.fast for c in cli_table.fast_commands())
    assert fast_parse.parse_fast_path(["who", "#room"]) is None  # not fast: argparse


def test_every_fast_command_uses_only_what_the_fast_path_reads() -> None:
    for command in FAST:
        for arg in command.args:
            assert not isinstance(arg, tuple), command.name
            assert arg.action in ("store", "store_true"), (command.name, arg.names)
            assert arg.nargs in (None, "?", "+") and arg.choices is None


def test_notify_fast_flags_are_the_tables() -> None:
    names = {name for arg in TABLE["notify"].flat_args() for name in arg.names}
    assert names == cli.NOTIFY_FLAGS
    for n in range(3):
        for flags in itertools.product([*sorted(names), "--bogus"], repeat=n):
            if cli._fast_notify_ok(list(flags)):
                assert argparse_values(TABLE["notify"], list(flags)) is not None, flags


def test_every_command_dispatches_to_its_handler() -> None:
    for command in cli_table.command_table():
        argv = [command.name]
        for arg in command.flat_args():
            if arg.positional and arg.nargs in (None, "+"):
                argv.append(arg.choices[0] if arg.choices else "x")
        assert argparser.parse(argv).func is command.run, command.name
    with pytest.raises(UsageError, match="a command is required"):
        args = argparser.parse([])
        args.func(args)


def test_hot_paths_import_neither_argparse_nor_typing() -> None:
    """``ac notify`` loads no command table; ``ac send``/``ac listen`` no argparse; none of
    them ``typing`` or ``dataclasses`` (milliseconds each)."""
    code = (
        "import sys; from agent_chat import cli\n"
        "heavy = ('argparse', 'typing', 'dataclasses')\n"
        "cli.run(['notify']); cli.run(['notify', '--oneline'])\n"
        "table = ('agent_chat.cli_table', 'agent_chat.fast_parse')\n"
        "print(sorted(m for m in (*heavy, *table) if m in sys.modules))\n"
        "cli.run(['send', '#r', 'x']); cli.run(['listen', '--last', '20'])\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env["AGENT_CHAT_SERVER"] = f"http://127.0.0.1:{free_port()}"
    env["AGENT_CHAT_TOKEN"] = "t"  # no files, no registration
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 0 and p.stdout.split("\n") == ["[]", "[]", ""], (p.stdout, p.stderr)


def test_claim_ttl_default_is_the_claims_default() -> None:
    from agent_chat import claims

    ttl = next(a for a in TABLE["claim"].flat_args() if a.dest == "ttl")
    assert ttl.default == claims.DEFAULT_TTL
