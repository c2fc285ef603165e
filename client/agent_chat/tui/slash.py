"""The compose box's commands (``/ask``, ``/claim``, ``/release``, ``/search``, ``/join``,
``/peek``, ``/help``), parsed into what to do; the app does it."""

from __future__ import annotations

import shlex

from ..errors import UsageError

COMMANDS = ("ask", "claim", "release", "search", "join", "peek", "help")


class Slash:
    """A parsed command: its name, its words, and the options it takes."""

    def __init__(self, name: str, words: list[str], rest: str) -> None:
        self.name = name
        self.words = words
        #: The text after the command name, as typed (a question, search words).
        self.rest = rest
        self.reason: str | None = None
        self.ttl = 7200
        self.shared = False
        self.everything = False


def is_command(body: str) -> bool:
    """``/word ...`` is a command; ``//text`` sends ``/text``."""
    return body.startswith("/") and not body.startswith("//") and len(body) > 1


def parse(body: str) -> Slash:
    """``body`` (a command) parsed.

    Raises:
        UsageError: an unknown command, or bad words for it (the message says what to type).
    """
    head, _, rest = body[1:].partition(" ")
    name = head.strip().lower()
    rest = rest.strip()
    if name not in COMMANDS:
        raise UsageError(f"unknown command /{head[:20]}: {', '.join('/' + c for c in COMMANDS)}")
    try:
        words = shlex.split(rest) if name in ("claim", "release", "join") else rest.split()
    except ValueError as e:
        raise UsageError(f"/{name}: {e}") from None
    cmd = Slash(name, words, rest)
    if name == "claim":
        _claim_options(cmd)
    elif name == "release":
        cmd.everything = "--all" in words
        cmd.words = [w for w in words if w != "--all"]
        if cmd.everything == bool(cmd.words):
            raise UsageError("/release PATTERN... or /release --all")
    elif name in ("ask", "search") and not rest:
        raise UsageError(
            f"/{name} needs words: /{name} {'QUESTION' if name == 'ask' else 'WORDS'}"
        )
    elif name == "join" and len(words) != 1:
        raise UsageError("/join #room")
    return cmd


def _claim_options(cmd: Slash) -> None:
    from ..claims import ttl_seconds

    patterns: list[str] = []
    words = list(cmd.words)
    while words:
        word = words.pop(0)
        if word in ("--reason", "--ttl"):
            if not words:
                raise UsageError(f"/claim: {word} needs a value")
            value = words.pop(0)
            if word == "--reason":
                cmd.reason = value
            else:
                try:
                    cmd.ttl = ttl_seconds(value)
                except ValueError as e:
                    raise UsageError(f"/claim --ttl: {e}") from None
        elif word == "--shared":
            cmd.shared = True
        elif word.startswith("--"):
            raise UsageError(f"/claim: unknown option {word[:20]}")
        else:
            patterns.append(word)
    if not patterns:
        raise UsageError("/claim PATTERN... [--reason TEXT] [--ttl 2h] [--shared]")
    cmd.words = patterns
