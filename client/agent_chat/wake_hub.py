"""The wake hub: one Python process holds the long-polls of every idle session of a home.

Why: every idle agent session holds a wake waiter (``ac-hook.sh --wake``), and a Python
process costs ~8 MiB of RSS before its first line of code (the interpreter alone, ``python
-S``, on this project's machines), so the light waiter (:mod:`agent_chat.wake_waiter`) could
not go under 9 MiB a session. Here the hook's own shell waits, blocked reading a FIFO (~1.6 MiB
RSS, no CPU), and this one process runs the light waiter's loop for each of them in a thread:
the same loop guard, state files, presence headers and ``woken`` reports.

The exchange with the hook, in ``$AGENT_CHAT_HOME/wake-hub/`` (0700), per armed hook:

- ``SID.PID.fifo`` (0600, made by the hook, which then reads one line from it);
- ``SID.PID.req``: the request, one field a line: the session, the timeout, the hook's
  credentials file, the watched process (``AGENT_CHAT_WAIT_WHILE_PID``), the CLI, then ``end``
  (a request without it is still being written). The hub deletes it when it takes it; the hook
  waits up to 3 s for that, else it runs the light waiter itself;
- the answer, one line on the FIFO (which the hub then removes): ``W`` and the wake line (the
  hook prints it and exits 2), ``0`` (nothing to wake for: exit 0) or ``F`` (not for this hub:
  the light waiter instead).
  No line at all (the hub ended) → the light waiter, so a session never goes deaf with it;
- ``pid``: the hub's process id, for the hook's ``SIGUSR1`` ("a request is waiting"; the hub
  also looks every second); ``lock``: one hub per directory; ``starting/``: made by the one
  hook that starts a hub (a hundred hooks armed at once start one, not a hundred), removed by
  the hub once its pid file is written, or by a hook that waited for a hub in vain.

A hook killed while it waits (its FIFO has no reader any more) has its long-poll cut within a
second (:meth:`Hub.cut_abandoned`), and a wake is recorded only while its reader is there. The
hub leaves after :data:`IDLE_EXIT` seconds with no session (``AGENT_CHAT_WAKE_HUB_IDLE``).

One trust setting per hub (``http`` verifies servers process-wide): a request whose CA file
differs from the first one's is answered ``F``. Requests are taken only from a credentials
file, never ``AGENT_CHAT_TOKEN`` (the hook keeps those to the light waiter: no token is written
to a request).

    python -I -c 'from agent_chat.wake_hub import main; main()' HUB_DIRECTORY
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import select
import signal
import socket
import sys
import threading
import time

from . import http
from .files import RELAY_DIR, atomic_write, read_text
from .session_state import process_alive, watched_pid
from .wake_waiter import MIN_INTERVAL, Waiter, credentials, number, valid_cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Seconds without any session after which the hub exits.
IDLE_EXIT = 60.0
#: Seconds between looks at the directory when no signal came.
LOOK_EVERY = 1.0
#: The hub's directory in the home (ac-hook.sh spells it too).
HUB_DIR = "wake-hub"


def reader_alive(fd: int) -> bool:
    """Whether the FIFO behind the write end ``fd`` still has its reader (the hook's shell):
    a FIFO without readers polls as an error on its write end."""
    poller = select.poll()
    poller.register(fd, select.POLLERR)
    return not poller.poll(0)


def open_writer(path: str, hook_pid: int | None) -> int:
    """The FIFO's write end once its hook opens it for reading; -1 if the hook or its FIFO is
    gone first. Not given up on while the hook lives: a hook that saw its request taken goes
    on to open its FIFO and would wait there for ever (late only when the machine is busy)."""
    pause = 0.005
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return -1
        except OSError as e:
            if e.errno != errno.ENXIO or (hook_pid is not None and not process_alive(hook_pid)):
                return -1
            time.sleep(pause)  # no reader yet: the hook opens it right after its request
            pause = min(0.1, pause * 2)
            continue
        os.set_blocking(fd, True)
        return fd


class Hub:
    def __init__(self, directory: str, home: str) -> None:
        self.directory = directory
        self.home = home
        self.lock = threading.Lock()
        self.bell = threading.Event()
        self.sessions = 0
        self.idle_since = time.monotonic()
        self.trust: tuple[str | None] | None = None  # (CA file,) once the first request set it
        #: Each waiting session's FIFO (write end) → the socket of its long-poll now.
        self.polls: dict[int, socket.socket] = {}
        self.reports: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def look(self) -> None:
        """Take every complete request in the directory."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name.endswith(".req"):
                self.take(os.path.join(self.directory, name[:-4]))

    def take(self, base: str) -> None:
        text = read_text(base + ".req")
        if text is None or not text.endswith("\nend\n"):
            return  # still being written
        try:
            os.unlink(base + ".req")
        except OSError:
            return  # the hook gave up on us meanwhile
        with self.lock:
            self.sessions += 1
        threading.Thread(target=self.serve, args=(base, text.split("\n")), daemon=True).start()

    def serve(self, base: str, fields: list[str]) -> None:
        fd = -1
        try:
            pid_text = base.rpartition(".")[2]  # SID.PID: the hook's shell
            fd = open_writer(base + ".fifo", int(pid_text) if pid_text.isdigit() else None)
            if fd >= 0:
                try:
                    reply = self.answer(fields, fd)
                except Exception:  # the hook's own waiter does better than a broken thread
                    reply = "F"
                try:
                    os.write(fd, (reply + "\n").encode())
                    os.unlink(base + ".fifo")  # the answer stays readable; the hook just exits
                except OSError:
                    pass  # the hook is gone
        finally:
            if fd >= 0:
                self.polls.pop(fd, None)
                os.close(fd)
            with self.lock:
                self.sessions -= 1
                self.idle_since = time.monotonic()

    def answer(self, fields: list[str], fd: int) -> str:
        """The light waiter's run (:func:`agent_chat.wake_waiter.run`) for one request."""
        session, timeout, path, watch_text, cli = (fields + [""] * 5)[:5]
        found = credentials(path) if path else None
        if not session.strip() or found is None:
            return "0"
        server, token, ca_file = found
        with self.lock:
            if self.trust is None:
                self.trust = (ca_file,)
                if ca_file:
                    http.set_trust(ca_file=ca_file)
            elif self.trust != (ca_file,):
                return "F"
        waiter = Waiter(server, token, session.strip(), valid_cli(cli), self.home)
        waiter.opened = lambda sock: self.polls.__setitem__(fd, sock)
        found_news = waiter.wait(
            number(timeout, 86000.0, 1e9),
            MIN_INTERVAL,
            watched_pid(watch_text),
            lambda: reader_alive(fd),
        )
        if found_news is None or not reader_alive(fd):
            return "0"  # nobody to wake: the news stays news for the next waiter
        line, report = waiter.wake(found_news)
        self.reports.put(report)
        return "W" + line.rstrip("\n")

    def cut_abandoned(self) -> None:
        """End the long-poll of every session whose hook is gone (its CLI killed it, or it
        was killed with the CLI): its thread ends now, and with it the session's
        ``idle · wakeable``, rather than at the poll's end."""
        for fd, sock in list(self.polls.items()):
            if not reader_alive(fd):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def send_reports(self) -> None:
        """``woken`` reports, after the lines: the sessions wake first."""
        while True:
            report = self.reports.get()
            try:
                report()
            except Exception:
                pass  # best effort, as in the light waiter

    def done(self) -> bool:
        with self.lock:
            return self.sessions == 0 and time.monotonic() - self.idle_since > self.idle_exit

    @property
    def idle_exit(self) -> float:
        return number(os.environ.get("AGENT_CHAT_WAKE_HUB_IDLE"), IDLE_EXIT, 86400.0)


def main() -> None:
    directory = os.path.abspath(sys.argv[1])
    home = os.path.dirname(directory)
    for name in ("AGENT_CHAT_TOKEN", "AGENT_CHAT_SERVER", "AGENT_CHAT_CA_FILE"):
        os.environ.pop(name, None)  # (the hook starts it with none) every request has its own
    try:
        os.setsid()  # not in the process group of the hook that started it
    except OSError:
        pass
    # Two descriptors a session (its FIFO, its long-poll): a thousand sessions need more than
    # the usual soft limit of 1,024, and a FIFO the hub cannot open would leave its hook
    # blocked in open() for ever.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            pass
    lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another hub serves this directory
    hub = Hub(directory, home)
    # Before the pid file names us: a hook signals whoever it names (the default would kill)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: hub.bell.set())
    pid_file = os.path.join(directory, "pid")
    atomic_write(pid_file, f"{os.getpid()}\n".encode())
    try:
        os.rmdir(os.path.join(directory, "starting"))  # the hooks' "a hub is on its way"
    except OSError:
        pass
    http.set_relay(os.path.join(home, RELAY_DIR), starts=False)
    threading.stack_size(256 * 1024)  # a thread per session: its stack stays small
    threading.Thread(target=hub.send_reports, daemon=True).start()
    while True:
        hub.look()
        hub.bell.wait(LOOK_EVERY)
        hub.bell.clear()
        hub.cut_abandoned()
        if not os.path.isdir(directory):
            break  # the home was removed: nobody can ask any more
        if hub.done():
            try:
                os.unlink(pid_file)  # hooks from now on start a new hub...
            except OSError:
                break
            hub.look()  # ...and one that came just before is still served
            if hub.done():
                break
            atomic_write(pid_file, f"{os.getpid()}\n".encode())
    os._exit(0)
