"""``ac claim``, ``ac claims``, ``ac release`` and the pre-commit hook ``ac setup git``.

A claim belongs to a project: the repository's ``origin`` URL, normalised
(``git@github.com:o/r.git`` and ``https://user@github.com/o/r`` are both ``github.com/o/r``),
else the name of its root folder; ``--project`` overrides. Patterns and paths are relative to
the repository root wherever ``ac`` runs. The repository is found by reading ``.git`` files,
without running git (the hook is a cold process on every commit).

The hook's command, ``ac claims --check-staged``, comes here straight from :mod:`agent_chat.cli`
without argparse (see :func:`check_staged_argv`), and lists the staged files by spawning git
with :func:`os.posix_spawnp` rather than through :mod:`subprocess`, whose imports (threading,
signal, selectors, ...) cost more than git itself.
"""

from __future__ import annotations

import os
import re
import sys
import time

from .context import Context, out
from .errors import EXIT_ERROR, EXIT_OK, AcError, ApiError, ClaimConflict, UsageError
from .safe_text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .shapes import JSONObject

HOOK_BEGIN = "# >>> agent-chat claims (installed by `ac setup git`) >>>"
HOOK_END = "# <<< agent-chat claims <<<"
PATH_CHUNK = 2000


# --- the repository and its project ------------------------------------------------------


def repo_root(start: str | None = None) -> str | None:
    """The nearest directory at or above ``start`` holding ``.git`` (a folder or a file)."""
    here = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _git_dir(root: str) -> str:
    dot = os.path.join(root, ".git")
    if os.path.isfile(dot):  # a worktree or submodule: "gitdir: PATH"
        with open(dot, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        if text.startswith("gitdir:"):
            dot = os.path.join(root, text[7:].strip())
        common = os.path.join(dot, "commondir")
        if os.path.isfile(common):
            with open(common, encoding="utf-8", errors="replace") as f:
                dot = os.path.join(dot, f.read().strip())
    return dot


def origin_url(root: str) -> str | None:
    """``remote.origin.url`` from the repository's config file, if set."""
    try:
        with open(os.path.join(_git_dir(root), "config"), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    in_origin = False
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            in_origin = bool(re.match(r'^\[\s*remote\s+"origin"\s*\]$', s))
        elif in_origin and re.match(r"^url\s*=", s):
            return s.split("=", 1)[1].strip().strip('"') or None
    return None


def normalise_url(url: str) -> str:
    """``host/path`` without scheme, credentials, port-less ``git@`` form or ``.git``."""
    url = url.strip()
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?([^/]+)(/.*)?$", url)
    if m:
        host, path = m.group(1), m.group(2) or ""
    else:
        m = re.match(r"^(?:[^@/]+@)?([^:/]+):(.*)$", url)  # scp-like: git@host:owner/repo
        if not m:
            return url.rstrip("/").removesuffix(".git")
        host, path = m.group(1), "/" + m.group(2)
    path = path.rstrip("/").removesuffix(".git").rstrip("/")
    return host.lower() + ("/" + path.lstrip("/") if path.strip("/") else "")


def project_of(root: str | None, override: str | None) -> str:
    if override:
        return override
    if root is None:
        raise UsageError("not in a git repository: run it in one, or name it with --project")
    url = origin_url(root)
    return normalise_url(url) if url else os.path.basename(root)


def _where(override: str | None) -> tuple[str | None, str]:
    root = repo_root()
    return root, project_of(root, override)


# --- showing -------------------------------------------------------------------------------


def _when(ts: object) -> str:
    if not isinstance(ts, (int, float)):
        return "?"
    left = ts / 1000 - time.time()
    stamp = time.strftime("%H:%M", time.localtime(ts / 1000))
    minutes = round(left / 60)
    if minutes < 1:  # in seconds, rounded up: a claim that still holds never says "in 0"
        return f"{stamp} (in {max(0, -int(-left // 1))} s)"
    if minutes < 60:
        return f"{stamp} (in {minutes} min)"
    return f"{stamp} (in {left / 3600:.1f} h)"


def describe(c: JSONObject) -> str:
    """One line: ``src/api/** claimed by BlueLake (exclusive) until 14:05 (in 2.0 h): why``."""
    reason = c.get("reason")
    why = f": {reason}" if isinstance(reason, str) and reason else ""
    path = c.get("path")
    where = f"{path}: " if isinstance(path, str) else ""
    return one_line(
        f"{where}{c.get('pattern')} claimed by {c.get('holder_name')} ({c.get('mode')}) "
        f"until {_when(c.get('expires_ts'))}{why}"
    )


def _entries(value: object) -> list[JSONObject]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --- the commands ------------------------------------------------------------------------


#: A claim's default lifetime (2 h) and the longest reason the server keeps.
DEFAULT_TTL = 7200
MAX_REASON = 500


def ttl_seconds(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d``: from a second to a week."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 1d")
    value = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= value <= 7 * 86400:
        raise ValueError("must be from 1 second to 7 days")
    return value


def _checked(patterns: list[str]) -> list[str]:
    from . import globs

    try:
        return globs.check_all(patterns)
    except globs.BadPattern as e:
        raise UsageError(str(e)) from None


class ClaimRequest:
    """What a claim asks for, in one shape for ``ac claim``, the MCP ``claim`` tool and the
    TUI's ``/claim``: patterns, how long (seconds), why, shared or exclusive, taking over
    others' claims, and the project (None: this repository's)."""

    __slots__ = ("force", "patterns", "project", "reason", "shared", "ttl")

    def __init__(
        self,
        patterns: list[str],
        *,
        ttl: int = DEFAULT_TTL,
        reason: str | None = None,
        shared: bool = False,
        force: bool = False,
        project: str | None = None,
    ) -> None:
        self.patterns = patterns
        self.ttl = ttl
        self.reason = reason
        self.shared = shared
        self.force = force
        self.project = project


def request_claim(ctx: Context, req: ClaimRequest) -> tuple[str, JSONObject]:
    """Claim the patterns: (the project, the server's answer); ClaimConflict on a conflict."""
    checked = _checked(req.patterns)
    reason = req.reason
    if reason is not None and any(ord(c) < 32 or ord(c) == 127 for c in reason):
        raise UsageError("--reason is one line: no newlines or other control characters")
    if reason is not None and len(reason) > MAX_REASON:
        raise UsageError(f"--reason is at most {MAX_REASON} characters (it has {len(reason)})")
    _, proj = _where(req.project)
    body: JSONObject = {
        "project": proj,
        "patterns": checked,
        "mode": "shared" if req.shared else "exclusive",
        "ttl_seconds": req.ttl,
        "force": req.force,
    }
    if reason:
        body["reason"] = reason
    try:
        return proj, ctx.authed().call("POST", "/claims", body=body)
    except ApiError as e:
        if e.status == 409 and e.errcode == "AC_CLAIM_CONFLICT":
            raise ClaimConflict(e.message.rsplit(" (AC_CLAIM_CONFLICT)", 1)[0]) from None
        raise


def claimed_line(project: str, answer: JSONObject, shared: bool) -> str:
    stored = _entries(answer.get("claims"))
    names = ", ".join(str(c.get("pattern")) for c in stored)
    until = _when(stored[0].get("expires_ts")) if stored else "?"
    mode = "shared" if shared else "exclusive"
    return one_line(f"claimed {names} in {project} ({mode}) until {until}")


def taken_lines(answer: JSONObject) -> list[str]:
    """The claims ``--force`` took over (their reasons are others' words)."""
    return [
        f"took over: {describe(c)} (they have been told)" for c in _entries(answer.get("taken"))
    ]


def claim(ctx: Context, req: ClaimRequest, *, as_json: bool = False) -> int:
    """``ac claim``: one line saying what is now claimed (and what was taken over)."""
    proj, answer = request_claim(ctx, req)
    if as_json:
        import json

        out(json.dumps(answer))
        return EXIT_OK
    for line in taken_lines(answer):
        out(line)
    out(claimed_line(proj, answer, req.shared))
    return EXIT_OK


def find_claims(
    ctx: Context, paths: list[str], mine: bool, project: str | None
) -> tuple[str, list[JSONObject]]:
    """(the project, its live claims): all, those covering ``paths``, or only the caller's."""
    _, proj = _where(project)
    client = ctx.authed()
    if paths:
        bad = [p for p in paths if p.startswith("/") or ".." in p.split("/")]
        if bad:
            raise UsageError(f"{bad[0]!r}: paths are relative to the repository root")
        answer = client.call(
            "POST", "/claims/check", body={"project": proj, "paths": paths, "others": False}
        )
        found = _entries(answer.get("conflicts"))
    else:
        query = {"project": proj, "mine": "true"} if mine else {"project": proj}
        found = _entries(client.call("GET", "/claims", query=query).get("claims"))
    if mine:
        me = ctx.identity().user_id
        found = [c for c in found if c.get("holder") == me]
    return proj, found


def claims(
    ctx: Context,
    paths: list[str],
    *,
    mine: bool,
    as_json: bool,
    project: str | None,
) -> int:
    proj, found = find_claims(ctx, paths, mine, project)
    if as_json:
        import json

        out(json.dumps({"project": proj, "claims": found}))
        return EXIT_OK
    if not found:
        out(f"no claims in {proj}" + (" on these paths" if paths else ""))
    for c in found:
        out(describe(c))
    return EXIT_OK


def request_release(
    ctx: Context, patterns: list[str], everything: bool, project: str | None
) -> tuple[str, list[JSONObject]]:
    """Release the caller's claims on ``patterns`` (or all): (the project, what was released)."""
    if everything == bool(patterns):
        raise UsageError("name the patterns to release, or --all")
    _, proj = _where(project)
    body: JSONObject = {"project": proj}
    if everything:
        body["all"] = True
    else:
        body["patterns"] = _checked(patterns)
    answer = ctx.authed().call("POST", "/claims/release", body=body)
    return proj, _entries(answer.get("released"))


def released_line(project: str, gone: list[JSONObject]) -> str:
    if not gone:
        return one_line(f"you held no such claim in {project}")
    return one_line(f"released {', '.join(str(c.get('pattern')) for c in gone)} in {project}")


def release(ctx: Context, patterns: list[str], *, everything: bool, project: str | None) -> int:
    proj, gone = request_release(ctx, patterns, everything, project)
    out(released_line(proj, gone))
    return EXIT_OK


def check_staged_argv(argv: list[str]) -> tuple[bool, str | None] | None:
    """``claims --check-staged [--strict] [--project P]`` as (strict, project); None for any
    other command line (argparse then handles it, errors and --help included)."""
    if not argv or argv[0] != "claims" or "--check-staged" not in argv:
        return None
    strict, project, seen = False, None, set[str]()
    rest = iter(argv[1:])
    for a in rest:
        key = a.split("=", 1)[0]
        if key in seen:
            return None
        seen.add(key)
        if a == "--strict":
            strict = True
        elif a == "--project":
            project = next(rest, None)
            if project is None or project.startswith("-"):
                return None
        elif a.startswith("--project="):
            project = a.split("=", 1)[1]
        elif a != "--check-staged":
            return None
    return strict, project or None


def staged_paths(root: str | None) -> list[str]:
    """``git diff --cached --name-only -z`` in ``root``: the paths staged for the commit."""
    if root is None:
        raise UsageError("not in a git repository: there are no staged files to check")
    argv = ["git", "-C", root, "diff", "--cached", "--name-only", "-z"]
    if not hasattr(os, "posix_spawnp"):  # Windows
        import subprocess

        quiet = subprocess.DEVNULL
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=quiet, check=False)
        data, code = proc.stdout, proc.returncode
    else:
        read_fd, write_fd = os.pipe()
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, write_fd, 1),
                (os.POSIX_SPAWN_CLOSE, read_fd),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ]
            pid = os.posix_spawnp("git", argv, os.environ, file_actions=actions)
        except OSError as e:
            os.close(read_fd)
            raise UsageError(f"could not run git to list the staged files: {e}") from None
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        raise UsageError(f"'git diff --cached' failed in {root} (exit code {code})")
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p]


def check_staged(ctx: Context, *, strict: bool, project: str | None) -> int:
    """The pre-commit hook: staged paths under others' claims, one line each on stderr.

    Warning (the default), a check that cannot be made (no server, no identity) lets the
    commit through with a line saying so; ``--strict`` refuses it."""
    try:
        found = _staged_conflicts(ctx, project)
    except AcError as e:
        if strict:
            sys.stderr.write("ac: commit refused (strict); git commit --no-verify bypasses\n")
            raise
        sys.stderr.write(f"ac: warning: the claims were not checked: {one_line(e.message)}\n")
        return EXIT_OK
    for c in found:
        sys.stderr.write(f"ac: claimed by someone else: {describe(c)}\n")
    if found and strict:
        sys.stderr.write("ac: commit refused (strict); git commit --no-verify bypasses\n")
        return EXIT_ERROR
    return EXIT_OK


def _staged_conflicts(ctx: Context, project: str | None) -> list[JSONObject]:
    root, proj = _where(project)
    paths = staged_paths(root)
    found: list[JSONObject] = []
    if not paths:
        return found
    client = ctx.authed()
    for i in range(0, len(paths), PATH_CHUNK):
        body = {"project": proj, "paths": paths[i : i + PATH_CHUNK]}
        found += _entries(client.call("POST", "/claims/check", body=body).get("conflicts"))
    return found


# --- ac setup git ------------------------------------------------------------------------


def _hooks_dir(root: str) -> str:
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "--git-path", "hooks"],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise UsageError(f"git could not say where its hooks are: {e}") from None
    return os.path.join(root, found)


def _block(strict: bool) -> str:
    import shlex
    import shutil

    ac = shutil.which("ac") or os.path.join(os.path.dirname(sys.executable), "ac")
    flags = " --strict" if strict else ""
    return f"{HOOK_BEGIN}\n{shlex.quote(ac)} claims --check-staged{flags} || exit $?\n{HOOK_END}\n"


def _without_block(text: str) -> str:
    pattern = re.escape(HOOK_BEGIN) + r".*?" + re.escape(HOOK_END) + r"\n?"
    return re.sub(pattern, "", text, flags=re.DOTALL)


def setup_git(*, uninstall: bool, dry_run: bool, strict: bool) -> int:
    """Install (or remove) the marked block in the repository's pre-commit hook."""
    root = repo_root()
    if root is None:
        raise UsageError("not in a git repository")
    hook = os.path.join(_hooks_dir(root), "pre-commit")
    try:
        with open(hook, encoding="utf-8") as f:
            before: str | None = f.read()
    except FileNotFoundError:
        before = None
    text = _without_block(before or "")
    if uninstall:
        after: str | None = text
        if text.strip() in ("", "#!/bin/sh"):
            after = None  # only our block was there
    else:
        lines = text.splitlines(keepends=True)
        if not lines:
            lines = ["#!/bin/sh\n"]
        elif not lines[0].startswith("#!") or "sh" not in lines[0]:
            raise UsageError(
                f"{hook} is not a shell script: add '{_block(strict).splitlines()[1]}' to it"
            )
        after = lines[0] + _block(strict) + "".join(lines[1:])
    if after == before:
        out(f"{hook}: nothing to change")
        return EXIT_OK
    if dry_run:
        out(f"would {'remove' if uninstall else 'install'} the claims check in {hook}")
        return EXIT_OK
    backup = ""
    if before is not None:  # the user's hook: kept beside it first, as every setup does
        from .setup.plan import write_backup

        backup = f" (backup: {write_backup(hook, before)})"
    if after is None:
        os.remove(hook)
        out(f"removed {hook}{backup}")
        return EXIT_OK
    os.makedirs(os.path.dirname(hook), exist_ok=True)
    with open(hook, "w", encoding="utf-8") as f:
        f.write(after)
    os.chmod(hook, 0o755)
    done = "removed" if uninstall else "installed"
    strictly = " (strict)" if strict and not uninstall else ""
    out(f"{done} the claims check in {hook}{strictly}{backup}")
    return EXIT_OK
