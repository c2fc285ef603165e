"""Benchmark the ``ac`` client's cold processes against the seed's matrix-nio design.

Starts a throwaway Synapse + appservice (or uses a running one, see --data-dir / --api-url),
registers an agent, creates a bench room, registers an ordinary Matrix user for the baseline
(admin shared-secret API), then runs N cold processes of each command, interleaved, against the
same Synapse:

    ac notify --oneline          vs  seed notify (matrix-nio, incremental /sync, stored token)
    ac send ROOM TEXT            vs  seed send   (matrix-nio room_send, cached alias)
    ac listen --last 20          vs  seed listen (matrix-nio room_messages), for information

Wall time is measured around each process (spawn to exit, through /usr/bin/time, which also
reports the peak RSS); the server is given a moment to settle between processes.
Prints a table and writes JSON (default bench/results/bench_client-<time>.json).

With ``--against REV`` the client of that git revision (exported to a temp dir) runs too, in
the same interleaved loop against the same server and home, started the same way as this
tree's (``python -c`` importing ``agent_chat.cli`` from the given client dir), and each command
gets a ratio this tree / REV: a code change's cold-start cost, measured in one run.

    .venv/bin/python bench/bench_client.py            # start a temp server, N=20
    .venv/bin/python bench/bench_client.py -n 50 --data-dir ~/.agent-chat-server
    .venv/bin/python bench/bench_client.py --api-url http://127.0.0.1:8009 \\
        --registration-token T --synapse-url http://127.0.0.1:8008 --matrix-token syt_...
"""

from __future__ import annotations

from pathlib import Path
import argparse
import compileall
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AC = str(BIN / "ac")
PY = sys.executable
SEED = str(Path(__file__).resolve().parent / "seed_nio_client.py")

#: name → (median ms limit, ratio vs seed at least, peak MiB limit); None = no target
TARGETS = {
    "ac notify --oneline": (60.0, 5.0, 30.0),
    "ac send": (90.0, 3.5, None),
    "ac listen --last 20": (100.0, None, None),
}
BASELINE_OF = {
    "ac notify --oneline": "seed notify",
    "ac send": "seed send",
    "ac listen --last 20": "seed listen",
}


def http_json(method, url, body=None, token=None, timeout=30.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Connection facts for the server under test; starts a temp one if asked."""

    def __init__(
        self,
        api_url,
        synapse_url,
        registration_token,
        server_name,
        shared_secret=None,
        matrix_token=None,
        stop=None,
    ):
        self.api_url = api_url
        self.synapse_url = synapse_url
        self.registration_token = registration_token
        self.server_name = server_name
        self.shared_secret = shared_secret
        self.matrix_token = matrix_token
        self.stop = stop

    @classmethod
    def from_data_dir(cls, path, stop=None):
        from agent_chat_server import control
        from agent_chat_server.files import load_yaml
        from agent_chat_server.paths import DataDir

        dd = DataDir.at(path)
        config = control.load_config(dd)
        hs = load_yaml(dd.homeserver_yaml)
        return cls(
            config.api_url,
            config.homeserver_url,
            config.registration_token,
            config.server_name,
            hs.get("registration_shared_secret"),
            stop=stop,
        )

    @classmethod
    def start_temp(cls, root):
        from agent_chat_server import control
        from agent_chat_server.init import InitOptions, init_data_dir
        from agent_chat_server.paths import DataDir

        dd = DataDir.at(root)
        ports = set()
        while len(ports) < 2:
            ports.add(free_port())
        synapse_port, api_port = sorted(ports)
        init_data_dir(dd, InitOptions(synapse_port=synapse_port, api_port=api_port))
        control.start_background(dd, timeout=90, tie_to_caller=True)
        return cls.from_data_dir(root, stop=lambda: control.stop(dd))


def create_matrix_user(server):
    """An ordinary Matrix user for the baseline: shared-secret registration, or a given token."""
    if server.matrix_token:
        status, body = http_json(
            "GET",
            server.synapse_url + "/_matrix/client/v3/account/whoami",
            token=server.matrix_token,
        )
        assert status == 200, body
        return body["user_id"], server.matrix_token
    if not server.shared_secret:
        raise SystemExit("need --matrix-token or a data dir with registration_shared_secret")
    url = server.synapse_url + "/_synapse/admin/v1/register"
    status, body = http_json("GET", url)
    assert status == 200, body
    nonce = body["nonce"]
    user, password = "bench" + secrets.token_hex(4), secrets.token_urlsafe(16)
    mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]))
    status, body = http_json(
        "POST",
        url,
        {
            "nonce": nonce,
            "username": user,
            "password": password,
            "admin": False,
            "mac": mac.hexdigest(),
        },
    )
    assert status == 200, body
    return body["user_id"], body["access_token"]


def _first_token(data):
    """The API token stored in an ac credentials file (whatever its nesting)."""
    if isinstance(data, dict):
        if isinstance(data.get("token"), str):
            return data["token"]
        for value in data.values():
            found = _first_token(value)
            if found:
                return found
    return None


def child_env(extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENT_CHAT_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(extra)
    return env


TIME = "/usr/bin/time"


def run_cold(cmd, env, errfile):
    """One cold process: (wall ms, peak RSS KiB, exit code).

    The peak RSS comes from GNU time's rusage of the command: a child forked from this (large)
    Python process inherits its high-water mark across exec, so ``os.wait4`` here would report
    this process's size, not the command's. Without /usr/bin/time, RSS is reported as 0.
    """
    use_time = os.access(TIME, os.X_OK)
    rss_file = str(errfile) + ".rss"
    full = [TIME, "-f", "%M", "-o", rss_file, *cmd] if use_time else cmd
    with open(errfile, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        _, status, _usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - t0) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = 0
    if use_time:
        try:
            rss = int(Path(rss_file).read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            rss = 0
    return wall, rss, proc.returncode


def check(cmd, env, what):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def summarize(samples):
    walls = sorted(s[0] for s in samples)
    rss = [s[1] / 1024 for s in samples]
    return {
        "n": len(walls),
        "median_ms": statistics.median(walls),
        "mean_ms": statistics.fmean(walls),
        "min_ms": walls[0],
        "p90_ms": walls[min(len(walls) - 1, round(0.9 * (len(walls) - 1)))],
        "max_ms": walls[-1],
        "peak_rss_mib_median": statistics.median(rss),
        "peak_rss_mib_max": max(rss),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="cold runs per command")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs per command")
    parser.add_argument("--data-dir", help="use the running server of this data dir")
    parser.add_argument("--api-url", help="use this running appservice API")
    parser.add_argument("--synapse-url", help="with --api-url: the Synapse URL")
    parser.add_argument("--registration-token", help="with --api-url: the registration token")
    parser.add_argument("--matrix-token", help="with --api-url: a Matrix user's access token")
    parser.add_argument("--json-out", help="where to write the JSON results")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run the client of this git revision; report this tree / REV per command",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=1.05,
        help="with --against: the largest this tree / REV median ratio that meets the target",
    )
    args = parser.parse_args()

    if args.api_url and not (args.synapse_url and args.registration_token):
        parser.error("--api-url needs --synapse-url and --registration-token")

    def connect(tmp):
        if args.api_url:
            status, health = http_json("GET", args.api_url.rstrip("/") + "/_agent_chat/v1/health")
            assert status == 200, health
            return Server(
                args.api_url.rstrip("/"),
                args.synapse_url.rstrip("/"),
                args.registration_token,
                health["server_name"],
                matrix_token=args.matrix_token,
            )
        if args.data_dir:
            return Server.from_data_dir(args.data_dir)
        print("starting a temporary Synapse + appservice ...", flush=True)
        return Server.start_temp(tmp / "server")

    return run_and_save("bench_client", connect, bench, args)


def run_stamp(args):
    """When, where and how many runs: the head of every results file."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "warmup": args.warmup,
    }


def run_and_save(name, connect, bench_fn, args):
    """``bench_fn(server, tmp, args)`` on the server ``connect(tmp)`` gives (stopped after, if
    it was started), its results written as JSON (``args.json_out`` or bench/results/NAME-time);
    the exit status: 0 when every target was met."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ac-{name}-"))
    server = None
    try:
        server = connect(tmp)
        results = bench_fn(server, tmp, args)
    finally:
        if server is not None and server.stop:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = (
        Path(args.json_out)
        if args.json_out
        else (ROOT / "bench" / "results" / time.strftime(f"{name}-%Y%m%d-%H%M%S.json"))
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0 if results["all_targets_met"] else 1


LAUNCH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from agent_chat.cli import main; main()"


def export_client(rev, dest):
    """The ``client/`` tree of git revision ``rev`` under ``dest``, compiled as installed."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "client"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"--against {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    compileall.compile_dir(str(dest / "client" / "agent_chat"), quiet=1)
    return str(dest / "client")


def against_rows(stats, rev, max_ratio):
    """Per command: this tree's median / REV's median, and whether it is within max_ratio."""
    rows = {}
    for name in TARGETS:
        mine, theirs = stats[f"{name} (this tree)"], stats[f"{name} @{rev}"]
        ratio = mine["median_ms"] / theirs["median_ms"]
        rows[name] = {"ratio": ratio, "max": max_ratio, "met": ratio <= max_ratio}
    return rows


def bench(server, tmp, args):
    # bytecode as a normal install has it (this environment may set PYTHONDONTWRITEBYTECODE)
    compileall.compile_dir(str(ROOT / "client" / "agent_chat"), quiet=1)
    home = tmp / "ac-home"
    home.mkdir()
    env = child_env({"AGENT_CHAT_HOME": str(home), "AGENT_CHAT_SERVER": server.api_url})
    check(
        [AC, "config", "--set", f"registration_token={server.registration_token}"],
        env,
        "ac config",
    )
    check([AC, "register", "Bench" + secrets.token_hex(3)], env, "ac register")
    room = "#bench-" + secrets.token_hex(3)
    check([AC, "create-room", room, "--topic", "ac benchmark"], env, "ac create-room")
    peer_env = child_env(
        {"AGENT_CHAT_HOME": str(tmp / "peer-home"), "AGENT_CHAT_SERVER": server.api_url}
    )
    check(
        [AC, "config", "--set", f"registration_token={server.registration_token}"],
        peer_env,
        "ac config (peer)",
    )
    check([AC, "join", room], peer_env, "peer join")
    for i in range(25):  # history for listen, unread for notify
        check([AC, "send", room, f"[STATUS] peer message {i}"], peer_env, "peer send")

    user_id, token = create_matrix_user(server)
    alias = urllib.parse.quote(f"{room}:{server.server_name}")
    status, body = http_json(
        "POST", f"{server.synapse_url}/_matrix/client/v3/join/{alias}", {}, token=token
    )
    assert status == 200, body
    body["room_id"]
    status, first = http_json(
        "GET", f"{server.synapse_url}/_matrix/client/v3/sync?timeout=0", token=token
    )
    assert status == 200, first
    state_path = tmp / "seed-state.json"
    state_path.write_text(
        json.dumps(
            {
                "homeserver": server.synapse_url,
                "user_id": user_id,
                "access_token": token,
                "server_name": server.server_name,
                "sync_token": first["next_batch"],
                "room_aliases": {},
            }
        )
    )
    seed_env = child_env({})
    seed = [PY, SEED, "--state", str(state_path)]

    token = _first_token(json.loads((home / "credentials.json").read_text()))
    curl = shutil.which("curl")
    counter = iter(range(10**9))
    commands = {
        "ac notify --oneline": (lambda: [AC, "notify", "--oneline"], env),
        "seed notify": (lambda: [*seed, "notify", "--oneline"], seed_env),
        "ac send": (lambda: [AC, "send", room, f"ac bench {next(counter)}"], env),
        "seed send": (lambda: [*seed, "send", room, f"seed bench {next(counter)}"], seed_env),
        "ac listen --last 20": (lambda: [AC, "listen", "--last", "20"], env),
        "seed listen": (lambda: [*seed, "listen", room, "--last", "20"], seed_env),
    }
    if args.against:
        # Both trees started the same way, so the ratio is the code's and not the launcher's.
        trees = {
            "this tree": str(ROOT / "client"),
            f"@{args.against}": export_client(args.against, tmp / "against"),
        }
        for name, argv in (
            ("ac notify --oneline", lambda: ["notify", "--oneline"]),
            ("ac send", lambda: ["send", room, f"ac bench {next(counter)}"]),
            ("ac listen --last 20", lambda: ["listen", "--last", "20"]),
        ):
            for label, client_dir in trees.items():
                key = f"{name} (this tree)" if label == "this tree" else f"{name} {label}"
                commands[key] = (
                    lambda d=client_dir, a=argv: [PY, "-c", LAUNCH, d, *a()],
                    env,
                )
    if curl:  # the floor: one HTTP request from the cheapest client there is
        commands["curl notify (floor)"] = (
            lambda: [
                curl,
                "-s",
                "-o",
                "/dev/null",
                "-H",
                f"Authorization: Bearer {token}",
                server.api_url + "/_agent_chat/v1/notify?format=oneline",
            ],
            env,
        )
    samples = {name: [] for name in commands}
    errfile = tmp / "stderr.txt"
    total = args.warmup + args.runs
    print(
        f"{len(commands)} commands x {args.runs} cold runs (+{args.warmup} warm-up), "
        f"interleaved; room {room}, baseline user {user_id}",
        flush=True,
    )
    # Each --against pair runs in turn order A B, then B A next round: the one that runs second
    # finds the server still busy with the first's work, and that must not count against a tree.
    swapped = list(commands)
    for n, name in enumerate(swapped[:-1]):
        if name.endswith("(this tree)"):
            swapped[n], swapped[n + 1] = swapped[n + 1], name
    for i in range(total):
        for name in commands if i % 2 == 0 else swapped:
            make, cmd_env = commands[name]
            wall, rss, code = run_cold(make(), cmd_env, errfile)
            if code != 0:
                raise SystemExit(f"{name} exited {code}: {errfile.read_text().strip()[-500:]}")
            if i >= args.warmup:
                samples[name].append((wall, rss))
            # let the server settle (Synapse pushes each sent event to the appservice just
            # after answering) and stay under the per-agent send rate
            time.sleep(0.3 if " send" in name else 0.1)
    stats = {name: summarize(s) for name, s in samples.items()}
    stats_ok = True
    rows = []
    for name, st in stats.items():
        base = BASELINE_OF.get(name)
        ratio = stats[base]["median_ms"] / st["median_ms"] if base else None
        st["ratio_vs_seed"] = ratio
        limit_ms, min_ratio, limit_mib = TARGETS.get(name, (None, None, None))
        verdicts = []
        if limit_ms is not None:
            verdicts.append(st["median_ms"] <= limit_ms)
        if min_ratio is not None:
            verdicts.append(ratio >= min_ratio)
        if limit_mib is not None:
            verdicts.append(st["peak_rss_mib_max"] <= limit_mib)
        st["targets"] = {
            "median_ms_max": limit_ms,
            "ratio_min": min_ratio,
            "peak_mib_max": limit_mib,
            "met": all(verdicts) if verdicts else None,
        }
        stats_ok = stats_ok and all(verdicts)
        target = []
        if limit_ms is not None:
            target.append(f"<={limit_ms:.0f}ms")
        if min_ratio is not None:
            target.append(f">={min_ratio}x")
        if limit_mib is not None:
            target.append(f"<={limit_mib:.0f}MiB")
        rows.append(
            (
                name,
                st,
                ratio,
                " ".join(target),
                "" if not verdicts else ("ok" if all(verdicts) else "MISSED"),
            )
        )
    print()
    print(
        f"{'command':<22} {'median':>8} {'p90':>8} {'min':>8} {'peak RSS':>9} "
        f"{'vs seed':>8}  target"
    )
    for name, st, ratio, target, verdict in rows:
        print(
            f"{name:<22} {st['median_ms']:>6.1f}ms {st['p90_ms']:>6.1f}ms "
            f"{st['min_ms']:>6.1f}ms {st['peak_rss_mib_max']:>6.1f}MiB "
            f"{(f'{ratio:.1f}x' if ratio else ''):>8}  {target} {verdict}"
        )
    against = None
    if args.against:
        against = against_rows(stats, args.against, args.max_ratio)
        print(
            f"\nthis tree / {args.against}, medians in the same run (target <= {args.max_ratio})"
        )
        for name, row in against.items():
            verdict = "ok" if row["met"] else "MISSED"
            print(f"{name:<22} {row['ratio']:>6.3f}x  {verdict}")
            stats_ok = stats_ok and row["met"]
    base_py = [run_cold([PY, "-c", "pass"], seed_env, errfile) for _ in range(args.runs)]
    py_median = statistics.median(w for w, _, _ in base_py)
    print(f"{'(python -c pass)':<22} {py_median:>6.1f}ms")
    return {
        **run_stamp(args),
        "python_startup_median_ms": py_median,
        "api_url": server.api_url,
        "synapse_url": server.synapse_url,
        "commands": stats,
        "against": {"rev": args.against, "ratios": against} if against else None,
        "all_targets_met": stats_ok,
    }


if __name__ == "__main__":
    sys.exit(main())
