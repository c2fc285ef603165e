"""Process plumbing: pid files, liveness, identity checks, signals to process groups, ports."""

from __future__ import annotations

from pathlib import Path
import errno
import os
import signal
import socket
import time

from .files import write_atomic


def write_pid(path: Path, pid: int) -> None:
    write_atomic(path, f"{pid}\n", 0o600)


def read_pid(path: Path) -> int | None:
    """The pid in ``path``, or None if missing or garbage."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead; our own zombie children are reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def cmdline_mentions(pid: int, needle: str) -> bool:
    """True if ``pid``'s command line contains ``needle`` (guards against reused pids).

    Without /proc (not Linux), any live pid is trusted.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid_alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return False
    return needle in raw.replace(b"\0", b" ").decode(errors="replace")


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``'s process group (it leads one), else to ``pid`` alone."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``'s group, then SIGKILL it if it is still there after ``timeout`` s."""
    signal_group(pid, signal.SIGTERM)
    if not wait_dead(pid, timeout):
        signal_group(pid, signal.SIGKILL)
        wait_dead(pid, 5.0)


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
