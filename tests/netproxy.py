"""A userspace TCP proxy that puts a network's faults on a link (this kernel has no netem).

Run inside the namespace that carries the link (tests/netns.py starts it)::

    python netproxy.py --control SOCK --delay 0.05 LISTEN_HOST:PORT=TARGET_HOST:PORT ...

Every byte is delivered ``delay`` seconds after it was read, in order, each way (50 ms each
way: 100 ms of round trip). Commands on the Unix socket ``--control``, one line each, answered
with one line:

- ``reset P``: from now on each new connection is reset (RST) with probability P, at a random
  moment in its first 300 ms (P=0.01: 1% of connections);
- ``cut S``: the link goes down for S seconds: every open connection is reset, and new ones are
  accepted but carry nothing until the cut ends, then are reset too;
- ``stats``: ``connections=N resets=N cut_until=T``.

``--log FILE`` appends one line per chunk read, ``TIME CONN DIR BYTES`` (wall clock, the
connection's number, ``+`` accepted (then the target's port), ``>`` client to server or ``<``
back, 0 bytes: that side closed), to see where a request's time goes
(bench/bench_remote.py --trace).

Stdlib only, one process, asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


class Link:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.reset_probability = 0.0
        self.cut_until = 0.0
        self.live: set[Connection] = set()
        self.connections = 0
        self.resets = 0
        self.log: TextIO | None = None

    def note(self, conn: int, way: str, size: int) -> None:
        if self.log is not None:
            self.log.write(f"{time.time():.4f} {conn} {way} {size}\n")
            self.log.flush()


class Connection:
    def __init__(self, link: Link, client: asyncio.StreamWriter) -> None:
        self.link = link
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.done = asyncio.Event()
        self.number = link.connections

    def reset(self) -> None:
        """End both sides with a RST (SO_LINGER 0), as a broken link's peer would see it."""
        self.link.resets += 1
        for writer in (self.client, self.server):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.done.set()


async def _pump(
    link: Link,
    conn: Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    way: str,
) -> None:
    """Read from one side, deliver to the other ``delay`` later, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            pause = due - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            link.note(conn.number, way, len(data))
            queue.put_nowait((loop.time() + link.delay, data))
            if not data:
                break
        await task
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        if not task.done():
            task.cancel()


async def _handle(
    link: Link, target: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    link.connections += 1
    conn = Connection(link, writer)
    link.note(conn.number, "+", target[1])
    loop = asyncio.get_running_loop()
    if loop.time() < link.cut_until:  # the link is down: nothing passes, then a reset
        await asyncio.sleep(link.cut_until - loop.time())
        conn.reset()
        return
    link.live.add(conn)
    try:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            conn.reset()
            return
        conn.server = up_writer
        if random.random() < link.reset_probability:
            loop.call_later(random.uniform(0.0, 0.3), conn.reset)
        pumps = [
            asyncio.create_task(_pump(link, conn, reader, up_writer, ">")),
            asyncio.create_task(_pump(link, conn, up_reader, writer, "<")),
        ]
        ended = asyncio.create_task(conn.done.wait())
        await asyncio.wait([asyncio.gather(*pumps), ended], return_when=asyncio.FIRST_COMPLETED)
        for task in [*pumps, ended]:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                w.close()
    finally:
        link.live.discard(conn)


async def _control(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    line = (await reader.readline()).decode().split()
    answer = "ok"
    if line[:1] == ["reset"] and len(line) == 2:
        link.reset_probability = float(line[1])
    elif line[:1] == ["cut"] and len(line) == 2:
        link.cut_until = loop.time() + float(line[1])
        for conn in list(link.live):
            conn.reset()
    elif line[:1] == ["stats"]:
        left = max(0.0, link.cut_until - loop.time())
        answer = f"connections={link.connections} resets={link.resets} cut_left={left:.1f}"
    else:
        answer = "error: unknown command"
    writer.write(answer.encode() + b"\n")
    await writer.drain()
    writer.close()


async def main(args: argparse.Namespace) -> None:
    link = Link(args.delay)
    if args.log:
        link.log = open(args.log, "a")  # noqa: SIM115 (open for the process's life)
    servers = []
    for spec in args.routes:
        listen, _, target = spec.partition("=")
        lhost, _, lport = listen.rpartition(":")
        thost, _, tport = target.rpartition(":")
        dest = (thost, int(tport))
        servers.append(
            await asyncio.start_server(
                lambda r, w, dest=dest: _handle(link, dest, r, w), lhost, int(lport)
            )
        )
    servers.append(
        await asyncio.start_unix_server(lambda r, w: _control(link, r, w), args.control)
    )
    print(f"ready {time.time():.3f}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--log", help="append TIME CONN DIR BYTES per chunk read")
    parser.add_argument("routes", nargs="+")
    asyncio.run(main(parser.parse_args()))
