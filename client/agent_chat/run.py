"""``ac run [--wake urgent,dm|all|none] [--min-interval S] -- CLI [ARGS...]``: run an agent CLI
in a pseudo-terminal and wake it when a message arrives while it sits idle at its prompt.

Codex and Gemini CLI run their hooks synchronously: nothing can wake them from outside, so a
DM to an idle session waits until a person types. ``ac run`` owns the CLI's terminal instead:

- the terminal passes through untouched: raw mode, window size changes (SIGWINCH), signals
  sent to ``ac run`` (TERM, HUP, INT, QUIT, CONT), the CLI's exit status (128+N for a signal);
  the terminal's settings are restored on every exit, the CLI killed with SIGKILL included;
- a thread sits on the server's long-poll with ``ac wait``'s loop guard
  (:func:`agent_chat.wait.next_news`: one wake per new event, at most one per
  ``--min-interval`` unless something became urgent);
- the counts line (never a body; the wake hook's words) is typed and submitted only when the
  CLI is quiet: no output for the profile's settle time (an agent at work redraws its spinner)
  and no keystroke for :data:`KEY_QUIET` seconds. A line that had to wait says so.

Profiles (:data:`PROFILES`) say how each CLI takes a typed line: bracketed paste when the CLI
turned it on (``ESC[?2004h``), then the submit key after a pause, so that a TUI that detects
fast typing as a paste (Codex) does not take the Enter as a newline.

Server down: one line on stderr before the CLI starts ("waking is off"); the CLI runs, and
waking resumes when the server answers again.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import math
import os
import pty
import select
import shutil
import signal
import struct
import sys
import termios
import threading
import time
import tty

from . import render
from .errors import AcError, UsageError
from .http import ConnectionFailed
from .wait import (
    CLI_HEADER,
    MAX_POLL,
    WAITER_HEADER,
    SessionState,
    next_news,
    poll,
    record_wake,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import Client
    from .context import Context
    from .shapes import JSONObject

#: No keystroke for this long before a line is typed (a person may be mid-word).
KEY_QUIET = 3.0
#: Seconds between SIGHUP and SIGTERM, and SIGTERM and SIGKILL, once our terminal is gone.
HANGUP_GRACE = 5.0
#: Seconds between two tries while the server is down.
RETRY = 5.0
#: The longest the wrapper waits, after the CLI exited, to tell the server its session ended.
END_TIMEOUT = 2.0
#: Exit status when the CLI cannot be found or started (as a shell says).
EXIT_NOT_FOUND = 127
WAKES = {"urgent,dm": "urgent,dm", "dm,urgent": "urgent,dm", "urgent": "urgent", "dm": "dm"}
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGCONT)


#: ``AGENT_CHAT_RUN_TRACE=FILE``: where :func:`_trace` writes.
TRACE = os.environ.get("AGENT_CHAT_RUN_TRACE")
#: The typed line's first word: output holding it draws the line.
ECHO_MARK = b"[chat]"


def _trace(event: str) -> None:
    """``AGENT_CHAT_RUN_TRACE=FILE``: append ``MONOTONIC EVENT`` (bench/bench_run_wake.py
    splits a wake's latency with it: news received, line typed, drawn, submitted)."""
    path = TRACE
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.monotonic():.6f} {event}\n")


class Profile:
    """How one CLI takes a typed line."""

    def __init__(
        self,
        settle: float,
        submit: bytes = b"\r",
        pause: float = 0.15,
        paste_pause: float = 0.03,
        file_mentions: bool = False,
        resubmit: float | None = None,
        echo_gap: float | None = None,
        name: str = "generic",
    ) -> None:
        #: The CLI's name in delivery receipts.
        self.name = name
        #: Seconds after the submit key to send it once more: Gemini CLI 0.61 sometimes takes
        #: an Enter that follows a paste closely as part of it (under load, 0.2-0.3 s after
        #: it); a second Enter on an empty prompt, or during the turn, does nothing there.
        self.resubmit = resubmit
        #: "@word" in the prompt opens the CLI's file completion, which takes the submit key
        #: (Gemini CLI, Claude Code): the line writes "@ Nick" for direct chats there.
        self.file_mentions = file_mentions
        #: Seconds without output before the CLI counts as idle.
        self.settle = settle
        self.submit = submit
        #: Seconds between the typed line and the submit key: a TUI that takes fast typing
        #: for a paste (Codex) turns an Enter inside that burst into a newline ...
        self.pause = pause
        #: ... which a bracketed paste (when the CLI turned it on) makes unambiguous.
        self.paste_pause = paste_pause
        #: When set, the submit key goes this long after the CLI draws the pasted line (it has
        #: taken the paste in), if that comes before the pause ends: Gemini CLI 0.61 takes an
        #: Enter as a newline until 40 ms after it handled a paste from a terminal it does not
        #: trust with pastes (any without the kitty keyboard protocol, tmux included), a timer
        #: that fires late when the machine is busy.
        self.echo_gap = echo_gap


PROFILES = {
    "codex": Profile(settle=1.0, pause=0.3),
    # Gemini CLI 0.61 takes an Enter within 40 ms of handling a paste as a newline: the submit
    # key waits for it to draw the line (at most 0.5 s), then 100 ms; once more after 1 s.
    "gemini": Profile(
        settle=1.0,
        pause=0.3,
        paste_pause=0.5,
        echo_gap=0.1,
        file_mentions=True,
        resubmit=1.0,
    ),
    "claude": Profile(settle=1.0, pause=0.2, file_mentions=True),
    "generic": Profile(settle=1.5),
}


def profile_for(command: str) -> Profile:
    name = os.path.basename(command)
    return PROFILES.get(name, PROFILES["generic"])


for _name, _profile in PROFILES.items():
    _profile.name = _name


def wake_filters(text: str) -> tuple[bool, str | None]:
    """``--wake`` → (waking on, the /notify filter): urgent,dm (default), all, none."""
    value = text.strip().lower().replace(" ", "")
    if value == "none":
        return False, None
    if value == "all":
        return True, None
    if value in WAKES:
        return True, WAKES[value]
    raise UsageError("--wake takes urgent,dm (the default), urgent, dm, all or none")


def wake_line(
    answer: JSONObject, filters: str | None, waited: float, file_mentions: bool = False
) -> str:
    """The line typed into the CLI: counts and labels (never bodies), the wake hook's words."""
    line = render.notify_oneline(render.unread_entries(answer)) or "new messages"
    if file_mentions:
        line = line.replace("@", "@ ")
    what = "new direct or urgent message" if filters else "new message"
    note = f" (typed after {waited:.0f} s waiting for quiet)" if waited >= 1 else ""
    return f"[chat] {line}: {what}{note} (read: ac listen --unread)"


class Waker:
    """The long-poll thread: the latest wake-worthy answer, for the terminal loop to type."""

    def __init__(
        self, ctx: Context, filters: str | None, min_interval: float, cli: str = "generic"
    ) -> None:
        self.ctx = ctx
        self.filters = filters
        self.min_interval = min_interval
        #: The agent session this wrapper is (presence: ``idle · wakeable`` while its
        #: long-poll waits, ``gone`` once the CLI has exited), and the CLI it wraps.
        self.session = f"run-{os.getpid()}"
        self.cli = cli
        self.state = SessionState(None)  # the loop guard's memory, in this process
        self.client: Client | None = None
        self.lock = threading.Lock()
        self.pending: JSONObject | None = None
        self.since = 0.0
        self.stopped = threading.Event()
        read, write = os.pipe()
        self.signal_fd, self._wakeup = read, write

    def baseline(self) -> None:
        """What is unread now does not wake; raises when the server cannot be reached."""
        self.client = self.ctx.authed()
        self.client.headers.update({WAITER_HEADER: self.session, CLI_HEADER: self.cli})
        found = poll(self.client, None, 0, self.filters).get("cursor")
        self.state.cursor = found if isinstance(found, str) else None

    def start(self) -> None:
        threading.Thread(target=self._run, name="ac-run-wake", daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.client is None:
                    self.baseline()
                assert self.client is not None
                answer = next_news(
                    self.client,
                    self.state,
                    self.state.cursor,
                    self.filters,
                    lambda: 0.0 if self.stopped.is_set() else MAX_POLL,
                    self.min_interval,
                    on_failure=lambda _e: None,  # quiet: the CLI owns the terminal
                )
            except (AcError, ConnectionFailed):
                self.stopped.wait(RETRY)  # the server is still down: waking resumes later
                continue
            if answer is None:
                continue
            record_wake(self.state, answer)
            _trace("news")
            with self.lock:
                if self.pending is None:
                    self.since = time.monotonic()
                self.pending = answer
            os.write(self._wakeup, b"x")

    def woke(self, answer: JSONObject, line: str) -> None:
        """Report the ``woken`` stage for what the typed line covers (delivery receipts), in a
        thread: an HTTP call never holds up the terminal."""
        client = self.client
        if client is None:
            return
        from . import receipts

        threading.Thread(
            target=receipts.report,
            args=(client, "woken", self.session, self.cli, answer, len(line)),
            daemon=True,
        ).start()

    def take(self) -> tuple[JSONObject, float] | None:
        with self.lock:
            answer, since, self.pending = self.pending, self.since, None
        return None if answer is None else (answer, since)

    def stop(self) -> None:
        """Stop waking, and tell the server the session ended (``gone`` in ``ac who`` at
        once): best effort and bounded, the CLI has exited and its status waits for this."""
        self.stopped.set()
        if self.client is None:
            return
        try:
            self.client.call(
                "POST", "/sessions/end", body={"session": self.session}, timeout=END_TIMEOUT
            )
        except (AcError, ConnectionFailed):
            pass


def _winsize(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def _copy_winsize(src: int, dest: int) -> None:
    size = _winsize(src)
    if size is not None and struct.unpack("HHHH", size)[:2] != (0, 0):
        try:
            fcntl.ioctl(dest, termios.TIOCSWINSZ, size)
        except OSError:
            pass


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def main(
    ctx: Context,
    argv: list[str],
    wake: str = "urgent,dm",
    min_interval: float = 10.0,
    nick: str | None = None,
) -> int:
    """``ac run``: the CLI's exit status (127 when it cannot be started)."""
    if not argv:
        raise UsageError("usage: ac run [OPTIONS] -- CLI [ARGS...]")
    if not 0 <= min_interval <= 86400:
        raise UsageError("--min-interval is a number of seconds from 0 to 86400")
    waking, filters = wake_filters(wake)
    if nick is not None:
        if not nick.strip():
            raise UsageError("--nick needs a name")
        os.environ["AGENT_CHAT_NICK"] = nick  # this identity, and the CLI's hooks and MCP
    exe = shutil.which(argv[0])
    if exe is None:
        sys.stderr.write(f"ac run: {argv[0]}: command not found\n")
        return EXIT_NOT_FOUND
    profile = profile_for(argv[0])
    waker = _start_waker(ctx, filters, min_interval, profile.name) if waking else None
    try:
        return _run_child(exe, argv, profile, waker, filters)
    finally:
        if waker is not None:
            waker.stop()


def _start_waker(ctx: Context, filters: str | None, min_interval: float, cli: str) -> Waker:
    """The waker, its baseline taken now when the server answers; else one line on stderr,
    and the waker keeps trying (waking resumes when the server returns)."""
    waker = Waker(ctx, filters, min_interval, cli)
    try:
        waker.baseline()
    except (AcError, ConnectionFailed) as e:
        what = e.message if isinstance(e, AcError) else str(e)
        sys.stderr.write(f"ac run: {what}; waking is off until the server answers\n")
        waker.client = None
    waker.start()
    return waker


def _run_child(
    exe: str, argv: list[str], profile: Profile, waker: Waker | None, filters: str | None
) -> int:
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    pid, master = pty.fork()
    if pid == 0:  # the child: the CLI on the new terminal
        try:
            os.execv(exe, argv)
        except OSError as e:
            os.write(2, f"ac run: {argv[0]}: {e.strerror}\n".encode())
        os._exit(EXIT_NOT_FOUND)
    if interactive:
        _copy_winsize(stdin, master)
    hup_read, hup_write = os.pipe()
    os.set_blocking(hup_write, False)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
        if signum == signal.SIGHUP:  # our terminal is gone: see _Pump.hang_up
            try:
                os.write(hup_write, b"h")
            except OSError:
                pass

    def resized(_signum: int, _frame: object) -> None:
        _copy_winsize(stdin, master)  # the kernel sends the CLI its SIGWINCH

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resized)
    try:
        if interactive:
            tty.setraw(stdin, termios.TCSANOW)
        # What start-up made is never traversed by a collection during the session (a full
        # collection of it is milliseconds, in the middle of a keystroke), and the waker
        # thread holds the interpreter for at most 1 ms when a key arrives (5 ms by default).
        gc.freeze()
        sys.setswitchinterval(0.001)
        _Pump(stdin, stdout, master, pid, hup_read, profile, waker, filters, interactive).run()
    finally:
        if saved is not None:
            try:
                termios.tcsetattr(stdin, termios.TCSAFLUSH, saved)
            except (termios.error, OSError):
                pass  # the terminal is gone
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for fd in (master, hup_read, hup_write):
            os.close(fd)
    _, status = _wait_child(pid)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _wait_child(pid: int) -> tuple[int, int]:
    while True:
        try:
            return os.waitpid(pid, 0)
        except InterruptedError:
            continue


class _Pump:
    """Copy both ways until the CLI's side closes; type the wake line when it is quiet.

    When our own terminal goes away (SIGHUP, or reading it fails), the CLI gets SIGHUP; one
    that ignores it gets SIGTERM after :data:`HANGUP_GRACE` seconds, then SIGKILL: an agent
    CLI never outlives the terminal it was started in."""

    def __init__(
        self,
        stdin: int,
        stdout: int,
        master: int,
        pid: int,
        hangup: int,
        profile: Profile,
        waker: Waker | None,
        filters: str | None,
        interactive: bool,
    ) -> None:
        self.stdin, self.stdout, self.master, self.pid = stdin, stdout, master, pid
        self.hangup, self.profile, self.waker = hangup, profile, waker
        self.filters, self.interactive = filters, interactive
        self.last_output = self.last_key = time.monotonic()
        self.paste = False  # the CLI turned bracketed paste on
        self.tail = b""
        self.submit_at: float | None = None
        self.resubmitted = False
        self.echoed = False
        self.wanted: JSONObject | None = None
        self.since = 0.0
        self.stdin_open = True
        self.hung_at: float | None = None
        self.escalated = 0
        self.buffer = bytearray(65536)
        self.view = memoryview(self.buffer)

    def hang_up(self) -> None:
        if self.hung_at is None:
            self.hung_at = time.monotonic()
            self.stdin_open = False
            self._signal(signal.SIGHUP)

    def _signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass

    def _timeout(self, now: float) -> float | None:
        """Act on what is due now; how long select may wait before something else is."""
        waits: list[float] = []
        if self.hung_at is not None:
            for n, signum in enumerate((signal.SIGTERM, signal.SIGKILL), start=1):
                due = self.hung_at + n * HANGUP_GRACE
                if self.escalated < n and now >= due:
                    self._signal(signum)
                    self.escalated = n
                elif self.escalated < n:
                    waits.append(due - now)
        if self.submit_at is not None:
            if now >= self.submit_at:
                _write_all(self.master, self.profile.submit)
                self.submit_at = None
                self.echoed = True  # the resubmit, if any, keeps its own time
                _trace("resubmitted" if self.resubmitted else "submitted")
                if self.profile.resubmit is not None and not self.resubmitted:
                    self.submit_at, self.resubmitted = now + self.profile.resubmit, True
            else:
                waits.append(self.submit_at - now)
        if self.waker is not None and self.wanted is None:
            taken = self.waker.take()
            if taken is not None:
                self.wanted, self.since = taken
        if self.wanted is not None and self.submit_at is None:
            quiet_at = max(self.last_output + self.profile.settle, self.last_key + KEY_QUIET)
            if now >= quiet_at:
                self._type(now)
                waits.append(0.0 if self.submit_at is None else self.submit_at - now)
            else:
                waits.append(quiet_at - now)
        return max(0.0, min(waits)) if waits else None

    def _type(self, now: float) -> None:
        assert self.wanted is not None
        waited = now - self.since - self.profile.settle
        line = wake_line(self.wanted, self.filters, waited, self.profile.file_mentions)
        if self.waker is not None:
            self.waker.woke(self.wanted, line)
        data = line.encode()
        _write_all(self.master, b"\x1b[200~" + data + b"\x1b[201~" if self.paste else data)
        self.submit_at = now + (self.profile.paste_pause if self.paste else self.profile.pause)
        self.resubmitted = False
        self.wanted = None
        self.echoed = False
        _trace(f"typed quiet={now - self.last_output:.3f}")

    def run(self) -> None:
        # One poll set for the whole session and one read buffer: a keystroke's round trip
        # (stdin → the CLI, its echo → stdout) allocates nothing and builds no fd lists.
        poller = select.poll()
        watched = [self.hangup, self.master, self.stdin]
        if self.waker is not None:
            watched.append(self.waker.signal_fd)
        for fd in watched:
            poller.register(fd, select.POLLIN)
        while True:
            timeout = self._timeout(time.monotonic())
            try:
                events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
            except InterruptedError:
                continue
            ready = {fd for fd, _ in events}
            if self.hangup in ready:
                os.read(self.hangup, 512)
                self.hang_up()
            if self.waker is not None and self.waker.signal_fd in ready:
                os.read(self.waker.signal_fd, 512)
            if self.master in ready and not self._from_cli():
                return  # the CLI's side is closed: it exited (or was killed)
            if self.stdin in ready and self.stdin_open:
                self._from_person()
            if not self.stdin_open and self.stdin in watched:
                watched.remove(self.stdin)  # hung up, or piped input ended
                poller.unregister(self.stdin)

    def _read(self, fd: int) -> memoryview:
        """What ``fd`` has, in the pump's one buffer (valid until the next read)."""
        return self.view[: os.readv(fd, [self.buffer])]

    def _from_cli(self) -> bool:
        try:
            data = self._read(self.master)
        except OSError as e:
            if e.errno == errno.EIO:
                return False
            raise
        if not data:
            return False
        if self.hung_at is None:
            try:
                _write_all(self.stdout, data)
            except OSError:
                self.hang_up()  # nobody to show it to
        self.last_output = time.monotonic()
        if not self.echoed and self.submit_at is not None and self._echoes(data):
            self.echoed = True  # the CLI drew the typed line
            _trace("echoed")
            if self.paste and self.profile.echo_gap is not None:
                self.submit_at = min(self.submit_at, self.last_output + self.profile.echo_gap)
        self.tail = (self.tail + data[-64:])[-64:]
        on, off = self.tail.rfind(b"\x1b[?2004h"), self.tail.rfind(b"\x1b[?2004l")
        if on != off:
            self.paste = on > off
        return True

    def _echoes(self, data: memoryview) -> bool:
        """Whether this output draws the typed line (its first word; other output, such as a
        cursor or status redraw, can come before the CLI has taken the paste in)."""
        found = bytes(data).find(ECHO_MARK) >= 0
        if TRACE:
            _trace(f"output {len(data)} {found} {bytes(data[:48])!r}")
        return found

    def _from_person(self) -> None:
        data: memoryview | None
        try:
            data = self._read(self.stdin)
        except OSError:
            data = None
        if data is None or (not data and self.interactive):
            self.hang_up()  # the terminal is gone
            return
        if not data:
            self.stdin_open = False  # end of piped input: the CLI carries on
            return
        _write_all(self.master, data)
        if self.interactive:
            self.last_key = time.monotonic()
