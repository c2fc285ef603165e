"""The connection keeper: warm connections to a remote server, handed to each ``ac`` process.

Why: every ``ac`` command is a new process, and a new process to a server across a network pays
a TCP handshake and a TLS handshake (two round trips) before its request's own round trip. On
the 50 ms links of the remote bench that is 300 ms for a notify where one round trip is 100.
``ssh``'s ControlMaster answers the same problem the same way: one process per machine and
server holds connections open, and the commands go through it over a Unix socket.

How it works:

- :mod:`agent_chat.http` sends a request for a non-loopback server to ``relay/KEY.sock`` in the
  client's home (KEY: the server and the CA it is verified with; the directory 0700, the socket
  0600). Nothing listening: it starts this keeper (detached, in a session of its own) and makes
  the request itself, as before.
- The keeper holds a few connections opened ahead of need (TCP and TLS done, no request sent
  yet), verified exactly as ``ac`` verifies (:func:`agent_chat.http._connect`). Each command's
  connection is spliced onto one of them: the command's bytes go out as they came (its
  ``Connection: close`` included), the answer comes back, and that connection is done. One
  connection serves one request, so nothing of HTTP is parsed here and no answer can be
  mixed up with another's. A new warm connection replaces the one taken.
- No warm connection at hand (a burst, the link down, the server's certificate refused): the
  keeper answers ``503`` with ``X-Agent-Chat-Relay: direct`` before the request is sent on, and
  the command connects by itself, so its errors (an untrusted certificate, a refused
  connection) are the ones it would have without the keeper.
- Warm connections are dropped when the server closes them and renewed after
  :data:`RENEW_AT` seconds either way: the server closes a connection that sends nothing
  (a slow client to it), and so do proxies. The pool
  grows by one each time a command found it empty (up to :data:`MAX_POOL`) and shrinks back
  when that has not happened for a while.
- The keeper exits after :data:`IDLE_EXIT` seconds without a command
  (``AGENT_CHAT_RELAY_IDLE``), at ``SIGTERM``, or at once when its socket is removed or taken
  over by a newer keeper, closing its warm connections properly (TLS's goodbye first).

``GET /.relay`` on the socket answers this keeper's counts as JSON (what ``ac`` and the tests
read to see it at work); it never reaches the server.

Run by :func:`agent_chat.http.start_relay` as
``python -S -c ... SOCKET SCHEME HOST PORT CA_FILE`` (CA_FILE empty: the system's store).
"""

from __future__ import annotations

import _socket
import json
import os
import select
import signal
import socket
import sys
import threading
import time

from . import http
from .errors import AcError

#: Seconds after which a warm connection is replaced, and after which it is never handed out:
#: the server closes a connection that sends no request within its header timeout (15 s by
#: default, ``header_timeout_seconds``) and counts it as a slow client; the keeper closes its
#: own first.
RENEW_AT, MAX_AGE = 8.0, 12.0
#: Warm connections kept at least, and at most after bursts.
MIN_POOL, MAX_POOL = 2, 8
#: Seconds without a command after which the keeper exits (``AGENT_CHAT_RELAY_IDLE``).
IDLE_EXIT = 600.0
#: Seconds a spliced exchange may go with neither side sending anything (a long-poll's answer
#: comes well within it).
QUIET_LIMIT = 900.0
CONNECT_TIMEOUT = 10.0
DIRECT_ANSWER = (
    b"HTTP/1.1 503 No warm connection\r\nX-Agent-Chat-Relay: direct\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
STATUS_REQUEST = b"GET /.relay "


class Pool:
    """Warm connections to one server, opened by :meth:`keep` in a thread of its own."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.idle: list[tuple[float, _socket.socket | http._TlsSocket]] = []
        self.size = MIN_POOL
        self.last_miss = 0.0
        self.failure: str | None = None
        self.counts = {"spliced": 0, "direct": 0, "opened": 0, "dropped": 0}
        self.wake = threading.Condition()

    def take(self) -> _socket.socket | http._TlsSocket | None:
        """A live warm connection, or None (the pool grows for the next burst)."""
        with self.wake:
            while self.idle:
                born, conn = self.idle.pop()
                if time.monotonic() - born < MAX_AGE and _alive(conn):
                    self.counts["spliced"] += 1
                    self.wake.notify()
                    return conn
                self.counts["dropped"] += 1
                conn.close()
            self.counts["direct"] += 1
            self.size = min(MAX_POOL, self.size + 1)
            self.last_miss = time.monotonic()
            self.wake.notify()
            return None

    def keep(self) -> None:
        """Open connections until the pool is full; drop the dead and renew the old."""
        backoff = 0.5
        while True:
            with self.wake:
                now = time.monotonic()
                if self.size > MIN_POOL and now - self.last_miss > 60:
                    self.size -= 1
                    self.last_miss = now
                fresh = [c for c in self.idle if now - c[0] < RENEW_AT]
                if len(fresh) >= self.size:
                    self.wake.wait(1.0)
                    self._sweep()
                    continue
            try:
                clock = http._Clock(CONNECT_TIMEOUT, CONNECT_TIMEOUT)
                conn = http._connect(self.scheme, self.host, self.port, clock)
            except (OSError, AcError, ValueError) as e:
                with self.wake:
                    self.failure = str(e)
                    self._sweep()
                time.sleep(backoff)
                backoff = min(30.0, backoff * 2)
                continue
            backoff = 0.5
            with self.wake:
                self.failure = None
                self.counts["opened"] += 1
                self.idle.insert(0, (time.monotonic(), conn))
                self._sweep()

    def _sweep(self) -> None:
        """Close connections the server closed and, once renewed, the aged ones (lock held)."""
        now = time.monotonic()
        fresh = sum(1 for born, _ in self.idle if now - born < RENEW_AT)
        kept = []
        for born, conn in self.idle:
            aged = now - born >= RENEW_AT
            if (aged and (fresh or now - born >= MAX_AGE)) or not _alive(conn):
                self.counts["dropped"] += 1
                conn.close()
            else:
                kept.append((born, conn))
        self.idle = kept

    def close(self) -> None:
        """Close the warm connections properly (TLS's close first): a server counts a
        connection that ends without a word, and without a request, as a slow client."""
        with self.wake:
            idle, self.idle = self.idle, []
        for _born, conn in idle:
            if isinstance(conn, http._TlsSocket):
                try:
                    conn.raw.settimeout(0.5)
                    conn.tls.shutdown()
                except (OSError, ValueError):
                    pass
            conn.close()

    def status(self) -> dict[str, object]:
        with self.wake:
            return {
                "server": f"{self.scheme}://{self.host}:{self.port}",
                "warm": len(self.idle),
                "size": self.size,
                "failure": self.failure,
                **self.counts,
            }


def _raw(conn: _socket.socket | http._TlsSocket) -> _socket.socket:
    return conn.raw if isinstance(conn, http._TlsSocket) else conn


def _alive(conn: _socket.socket | http._TlsSocket) -> bool:
    """Whether an unused connection is still open: nothing to read, or only TLS's own
    messages (a TLS 1.3 server sends its session tickets after the handshake)."""
    raw = _raw(conn)
    try:
        readable, _, _ = select.select([raw], [], [], 0)
        if not readable:
            return True
        if isinstance(conn, http._TlsSocket):
            import _ssl

            raw.setblocking(False)
            try:
                conn.tls.read(1)
            except _ssl.SSLWantReadError:
                return True  # the tickets were read; no data, no close
            finally:
                raw.setblocking(True)
            return False  # data nobody asked for, or the server's close
        return False  # a plain connection readable before any request: closed
    except (OSError, ValueError):
        return False


def splice(down: _socket.socket, up: _socket.socket | http._TlsSocket) -> None:
    """Carry bytes both ways until either side closes (one thread: a TLS connection must
    not be read and written from two at once)."""
    raw = _raw(up)
    tls = up.tls if isinstance(up, http._TlsSocket) else None
    raw.settimeout(QUIET_LIMIT)
    down.settimeout(QUIET_LIMIT)
    try:
        while True:
            if tls is not None and tls.pending():
                readable = [raw]
            else:
                readable, _, _ = select.select([down, raw], [], [], QUIET_LIMIT)
                if not readable:
                    return
            if down in readable:
                data = down.recv(65536)
                if not data:
                    return
                up.sendall(data)
            if raw in readable:
                data = up.recv(65536)
                if not data:
                    return
                down.sendall(data)
    except OSError:
        return
    finally:
        up.close()


class Keeper:
    """The listening socket, the pool, and one thread per command."""

    def __init__(self, path: str, pool: Pool, idle_exit: float) -> None:
        self.path = path
        self.pool = pool
        self.idle_exit = idle_exit
        self.last_used = time.monotonic()
        self.active = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a name of its own, then renamed over the socket's path: a command never
        # finds a half-made socket, and an older keeper sees its socket gone and leaves.
        temp = f"{path}.{os.getpid()}"
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self.listener.bind(temp)
        finally:
            os.umask(old)
        os.chmod(temp, 0o600)
        self.listener.listen(64)
        os.rename(temp, path)
        self.inode = os.stat(path).st_ino

    def serve(self) -> None:
        self.listener.settimeout(1.0)
        while self._wanted():
            try:
                down, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                continue
            with self.lock:
                self.active += 1
                self.last_used = time.monotonic()
            threading.Thread(target=self._command, args=(down,), daemon=True).start()
        self.listener.close()
        # exchanges in flight finish on the connections they have (asked to stop: briefly)
        deadline = time.monotonic() + (1.0 if self.stopping.is_set() else QUIET_LIMIT)
        while self.active and time.monotonic() < deadline:
            time.sleep(0.2)

    def _wanted(self) -> bool:
        if self.stopping.is_set():
            return False
        try:
            if os.stat(self.path).st_ino != self.inode:
                return False  # a newer keeper took the path over
        except OSError:
            return False  # the socket (or the whole home) was removed
        with self.lock:
            return self.active > 0 or time.monotonic() - self.last_used < self.idle_exit

    def _command(self, down: _socket.socket) -> None:
        try:
            down.settimeout(5.0)
            first = down.recv(65536, _socket.MSG_PEEK)
            if not first:
                return
            if first.startswith(STATUS_REQUEST):
                body = json.dumps(self.pool.status()).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
                down.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
                _drain(down)
                return
            up = self.pool.take()
            if up is None:
                down.sendall(DIRECT_ANSWER)
                _drain(down)
                return
            splice(down, up)
        except OSError:
            pass
        finally:
            down.close()
            with self.lock:
                self.active -= 1
                self.last_used = time.monotonic()


def _drain(down: _socket.socket) -> None:
    """End our side and read the command's request away until it closes: closing a Unix
    socket with unread bytes in it would reset the answer before the command read it."""
    try:
        down.shutdown(_socket.SHUT_WR)
        down.settimeout(5.0)
        while down.recv(65536):
            pass
    except OSError:
        pass


def main(argv: list[str]) -> int:
    path, scheme, host, port_text, ca_file = argv[:5]
    http.set_trust(ca_file=ca_file or None, allow_http=True)  # the command checked plain HTTP
    try:
        idle_exit = float(os.environ.get("AGENT_CHAT_RELAY_IDLE") or IDLE_EXIT)
    except ValueError:
        idle_exit = IDLE_EXIT
    pool = Pool(scheme, host, int(port_text))
    keeper = Keeper(path, pool, idle_exit)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: keeper.stopping.set())
    threading.Thread(target=pool.keep, daemon=True).start()
    keeper.serve()
    pool.close()
    try:
        if os.stat(path).st_ino == keeper.inode:
            os.unlink(path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
