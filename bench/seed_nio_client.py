"""The seed's design of ``ac``, as a baseline for bench_client.py: matrix-nio with a stored token.

The original spec implements ``ac`` with matrix-nio: each command builds an ``AsyncClient`` from
a stored access token; ``notify`` does an incremental ``/sync`` (``timeout=0``, ``since`` the
stored sync token) and counts ``unread_notifications`` per room; ``send`` resolves the alias
(cached in the state file) and calls ``room_send``; ``listen`` calls ``room_messages``.
It uses argparse rather than the seed's Typer, which only makes the baseline faster.

State file (JSON, ``--state PATH``): homeserver, user_id, access_token, sync_token, room_aliases.

    python seed_nio_client.py --state S notify --oneline
    python seed_nio_client.py --state S send '#general' 'text'
    python seed_nio_client.py --state S listen '#general' --last 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from nio import AsyncClient, AsyncClientConfig, RoomResolveAliasResponse


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def save(path: str, state: dict) -> None:
    with open(path, "w") as f:
        json.dump(state, f)


def make_client(state: dict) -> AsyncClient:
    config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False)
    client = AsyncClient(state["homeserver"], state["user_id"], config=config)
    client.access_token = state["access_token"]
    client.user_id = state["user_id"]
    return client


async def room_id(client: AsyncClient, state: dict, target: str) -> str:
    if target.startswith("!"):
        return target
    aliases = state.setdefault("room_aliases", {})
    if target in aliases:
        return aliases[target]
    alias = target if ":" in target else f"{target}:{state['server_name']}"
    resp = await client.room_resolve_alias(alias)
    if not isinstance(resp, RoomResolveAliasResponse):
        raise SystemExit(f"error: cannot resolve {target}: {resp}")
    aliases[target] = resp.room_id
    return resp.room_id


async def notify(state: dict, path: str, oneline: bool) -> None:
    client = make_client(state)
    try:
        resp = await client.sync(timeout=0, since=state.get("sync_token"))
        parts = []
        for rid, info in getattr(getattr(resp, "rooms", None), "join", {}).items():
            count = info.unread_notifications.notification_count or 0
            if count:
                parts.append(f"{rid}({count})")
        if getattr(resp, "next_batch", None):
            state["sync_token"] = resp.next_batch
            save(path, state)
        print(" ".join(parts) if oneline else "\n".join(parts))
    finally:
        await client.close()


async def send(state: dict, path: str, target: str, text: str) -> None:
    client = make_client(state)
    try:
        rid = await room_id(client, state, target)
        resp = await client.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": text})
        if not hasattr(resp, "event_id"):
            raise SystemExit(f"error: {resp}")
        save(path, state)
    finally:
        await client.close()


async def listen(state: dict, path: str, target: str, last: int) -> None:
    client = make_client(state)
    try:
        rid = await room_id(client, state, target)
        resp = await client.room_messages(rid, start="", limit=last)
        for event in reversed(getattr(resp, "chunk", [])):
            if hasattr(event, "body"):
                print(f"{event.server_timestamp} {target} {event.sender}: {event.body}")
        save(path, state)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="seed-ac")
    parser.add_argument("--state", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("notify")
    p.add_argument("--oneline", action="store_true")
    p = sub.add_parser("send")
    p.add_argument("target")
    p.add_argument("text")
    p = sub.add_parser("listen")
    p.add_argument("target")
    p.add_argument("--last", type=int, default=10)
    args = parser.parse_args()
    state = load(args.state)
    if args.command == "notify":
        coro = notify(state, args.state, args.oneline)
    elif args.command == "send":
        coro = send(state, args.state, args.target, args.text)
    else:
        coro = listen(state, args.state, args.target, args.last)
    asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
