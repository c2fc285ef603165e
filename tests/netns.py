"""Hosts on a private network made of Linux network namespaces, for tests across a network.

A router namespace holds a bridge (10.231.0.254/24, plus any extra addresses) and each host
namespace one end of a veth pair on it; every namespace has its loopback up. Everything lives
in namespaces this module made, named with the test process's id, and :meth:`Net.close` kills
every process left in them and deletes them (veths and the bridge go with them), whatever
happened. Traffic never leaves them: 10.231.0.0/24 exists only inside.

Needs root and ``ip netns``; :func:`require` skips the test with the reason otherwise.
"""

from __future__ import annotations

from pathlib import Path
import os
import signal
import subprocess
import sys
import time

import pytest

SUBNET = "10.231.0"
ROUTER_IP = f"{SUBNET}.254"
PROXY = Path(__file__).with_name("netproxy.py")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def require() -> None:
    """Skip unless this process may make network namespaces."""
    if os.geteuid() != 0:
        pytest.skip("tests across a network need root (ip netns add)")
    probe = f"acprobe{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"ip netns is not available: {e}")
    if made.returncode != 0:
        pytest.skip(f"ip netns add fails here: {made.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


class Net:
    """A bridge in a router namespace and hosts on it (``add_host``)."""

    def __init__(self, tag: str = "") -> None:
        self.prefix = f"ac{tag}{os.getpid() % 100000}"
        self.router = f"{self.prefix}r"
        self.hosts: dict[str, str] = {}  # name -> namespace
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.etc_dirs: list[Path] = []
        self._add_ns(self.router)
        self.run_in(self.router, "ip", "link", "add", "br0", "type", "bridge")
        self.run_in(self.router, "ip", "addr", "add", f"{ROUTER_IP}/24", "dev", "br0")
        self.run_in(self.router, "ip", "link", "set", "br0", "up")

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, octet: int) -> str:
        """A host namespace at 10.231.0.OCTET on the bridge; returns its address."""
        ns = f"{self.prefix}{name}"
        self._add_ns(ns)
        peer = f"v{self.prefix}{name}"[-15:]
        _ip(
            "-n",
            ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            self.router,
        )
        self.run_in(self.router, "ip", "link", "set", peer, "master", "br0", "up")
        address = f"{SUBNET}.{octet}"
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[name] = ns
        return address

    def names(self, names: dict[str, str]) -> None:
        """Host names (name -> address) every namespace resolves: ``ip netns exec`` mounts
        /etc/netns/NS/hosts over /etc/hosts; :meth:`close` removes those files."""
        text = "127.0.0.1 localhost\n::1 localhost\n"
        text += "".join(f"{address} {name}\n" for name, address in names.items())
        for ns in self.namespaces:
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            self.etc_dirs.append(etc)
            (etc / "hosts").write_text(text)

    def ns(self, host: str) -> str:
        return self.router if host == "router" else self.hosts[host]

    def argv(self, host: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run_in(self, ns: str, *argv: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, timeout=20
        )

    def run(
        self,
        host: str,
        *argv: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a host and wait for it."""
        return subprocess.run(
            self.argv(host, *argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def start(
        self, host: str, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start a command on a host; :meth:`close` kills it if the test did not."""
        proc = subprocess.Popen(
            self.argv(host, *argv),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def proxy(
        self, routes: list[str], control: Path, delay: float = 0.05, log: Path | None = None
    ) -> subprocess.Popen[str]:
        """The fault proxy (netproxy.py) on the router: ``LISTEN:PORT=TARGET:PORT`` routes;
        ``log``: its per-chunk timestamps (netproxy.py --log)."""
        extra = ["--log", str(log)] if log else []
        proc = self.start(
            "router",
            sys.executable,
            str(PROXY),
            "--control",
            str(control),
            "--delay",
            str(delay),
            *extra,
            *routes,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            proc.kill()
            raise RuntimeError(
                f"the proxy did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        return proc

    def close(self) -> None:
        """Kill what runs in the namespaces, then delete them (with their links)."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.namespaces):
            for _ in range(3):
                pids = _ip("netns", "pids", ns, check=False).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                time.sleep(0.2)
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        for etc in self.etc_dirs:
            (etc / "hosts").unlink(missing_ok=True)
            try:
                etc.rmdir()
            except OSError:
                pass
        self.etc_dirs.clear()


def control(sock: Path, command: str) -> str:
    """One command to the proxy (``reset P``, ``cut S``, ``stats``); its one-line answer."""
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        return s.makefile().readline().strip()
