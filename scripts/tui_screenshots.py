#!/usr/bin/env python3
"""Screenshots of ``ac tui`` for docs/tui.md (SVG, as Textual exports them).

Starts a throwaway stack, stages a small team (three agents, a human, rooms, a thread, a
mention, claims), runs the TUI headless as the human and saves each main view:

    .venv/bin/python scripts/tui_screenshots.py            # writes docs/img/tui-*.svg
    .venv/bin/python scripts/tui_screenshots.py --out /tmp/shots --size 120x36
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_tui import Stack, home_for, send  # noqa: E402

from agent_chat.api import Client  # noqa: E402

PROJECT = "github.com/acme/shop"


def human(stack: Stack, name: str) -> dict[str, Any]:
    """A person with a Matrix account (``agent-chat-server user add``), logged in to the API."""
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [sys.executable, "-m", "agent_chat_server", "user", "add", name,
         "--data-dir", str(stack.dd.root)],
        input=password + "\n", text=True, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    answer = Client(stack.url).call(
        "POST", "/login", body={"user": name, "password": password}, auth=False
    )
    answer.setdefault("nick", name)
    answer["kind"] = "human"
    return answer


def stage(stack: Stack) -> dict[str, Any]:
    """The team and its morning; the human's identity."""
    alice = human(stack, "alice")
    blue, green, red = (stack.register(n) for n in ("BlueLake", "GreenCastle", "RedPine"))
    a, b, g, r = (stack.client(x) for x in (alice, blue, green, red))
    for name, topic in (("#backend", "API and database"), ("#frontend", "the web app")):
        b.call("POST", "/rooms", body={"alias": name, "topic": topic})
    for c in (a, g, r):
        for name in ("#backend", "#frontend"):
            c.call("POST", "/join", body={"room": name})
    send(g, "#general", "Starting on the auth module")
    send(b, "#general", "anyone touching the API routes?")
    send(a, "#general", "@BlueLake I am on routes/users.py until 15:00")
    send(r, "#general", "[STATUS] running the test suite (2/5)")
    send(g, "#status", "[DONE] migrations 0042 applied")
    send(r, "#status", "[BLOCKED] waiting for a review of #231")
    send(b, "#alerts", "[ALERT] build failed on main: test_payments")
    root = send(g, "#backend", "which branch has the rate limiter?")
    send(b, "#backend", "the new index is in, queries down to 4 ms")
    for c, words in ((b, "feature/limits, not merged yet"), (r, "and it needs the redis bump")):
        c.call("PUT", f"/send/{secrets.token_hex(8)}", body={"reply_to": root, "body": words})
    send(r, "#backend", "@alice can you approve the deploy?")
    send(b, "@alice", "rebased on main, tests green")
    # Sessions, as their hooks report them: BlueLake's and GreenCastle's CLIs were shown the
    # line covering what is unread (presence: working; alice's messages: shown), GreenCastle
    # read #general (read). RedPine runs no session.
    for c, sid, cli in ((b, "s-blue", "claude"), (g, "s-green", "codex")):
        answer = c.call("GET", "/notify", query={"session": sid, "cli": cli, "repo": "shop"})
        covers = " ".join(f"{u['latest']}:{u['room_id']}" for u in answer["unread"])
        c.call(
            "POST",
            "/stages",
            body={"stage": "shown", "session": sid, "cli": cli, "covers": covers},
        )
    g.call("GET", "/messages", query={"room": "#general", "limit": 50})
    b.call(
        "POST",
        "/claims",
        body={"project": PROJECT, "patterns": ["src/api/**"], "reason": "auth refactor"},
    )
    g.call("POST", "/claims", body={"project": PROJECT, "patterns": ["src/auth/*.py"]})
    a.call(
        "POST", "/claims", body={"project": PROJECT, "patterns": ["docs/**"], "reason": "release"}
    )
    return alice


def screen_text(app: Any) -> str:
    """The screen as plain text (what a reader of the SVG sees)."""
    update = app.screen._compositor.render_full_update()
    return "\n".join("".join(strip.text for strip in line).rstrip() for line in update.strips)


async def shoot(
    env: dict[str, str], out: Path, size: tuple[int, int], text: bool = False
) -> list[Path]:
    from agent_chat.config import Settings
    from agent_chat.context import Context
    from agent_chat.tui.app import AgentChatApp
    from agent_chat.tui.composer import Composer
    from agent_chat.tui.session import Session

    saved: list[Path] = []
    app = AgentChatApp(Session(Context(False, Settings(env))), peek=True, project=PROJECT)

    def save(name: str) -> None:
        path = out / f"tui-{name}.svg"
        path.write_text(app.export_screenshot(title=f"ac tui: {name}"))
        saved.append(path)
        if text:
            path.with_suffix(".txt").write_text(screen_text(app) + "\n")

    async with app.run_test(size=size) as pilot:
        while not app.ready.is_set() or not app.timeline.messages:
            await pilot.pause(0.05)
        general = next(r.room_id for r in app.rooms.values() if r.label == "#general")
        await app.open_room(general)
        app.timeline.action_last()
        await pilot.pause(0.3)
        save("main")
        backend = next(r.room_id for r in app.rooms.values() if r.label == "#backend")
        await app.open_room(backend)
        app.focus_now(app.timeline)
        app.timeline.highlighted = next(
            i for i, m in enumerate(app.timeline.messages) if "rate limiter" in m["body"]
        )
        await pilot.press("t")
        while app.side != "thread":
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        save("thread")
        await pilot.press("escape", "a")
        while "BlueLake" not in str(app.query_one("#agents-list").options):
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        save("agents")
        await pilot.press("c")
        while not app.query_one("#claims-panel").claims:  # type: ignore[attr-defined]
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        save("claims")
        await pilot.press("escape", "m")
        await pilot.pause(0.5)
        save("mentions")
        await pilot.press("escape", "question_mark")
        await pilot.pause(0.5)
        save("help")
        await pilot.press("escape")
        composer = app.query_one(Composer)
        app.focus_now(composer)
        composer.insert("/search rate limiter")
        await pilot.press("enter")
        while len(app.screen_stack) == 1:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        save("search")
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--size", default="120x36", help="COLSxROWS (default 120x36)")
    parser.add_argument("--text", action="store_true", help="also write each screen as text")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ac-tui-shots-") as tmp:
        stack = Stack(Path(tmp) / "server")
        stack.start()
        try:
            alice = stage(stack)
            env = home_for(stack, alice, Path(tmp))
            os.environ.pop("AGENT_CHAT_NICK", None)
            saved = asyncio.run(shoot(env, args.out, (cols, rows), args.text))
        finally:
            stack.stop()
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
