"""The wake hook's waiter (``ac-hook.sh --wake``): ``ac wait --urgent --dm --session`` in a
process that imports almost nothing.

Every idle agent session holds one of these for as long as it is idle, and one #alerts post
ends them all at once: what it costs to sit and to wake is paid per session. So it loads only
the raw-socket HTTP client (:mod:`agent_chat.http`) and the C halves of ``json`` and
``hashlib`` (``_json``, :func:`agent_chat.files.sha256_hex`: no ``re``, ``enum`` or OpenSSL),
asks the server for the one-line format (``/notify?format=oneline&covers=true``: the cursor
and whether it is news come as headers, the line and what it covers as two lines of text),
and writes the wake line itself:
the hook ``exec``\\ s it, so no shell waits beside it.

What it keeps from ``ac wait --session`` (:mod:`agent_chat.wait`), the same rules:

- a state file per identity, filter and session (``$AGENT_CHAT_HOME/wait/``): the cursor of
  the last wake, its time, the rooms urgent then, and the waiter that owns the session. A
  message that arrived between two runs wakes the next run at once, exactly once; reads and
  the agent's own messages are not news;
- at most one wake per :data:`MIN_INTERVAL` seconds unless something became urgent;
- one waiter per session: a newer one takes over, and the older exits 0 at its next answer;
- ``AGENT_CHAT_WAIT_WHILE_PID``: polls of at most :data:`WATCH_POLL` seconds, and exit 0 once
  that process has ended;
- its presence: the ``Agent-Chat-Waiter`` and ``Agent-Chat-Cli`` headers on the long-poll
  (``idle · wakeable`` while it is connected), and ``woken`` reported (``POST /stages``) for
  what the line covers, by a child left behind: the session wakes when this process exits.

Credentials: ``AGENT_CHAT_TOKEN`` with ``AGENT_CHAT_SERVER`` (and ``AGENT_CHAT_CA_FILE``), else
the hook's curl config (``--credentials hook/<nick>.curl``), the ones the hook's notify uses.
Its state files are its own (a digest of the server, the token and the session), not
``ac wait``'s: the hook runs ``ac wait`` only when it has no credentials file yet.

Exit codes, for Claude Code's asyncRewake: 2 with one line on stderr (``[chat] @BlueLake(1)
...: new direct or urgent message ...``) wakes the session; 0 for everything else (nothing new
before ``--timeout``, taken over, the watched process gone, the server refusing the token, any
error), and nothing else ever reaches stderr. Network failures are retried every
:data:`RETRY_SECONDS` (a server restart mid-wait is waited out).

    python -I -c 'from agent_chat.wake_waiter import main; main()' --session SID \\
        [--timeout S] [--credentials FILE] [--min-interval S]
"""

from __future__ import annotations

import _json
import os
import sys
import time

from . import http
from .errors import NetworkError
from .files import RELAY_DIR, read_text, sha256_hex
from .session_state import SessionState, process_alive, watched_pid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_POLL = 300.0
WATCH_POLL = 30.0
SLACK = 30.0
RETRY_SECONDS = 2.0
MIN_INTERVAL = 10.0
FILTERS = "urgent,dm"
WAIT_DIR = "wait"
PREFIX = "/_agent_chat/v1"
WAKE_LINE = "[chat] {}: new direct or urgent message (read: ac listen --unread)\n"
#: Characters a wake line keeps (the hook's rule): labels, counts, urgency marks.
LINE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:#@!+() -")


class _JsonContext:
    """What ``_json.make_scanner`` reads: ``json.loads``'s defaults, without ``json``'s
    imports (``re``, ``enum``...)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict[str, str] = {}  # noqa: RUF012


_scan = _json.make_scanner(_JsonContext())  # type: ignore[arg-type]


def _loads(text: str) -> object:
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip():
        raise ValueError("not JSON")
    return value


def _dumps(value: object) -> str:
    """JSON for the few shapes written here: str, int, float, bool, None, lists, dicts."""
    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def _unquote_curl(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value, out, i = value[1:-1], [], 0
        while i < len(value):
            if value[i] == "\\" and i + 1 < len(value):
                i += 1
            out.append(value[i])
            i += 1
        return "".join(out)
    return value


def credentials(path: str | None) -> tuple[str, str, str | None] | None:
    """(server URL, token, CA file) from the environment, else from the hook's curl config."""
    env = os.environ
    token, server = env.get("AGENT_CHAT_TOKEN", ""), env.get("AGENT_CHAT_SERVER", "")
    if token and server:
        server = server.strip().rstrip("/")
        if server.endswith(PREFIX):
            server = server[: -len(PREFIX)].rstrip("/")
        return server, token, env.get("AGENT_CHAT_CA_FILE") or None
    text = read_text(path) if path else None
    if not text:
        return None
    url = header = cacert = None
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip()
        if name == "url":
            url = _unquote_curl(value)
        elif name == "header":
            header = _unquote_curl(value)
        elif name == "cacert":
            cacert = _unquote_curl(value)
    suffix, bearer = PREFIX + "/notify", "Authorization: Bearer "
    if not url or not url.endswith(suffix) or not header or not header.startswith(bearer):
        return None
    return url[: -len(suffix)], header[len(bearer) :].strip(), cacert


class Answer:
    """A one-line /notify answer: its cursor, whether it changed or is news, the line, and the
    rooms it covers (``SEQ:ROOM_ID``) with those that are urgent."""

    __slots__ = ("changed", "covers", "cursor", "line", "new", "urgent")

    def __init__(self, response: http.Response) -> None:
        headers = response.headers
        self.cursor = headers.get("agent-chat-cursor") or None
        self.changed = headers.get("agent-chat-changed") == "true"
        self.new = headers.get("agent-chat-new") == "true"
        lines = response.body.decode("utf-8", "replace").split("\n")
        self.line = lines[0]
        covers = lines[1] if len(lines) > 1 and lines[1].startswith("covers ") else ""
        self.covers = covers[len("covers ") :].strip()
        labels = self.line.split()
        rooms = [c.partition(":")[2] for c in self.covers.split()]
        # One label per covered room, in the same order (the server writes both from one list).
        self.urgent = (
            {room for room, label in zip(rooms, labels, strict=True) if label.endswith("!)")}
            if len(rooms) == len(labels)
            else set()
        )


class Waiter:
    def __init__(self, server: str, token: str, session: str, cli: str | None, home: str) -> None:
        self.url = server + PREFIX
        self.session = "".join(c if "!" <= c <= "~" else "_" for c in session)[:128]
        self.headers = {"Authorization": "Bearer " + token, "Agent-Chat-Waiter": self.session}
        if cli:
            self.headers["Agent-Chat-Cli"] = cli
        self.cli = cli
        key = "\n".join(("wake-hook", server, sha256_hex(token), FILTERS, session))
        path = os.path.join(home, WAIT_DIR, sha256_hex(key)[:24] + ".json")
        self.state = SessionState(path, _loads, _dumps, warn=False)
        self.state.waiter = f"{os.getpid()}-{os.urandom(6).hex()}"
        #: Told each long-poll's socket (the hub cuts the poll of a hook that is gone).
        self.opened: Callable[[Any], object] | None = None

    def poll(self, cursor: str | None, wait: float) -> Answer:
        """One long-poll; a cursor the server refuses (400) is dropped for a fresh state.
        Network failures and 5xx raise NetworkError (retried); other errors, ValueError."""
        query = "?format=oneline&covers=true&filter=" + FILTERS.replace(",", "%2C")
        if cursor is not None:
            query += f"&since={http.quote(cursor)}&wait={max(0.0, min(wait, MAX_POLL)):.3f}"
        response = http.request(
            "GET",
            self.url + "/notify" + query,
            headers=self.headers,
            timeout=wait + SLACK,
            opened=self.opened,
        )
        if response.status == 400 and cursor is not None:
            answer = self.poll(None, 0)
            answer.changed, answer.new = True, False
            return answer
        if response.status >= 500:
            raise NetworkError(f"the server answered {response.status}")
        if response.status != 200:
            raise ValueError(f"the server answered {response.status}")
        answer = Answer(response)
        if answer.cursor is None:  # not this API (a proxy's page?): as if it were down
            raise NetworkError("no cursor in the answer")
        return answer

    def report_woken(self, answer: Answer, chars: int) -> None:
        if not answer.covers:
            return
        body: dict[str, object] = {
            "stage": "woken",
            "session": self.session,
            "covers": answer.covers,
            "chars": chars,
        }
        if self.cli:
            body["cli"] = self.cli
        headers = {"Authorization": self.headers["Authorization"]}
        try:
            http.request(
                "POST", self.url + "/stages", _dumps(body).encode(), headers=headers, timeout=5
            )
        except (OSError, NetworkError):
            pass  # best effort: a failed report never stops the wake

    def wait(
        self,
        timeout: float,
        min_interval: float = MIN_INTERVAL,
        watch: int | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Answer | None:
        """The loop guard's long-poll (:func:`agent_chat.wait.next_news`'s rules): the answer
        that wakes, or None. ``wanted``: asked after each poll (then at most
        :data:`WATCH_POLL` seconds long, as with ``watch``); False ends the wait."""
        deadline = time.monotonic() + timeout
        longest = MAX_POLL if watch is None and wanted is None else WATCH_POLL

        def remaining() -> float:
            return deadline - time.monotonic()

        state = self.state
        state.save()  # this waiter owns the session now
        cursor = state.cursor
        if cursor is None:
            first = self.poll(None, 0)
            cursor = state.cursor = first.cursor
            state.urgent = first.urgent
            state.save()
        # News inside the interval after the last wake is held back: the waiter polls on from
        # the newest state (``latest``) until the interval ends, and wakes at once only if
        # something became urgent meanwhile; then it asks again from ``cursor``, which answers
        # at once if the news is still unread.
        latest: str | None = None
        while remaining() > 0:
            hold = state.last_wake + min_interval - time.time()
            holding = latest is not None and hold > 0
            wait = min(remaining(), longest, hold if holding else longest)
            try:
                answer = self.poll(latest if holding else cursor, wait)
            except NetworkError:
                if wanted is not None and not wanted():
                    return None  # the poll was cut because nobody waits for it any more
                time.sleep(max(0.0, min(RETRY_SECONDS, remaining())))
                continue
            if state.superseded():
                return None
            if watch is not None and not process_alive(watch):
                return None
            if wanted is not None and not wanted():
                return None
            if holding:
                if answer.urgent - state.urgent:
                    return answer  # newly urgent: the interval does not hold it
                latest = answer.cursor or latest
                continue
            if answer.new:
                hold = state.last_wake + min_interval - time.time()
                if hold > 0 and not answer.urgent - state.urgent:
                    latest = answer.cursor or cursor  # too soon after the last wake
                    continue
                return answer
            latest = None
            if answer.cursor is not None:
                cursor = answer.cursor
            if answer.changed:  # a read, a leave...: the new baseline
                state.cursor, state.urgent = cursor, answer.urgent
                state.save()
        return None

    def wake(self, answer: Answer) -> tuple[str, Callable[[], None]]:
        """Record the wake; the line for stderr, and the ``woken`` report to send after it."""
        state = self.state
        state.cursor = answer.cursor or state.cursor
        state.last_wake = time.time()
        state.urgent = answer.urgent
        state.save()
        label = "".join(c for c in answer.line if c in LINE_CHARS).strip()
        text = WAKE_LINE.format(label or "new messages")
        return text, lambda: self.report_woken(answer, len(text) - 1)


def valid_cli(name: str) -> str | None:
    """``AGENT_CHAT_CLI`` when it is a CLI's name (it goes into a header), else None."""
    ok = 0 < len(name) <= 32 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    return name if ok else None


def number(text: str | None, default: float, top: float) -> float:
    """A number of seconds from an option or the environment; ``default`` when it is not one
    or is outside 0..``top``."""
    try:
        value = float(text) if text is not None else default
    except ValueError:
        return default
    return value if 0 <= value <= top else default


def run(argv: list[str]) -> tuple[str, Callable[[], None]] | None:
    """The waiter: the wake line and its report, or None when it ends without waking."""
    options: dict[str, str] = {}
    i = 0
    while i + 1 < len(argv):
        if argv[i].startswith("--"):
            options[argv[i][2:]] = argv[i + 1]
        i += 2
    session = options.get("session", "").strip()
    found = credentials(options.get("credentials"))
    if not session or found is None:
        return None
    server, token, cacert = found
    if cacert:
        http.set_trust(ca_file=cacert)
    env = os.environ
    home = env.get("AGENT_CHAT_HOME") or os.path.join(os.path.expanduser("~"), ".agent-chat")
    # A keeper ac started (ac follows config.toml's relay setting, which is not read here)
    http.set_relay(os.path.join(home, RELAY_DIR), starts=False)
    waiter = Waiter(server, token, session, valid_cli(env.get("AGENT_CHAT_CLI", "")), home)
    answer = waiter.wait(
        number(options.get("timeout"), 86000.0, 1e9),
        number(options.get("min-interval"), MIN_INTERVAL, 86400.0),
        watched_pid(env.get("AGENT_CHAT_WAIT_WHILE_PID", "")),
    )
    return None if answer is None else waiter.wake(answer)


def main() -> None:
    """Entry point: exit 2 with the wake line on stderr, else 0. Nothing else reaches stderr
    (a warning or a traceback there would be read as the wake's text): it points at
    /dev/null until the line is written. The session wakes when this process exits, so the
    ``woken`` report is sent by a child that outlives it, holding none of the hook's pipes:
    the exit waits neither for the server's answer (a thousand waiters woken at once queue
    their reports there) nor for the report's failure. The interpreter's teardown is skipped
    (``_exit``): nothing is buffered, and it is CPU every waiter would spend at once."""
    wake_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        woke = run(sys.argv[1:])
    except (Exception, KeyboardInterrupt):
        woke = None
    if woke is None:
        os._exit(0)
    line, report = woke
    try:
        os.write(wake_fd, line.encode())
    except OSError:
        os._exit(0)
    try:
        child = os.fork()
    except OSError:
        child = -1
    if child == 0:  # the report, detached from the hook's stdin, stdout and stderr
        for fd in (0, 1, wake_fd):
            os.dup2(devnull, fd)
        try:
            os.nice(10)  # after the waiters still waking (one post wakes many at once)
            report()
        finally:
            os._exit(0)
    if child < 0:
        report()  # no process to spare: report, then wake
    os._exit(2)
