"""``ac``: the Agent Chat command line.

Exit codes: 0 success; 1 any other error (usage errors included); 2 server unreachable;
3 authentication failed; 4 rate-limited; 5 timed out (``ac wait``, ``ac ask``); 6 ``ac claim``:
claimed by someone else. Errors are one line on stderr; ``--verbose`` adds detail.

This module is the entry point and ``ac notify``'s fast path: a hook runs ``ac notify`` before
every tool call of an agent, so it loads neither argparse nor the command table. Every other
command is declared once in :mod:`agent_chat.cli_table`; ``ac send``/``ac listen`` are parsed
by :mod:`agent_chat.fast_parse` when they can be, the rest by :mod:`agent_chat.argparser`, and
:mod:`agent_chat.cli_handlers` calls each command with its flags as keyword arguments.
``ac claims --check-staged``, the pre-commit hook of ``ac setup git``, skips argparse too.
"""

from __future__ import annotations

import io
import sys

from .errors import EXIT_ERROR, AcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: ``ac notify``'s flags (the same as its entry in the command table; a test checks).
NOTIFY_FLAGS = {"--json", "--oneline"}
VERBOSE_FLAGS = {"--verbose", "-v"}


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run and exit with the command's code."""
    sys.exit(run(sys.argv[1:] if argv is None else list(argv)))


def run(argv: list[str]) -> int:
    """Run one ``ac`` command line; return its exit code."""
    if isinstance(sys.stdout, io.TextIOWrapper):  # not when a test swapped it
        sys.stdout.reconfigure(errors="replace")
    verbose = any(a in VERBOSE_FLAGS for a in argv)
    try:
        rest = [a for a in argv if a not in VERBOSE_FLAGS]
        if rest and rest[0] == "notify" and _fast_notify_ok(rest[1:]):
            from .commands import notify_graceful

            return notify_graceful(rest[1:], verbose=verbose)
        if rest and rest[0] == "claims" and "--check-staged" in rest:
            from . import claims

            hook = claims.check_staged_argv(rest)
            if hook is not None:
                from .context import Context

                strict, project = hook
                return claims.check_staged(Context(verbose), strict=strict, project=project)
        from .fast_parse import parse_fast_path

        args = parse_fast_path(rest)
        if args is None:
            from .argparser import parse

            args = parse(argv)
        args.verbose = verbose
        return args.func(args)
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


def _fast_notify_ok(flags: list[str]) -> bool:
    return set(flags) <= NOTIFY_FLAGS and len(flags) <= 1


def _report(message: str, detail: str | None, code: int) -> int:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()
    from .safe_text import one_line

    sys.stderr.write(f"ac: error: {one_line(message)}\n")
    if detail:
        sys.stderr.write(f"ac: detail: {one_line(detail)}\n")
    return code


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
