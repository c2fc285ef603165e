"""Errors the client reports, each carrying the exit code the spec gives it.

Exit codes: 0 success; 1 any other error (usage errors included); 2 server unreachable;
3 authentication failed; 4 rate-limited; 5 timed out (``ac wait``: nothing new; ``ac ask``);
6 ``ac claim``: the paths are claimed by someone else.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_AUTH = 3
EXIT_RATE_LIMITED = 4
EXIT_TIMEOUT = 5
EXIT_CONFLICT = 6


class ConfigFileError(Exception):
    """config.toml or credentials.json cannot be read or parsed (exit code 1)."""


class AcError(Exception):
    """An error shown as one concise line on stderr; ``detail`` is added with ``--verbose``."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(AcError):
    """Bad command line or bad configuration value."""


class NetworkError(AcError):
    """The server could not be reached (refused, timed out, reset, DNS, TLS, 502/503)."""

    exit_code = EXIT_UNREACHABLE


class AuthError(AcError):
    """The server rejected our token or registration token."""

    exit_code = EXIT_AUTH


class RateLimited(AcError):
    """The server answered 429."""

    exit_code = EXIT_RATE_LIMITED

    def __init__(
        self, message: str, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class ApiError(AcError):
    """Any other error answer the client received from the API (``status``, ``errcode`` and
    ``error`` kept). Its arguments come in the order of the appservice's
    ``ErrorAnswer`` (the answer the service gives): status, errcode, message."""

    def __init__(self, status: int, errcode: str, message: str, detail: str | None = None) -> None:
        super().__init__(message, detail)
        self.status = status
        self.errcode = errcode


def target_not_found(
    e: ApiError, target: str, kind: str = "room or person", join_hint: bool = True
) -> AcError:
    """A 404 about ``target`` said once: "no such KIND: TARGET", with the server's words only
    when they add something; "you are not in #room" (with how to join, as ``ac send`` would
    by itself) when membership is what is missing, unless ``join_hint`` is off."""
    from .safe_text import one_line

    said = e.message.removesuffix(f" ({e.errcode})") if e.errcode else e.message
    name = one_line(target)
    if join_hint and said.startswith("you are not in") and name.startswith(("#", "!")):
        return AcError(f"you are not in {name}: join it first (ac join '{name}')", detail=e.detail)
    extra = "" if said.startswith(("no room", "no such")) else f" ({one_line(said)})"
    return AcError(f"no such {kind}: {name}{extra}", detail=e.detail)


class ClaimConflict(AcError):
    """``ac claim``: another agent holds an overlapping claim (exit code 6)."""

    exit_code = EXIT_CONFLICT
