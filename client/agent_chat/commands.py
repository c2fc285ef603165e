"""What each ``ac`` command does (its arguments are declared in :mod:`agent_chat.cli_table`;
the environment it runs in is :mod:`agent_chat.context`)."""

from __future__ import annotations

import os
import sys
import time

from . import http, render
from . import identity as ident
from .api import log
from .config import (
    CONFIG_KEYS,
    Settings,
    check_config_value,
    normalize_server_url,
    save_config,
    valid_server_url,
)
from .context import Context, out, point_hook_at, use_color
from .errors import (
    AcError,
    ApiError,
    AuthError,
    ConfigFileError,
    NetworkError,
    UsageError,
    target_not_found,
)
from .http import ConnectionFailed
from .safe_text import one_line
from .targets import argv_text, normalize_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import Client
    from .identity import Identity
    from .shapes import JSONObject, UnreadCount, UnreadEntry

NOTIFY_TIMEOUT = 5.0


# --- notify ----------------------------------------------------------------------------------


def notify(ctx: Context, fmt: str) -> int:
    """Unread counts. ``fmt`` is ``json``, ``oneline`` or ``words``."""
    answer = ctx.authed(NOTIFY_TIMEOUT).call("GET", "/notify")
    entries = render.unread_entries(answer)
    line = render.notify_oneline(entries)
    if fmt == "json":
        text = render.notify_json(entries)
    elif fmt == "oneline":
        text = line
    else:
        text = "\n".join(render.notify_lines(entries))
    if text:
        out(text)
    elif fmt == "oneline":
        out("")
    unread: dict[str, UnreadCount] = {
        room: {"count": count, "urgent": urgent} for room, count, urgent in entries
    }
    from .state import write_caches  # here: `ac send` never needs it

    write_caches(ctx.settings, ctx.cache_key(), unread_line=line, unread=unread)
    return 0


def notify_graceful(argv_flags: list[str], *, verbose: bool) -> int:
    """``ac notify``: on any error print nothing and exit 0 (unless ``--verbose``)."""
    fmt = "words"
    if "--json" in argv_flags:
        fmt = "json"
    elif "--oneline" in argv_flags:
        fmt = "oneline"
    if not verbose:
        try:
            return notify(Context(False), fmt)
        except BrokenPipeError:
            raise
        except Exception:  # the contract: a hook's `ac notify` never fails the agent
            return 0
    return notify(Context(True), fmt)


# --- send ------------------------------------------------------------------------------------


def send(
    ctx: Context,
    target: str,
    words: list[str],
    *,
    notice: bool = False,
    as_json: bool = False,
    wait: str | None = None,
    timeout: float | None = None,
    for_nicks: list[str] | None = None,
) -> int:
    """``ac send TARGET MESSAGE...`` (``-``: the message from stdin); ``wait``: then wait
    until the recipients (``for_nicks``) reach that stage (:mod:`agent_chat.receipts`)."""
    target = normalize_target(target)
    if wait is None and (timeout is not None or for_nicks):
        raise UsageError("--timeout and --for go with --wait shown|woken|read")
    if wait is not None:
        from .receipts import check_stage

        check_stage(wait)
    if words == ["-"]:
        try:
            data = sys.stdin.buffer.read()
        except (OSError, ValueError) as e:
            raise AcError(f"cannot read the message from stdin: {e}") from None
        body = data.decode("utf-8", errors="replace")
        if body.endswith("\n"):
            body = body[:-2] if body.endswith("\r\n") else body[:-1]
    else:
        body = argv_text(" ".join(words))
    if not body.strip():
        raise UsageError("empty message: nothing to send")
    client = ctx.authed()
    if wait is not None and for_nicks:
        from .receipts import check_recipients

        check_recipients(client, target, for_nicks)  # before sending: nothing half-done
    txn_id = os.urandom(16).hex()
    payload: dict[str, object] = {"to": target, "body": body}
    if notice:
        payload["notice"] = True
    path = "/send/" + txn_id
    try:
        answer = _put_retrying(ctx, client, path, payload)
    except ApiError as e:
        if e.status == 404:
            raise target_not_found(e, target) from None
        if e.status == 413:  # the server says its limit in bytes of UTF-8, with our size
            size = "" if "UTF-8" in e.message else f"{len(body.encode()):,} bytes of UTF-8: "
            raise AcError(f"message too long: {size}{e.message}", detail=e.detail) from None
        raise
    if "recipient_presence" in answer:  # a DM to an agent: will it see this soon?
        from .presence import send_note

        note = send_note(answer["recipient_presence"])
        if note:
            sys.stderr.write(f"ac: {note}\n")
    if not as_json:
        out(f"sent to {one_line(answer.get('room') or target)}")
    if wait is not None:
        from .receipts import after_send

        return after_send(
            client, answer, wait, 300.0 if timeout is None else timeout, for_nicks, as_json
        )
    if as_json:
        out(render.dumps(answer))
    return 0


# --- listen ----------------------------------------------------------------------------------


#: How long ``ac send`` keeps retrying a broken connection (a link cut, a reset), always with
#: the same transaction id: the server posts it once however many attempts reach it.
SEND_RETRY_SECONDS = 30.0


def _put_retrying(
    ctx: Context, client: Client, path: str, payload: dict[str, object]
) -> JSONObject:
    """PUT ``path``, again with back-off while the connection breaks mid-way (not when it is
    refused: nothing listens, the server is down, say so at once)."""
    end = time.monotonic() + SEND_RETRY_SECONDS
    pause = 0.25
    while True:
        try:
            return client.call("PUT", path, body=payload)
        except ConnectionFailed as e:
            if e.kind not in ("timeout", "reset", "protocol") or time.monotonic() + pause > end:
                raise
            if ctx.verbose:
                log(f"send: {e.kind}; retrying with the same transaction id ({path})")
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


def listen(
    ctx: Context,
    target: str | None,
    *,
    last: int,
    unread: bool,
    as_json: bool,
    follow: bool,
    peek: bool,
    thread: str | None = None,
) -> int:
    """``ac listen [TARGET]``: recent (or unread) messages, then new ones with ``--follow``;
    ``thread``: one thread, its root and replies."""
    room = normalize_target(target) if target else None
    if thread is not None and not thread.startswith("$"):
        raise UsageError("--thread takes a message's event id ($..., from 'ac listen --json')")
    client = ctx.authed()
    color = not as_json and use_color()
    mark_read = None if not peek else False

    def show(messages: list[JSONObject]) -> None:
        for msg in messages:
            out(render.message_json(msg) if as_json else render.message_line(msg, color))
        sys.stdout.flush()

    unread_left: list[UnreadEntry] = []

    def fetch(**query: object) -> list[JSONObject]:
        try:
            answer = client.call(
                "GET",
                "/messages",
                # --json: your own messages carry their recipients' delivery stages
                query={"room": room, "thread": thread, "stages": as_json or None, **query},
            )
        except ApiError as e:
            if e.status == 404 and thread:
                raise AcError(
                    f"no such thread: {one_line(thread)} ({e.message})", detail=e.detail
                ) from None
            if e.status == 404 and room:
                raise target_not_found(e, room) from None
            raise
        unread_left[:] = render.unread_entries({"unread": answer.get("unread")})
        return _objects(answer.get("messages"))

    messages = fetch(limit=last, unread=True if unread else None, mark_read=mark_read)
    show(messages)
    if unread_left:  # never clear what was not shown: say what is still waiting
        note = render.still_unread(unread_left, room)
        if as_json:
            sys.stderr.write(note + "\n")
        else:
            out(note)
    last_event = _event_id(messages)
    if last_event is not None:
        from .state import write_caches

        write_caches(ctx.settings, ctx.cache_key(), last_event=last_event)
    if not follow:
        if not messages and not as_json:
            out("(no unread messages)" if unread else "(no messages)")
        return 0
    if last_event is None:
        last_event = _event_id(fetch(limit=1, mark_read=False))
    from . import wait  # not at the top: `ac notify` imports this module

    failing = False
    cursor: str | None = None  # the first long-poll answers at once: catch up, then hold
    try:
        while True:
            try:
                # Held by the server until a message (or a read) changes our counts.
                cursor = wait.next_change(client, cursor)
                messages = fetch(limit=100, since=last_event, mark_read=mark_read)
            except NetworkError as e:
                if not failing:
                    sys.stderr.write(f"ac: {e.message}; still trying\n")
                failing = True
                time.sleep(2.0)
                continue
            if failing:
                sys.stderr.write("ac: connection back\n")
                failing = False
            if messages:
                show(messages)
                last_event = _event_id(messages) or last_event
    except KeyboardInterrupt:
        return 0


def _objects(value: object) -> list[JSONObject]:
    """The JSON objects in a list from the server (anything else dropped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _event_id(messages: list[JSONObject]) -> str | None:
    """The last message's event id, if it has one."""
    event_id = messages[-1].get("event_id") if messages else None
    return event_id if isinstance(event_id, str) else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- who, channels, status -------------------------------------------------------------------


def who(ctx: Context, target: str, *, as_json: bool) -> int:
    """``ac who ROOM``: the members, their kind and last activity."""
    room = normalize_target(target)
    try:
        answer = ctx.authed().call("GET", "/who", query={"room": room})
    except ApiError as e:
        if e.status == 404:
            raise target_not_found(e, room, "room") from None
        raise
    if as_json:
        out(render.dumps(answer))
        return 0
    members = _objects(answer.get("members"))
    out(f"{one_line(answer.get('room') or room)}: {_plural(len(members), 'member')}")
    rows = [
        (
            render.sender_label(m.get("user_id"), m.get("display_name")),
            one_line(m.get("kind") or "?"),
            one_line(m.get("user_id") or ""),
            render.ago(m.get("last_active")),
        )
        for m in members
    ]
    width = max([len(r[0]) for r in rows] + [4])
    from .presence import describe

    for (name, kind, user_id, ago), m in zip(rows, members, strict=True):
        active = "never active" if ago == "never" else "active " + ago
        sessions = describe(m.get("presence"))
        out(f"  {name:<{width}}  {kind:<5}  {user_id}  ({active})")
        if sessions:
            out(f"  {'':<{width}}  {sessions}")
    return 0


def channels(ctx: Context, *, as_json: bool) -> int:
    """``ac channels``: the rooms we are in (and are invited to), with counts and topics."""
    answer = ctx.authed().call("GET", "/channels")
    if as_json:
        out(render.dumps(answer))
        return 0
    rooms = _objects(answer.get("channels"))
    if not rooms:
        out("(no rooms)")
        return 0
    names = [one_line(r.get("room") or r.get("room_id") or "?") for r in rooms]
    width = max(len(n) for n in names)
    for name, r in zip(names, rooms, strict=False):
        members = render.as_count(r.get("members"))
        unread = render.as_count(r.get("unread"))
        facts = ["direct" if r.get("direct") else _plural(members, "member")]
        if unread:
            facts.append(f"{unread} unread")
        if r.get("invited") is True:
            facts.append(f"invited: ac join {name}")
        topic = one_line(r.get("topic") or "")
        out(f"{name:<{width}}  ({', '.join(facts)}){'  ' + topic if topic else ''}".rstrip())
    return 0


def status(ctx: Context, *, as_json: bool) -> int:
    """``ac status``: the server's health and whose our token is (exit 2 when the homeserver
    is down, 3 when the token is rejected)."""
    s = ctx.settings
    report: dict[str, object] = {"server": s.server_url, "server_source": s.server_source}
    client = ctx.client(timeout=NOTIFY_TIMEOUT)
    try:
        health = client.call("GET", "/health", auth=False)
    except (NetworkError, ApiError) as e:
        report["health"] = {"ok": False, "error": e.message}
        if as_json:
            out(render.dumps(report))
        else:
            out(f"server:   {s.server_url} ({e.message})")
        raise
    report["health"] = health
    homeserver = health.get("homeserver")
    found = ctx.current_identity()
    who_line = "not registered yet (the first command that needs one registers it)"
    code = 0
    if found is not None:
        try:
            me = ctx.client(found.token, NOTIFY_TIMEOUT).call("GET", "/whoami")
            report["identity"] = me
            who_line = (
                f"{one_line(me.get('nick') or '?')} ({one_line(me.get('user_id') or '?')}, "
                f"{one_line(me.get('kind') or '?')})"
            )
            if found.source == "AGENT_CHAT_TOKEN":
                who_line += " from AGENT_CHAT_TOKEN"
        except AuthError as e:
            report["identity"] = {"error": e.message}
            from .whoami import rejected

            who_line = f"token rejected: {rejected(s, found)}"
            code = 3
    else:
        report["identity"] = None
    if as_json:
        out(render.dumps(report))
    else:
        parts = [one_line(health.get("status", "ok"))]
        if homeserver is not None:
            parts.append(f"homeserver {'ok' if homeserver else 'DOWN'}")
        if health.get("server_name"):
            parts.append(f"server name {one_line(health['server_name'])}")
        if health.get("version"):
            parts.append(f"version {one_line(health['version'])}")
        out(f"server:   {s.server_url} ({', '.join(parts)})")
        out(f"identity: {who_line}")
    if code == 0 and homeserver is False:
        return 2
    return code


# --- config, register, login, create-room, join ----------------------------------------------


def config(ctx: Context, assignments: list[str], *, as_json: bool) -> int:
    """``ac config [--set KEY=VALUE]...``: show the settings (after changing them)."""
    s = ctx.settings
    if assignments:
        data = dict(s.config)
        for item in assignments:
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or key not in CONFIG_KEYS:
                raise UsageError(
                    f"bad --set {item!r}: use server=URL, registration_token=TOKEN, nick=NAME,"
                    " ca_fingerprint=SHA256, ca_file=PATH or allow_insecure_http=true"
                )
            table, name = CONFIG_KEYS[key]
            value = check_config_value(name, value.strip())
            if name == "url" and value:
                value = normalize_server_url(value)
                if not valid_server_url(value):
                    raise UsageError(
                        f"bad server URL {value!r}: use http://host:port or https://..."
                    )
            current = data.get(table)
            section = dict(current) if isinstance(current, dict) else {}
            if value:
                section[name] = value
            else:
                section.pop(name, None)
            data[table] = section
        save_config(s.home, data)
        ctx.settings = s = Settings()
        if not as_json:
            out(f"saved {s.path('config.toml')}")
    from . import whoami

    found = None
    error = None
    try:
        found = ctx.current_identity()
    except (ConfigFileError, OSError) as e:  # a broken credentials file must not hide the rest
        error = str(e)
    nick_source = "AGENT_CHAT_NICK" if s.env_nick else "config.toml" if s.config_nick else None
    source = whoami.source(s)
    files = _identity_files(s)
    report = {
        "home": s.home,
        "server": s.server_url,
        "server_source": s.server_source,
        "registration_token": bool(s.registration_token),
        "nick": s.nick,
        "nick_source": nick_source,
        "identity": None
        if found is None
        else {"token": "AGENT_CHAT_TOKEN", "source": source}
        if s.env_token
        else {"nick": found.nick, "user_id": found.user_id, "kind": found.kind, "source": source},
        "identity_source": source,
        "files": files,
        "unread_line": files["unread_line"],
        "relay": _relay_state(s),
    }
    if as_json:
        out(render.dumps(report))
        return 0
    out(f"home:               {s.home}")
    out(f"server:             {s.server_url} ({s.server_source})")
    out(f"registration_token: {'set (hidden)' if s.registration_token else 'not set'}")
    if error:
        out(f"identity:           unreadable credentials: {one_line(error)}")
    else:
        out(f"identity:           {whoami.identity_line(s, None if s.env_token else found)}")
        out(f"  because:          {whoami.why(s)}")
    if s.nick:
        out(f"nick:               {one_line(s.nick)} ({nick_source})")
    elif found is not None and not s.env_token:
        out("nick:               not set (this home's default identity is used)")
    elif not s.env_token:
        out("nick:               not set (the first command registers a name the server picks)")
    for label, key in (("unread line", "unread_line"), ("hook credentials", "hook_credentials")):
        path = files[key]
        if path is None:
            path = "none (AGENT_CHAT_TOKEN: no files)"
        elif not os.path.exists(path):
            path += " (not written yet)"
        out(f"{label + ':':<20}{path}")
    out(f"connection keeper:  {report['relay']}")
    return 0


def _relay_state(s: Settings) -> str:
    """The connection keeper for this server in words (:mod:`agent_chat.relay`)."""
    try:
        scheme, host, port, _base = http.split_url(s.server_url)
    except ValueError:
        return "not used (no valid server URL)"
    if http.is_loopback(host):
        return "not used (the server is on this machine)"
    path = http.relay_socket(scheme, host, port)
    if path is None:
        return "none (relay=false or AGENT_CHAT_RELAY=off, AGENT_CHAT_TOKEN, or no CA pinned yet)"
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return path + " (starts with the next command)"
    return path + " (running)"


def _identity_files(s: Settings) -> dict[str, str | None]:
    """The files ``ac`` writes for the identity in use, by the rules that write them."""
    if s.env_token:
        return {"unread_line": None, "hook_credentials": None}
    from .hook_files import curl_path
    from .state import unread_line_path

    return {
        "unread_line": unread_line_path(s),
        "hook_credentials": curl_path(s),
    }


def register(ctx: Context, name: str | None, *, make_default: bool = False) -> int:
    """``ac register [NAME]``: NAME is exactly the name asked for. Held by this home already:
    say so (exit 0); else the server registers exactly NAME or refuses (taken: exit 1)."""
    s = ctx.settings
    if s.env_token:
        raise _env_token_refusal(ctx)
    name = (name or s.env_nick or "").strip() or None
    if name and name.startswith("@"):
        name = name[1:]
    with ident.CredentialsLock(s.home):
        data = ident.load_credentials(s.home)
        before = ident.default_key(data, s.server_url)
        key = None
        if name:
            existing = ident.stored_identity(data, s.server_url, name)
            if existing is not None and ident.nick_key(existing.nick or "") == ident.nick_key(
                name
            ):
                if _token_works(ctx, existing.token):
                    if make_default:
                        ident.set_default(data, s.server_url, existing.key)
                        ident.save_credentials(s.home, data)
                        point_hook_at(s, ident.stored_identity(data, s.server_url, s.nick))
                    out(
                        "already registered: {} ({})".format(
                            one_line(existing.nick or name), one_line(existing.user_id or "?")
                        )
                    )
                    _say_default(s, data, before, existing)
                    return 0
                key = existing.key  # its token is rejected: register the name again
        answer = ident.register_request(ctx.client(), s, name, exact=bool(name))
        if key is None:
            key = ident.nick_key(name or str(answer["nick"]))
            ident.free_key(data, s.server_url, key)
        found = ident.store_identity(data, s.server_url, key, answer, make_default=make_default)
        ident.save_credentials(s.home, data)
        point_hook_at(s, ident.stored_identity(data, s.server_url, s.nick))
    out(
        f"registered {one_line(found.nick or '?')} ({one_line(found.user_id or '?')})"
        + _joined(answer)
    )
    _say_default(s, data, before, found)
    return 0


def _joined(answer: JSONObject) -> str:
    """``; joined #a #b`` for the rooms a /register or /login answer says we joined."""
    rooms = answer.get("rooms")
    if isinstance(rooms, list) and rooms:
        return "; joined " + " ".join(one_line(r) for r in rooms)
    return ""


_ENV_TOKEN_STORES_NOTHING = (
    "AGENT_CHAT_TOKEN is set: its token is the identity (an agent's or a bot's), so nothing "
    "would be stored; unset AGENT_CHAT_TOKEN to register or log in"
)


def _env_token_refusal(ctx: Context) -> UsageError:
    """``ac register``/``ac login`` with AGENT_CHAT_TOKEN set: refused, saying whose it is."""
    try:
        me = ctx.client(ctx.settings.env_token, NOTIFY_TIMEOUT).call("GET", "/whoami")
    except AcError:
        me = None
    if me is not None and me.get("kind") == "bot":
        return UsageError(
            f"AGENT_CHAT_TOKEN is the bot {one_line(me.get('nick'))}'s token: bots cannot register"
            " or log in; unset AGENT_CHAT_TOKEN to register an agent or log in"
        )
    return UsageError(_ENV_TOKEN_STORES_NOTHING)


def _token_works(ctx: Context, token: str) -> bool:
    """Whether the server still accepts a stored token (not known offline: assume it does)."""
    try:
        ctx.client(token, NOTIFY_TIMEOUT).call("GET", "/whoami")
    except AuthError:
        return False
    except AcError:
        return True
    return True


def _say_default(s: Settings, data: JSONObject, before: str | None, stored: Identity) -> None:
    """After storing ``stored``: say whether it is this home's default identity now."""
    after = ident.default_key(data, s.server_url)
    name = one_line(stored.nick or stored.key or "?")
    if after == stored.key and before not in (None, after):
        sys.stdout.flush()
        sys.stderr.write(
            f"ac: {name} is now this home's default identity: commands without "
            "AGENT_CHAT_NICK use it\n"
        )
    elif after != stored.key and after is not None:
        default = ident.stored_identity(data, s.server_url)
        kept = one_line(default.nick if default and default.nick else after)
        out(
            f"the default identity stays {kept}; use {name} with AGENT_CHAT_NICK={name}, "
            "or make it the default with --default"
        )


def logout(ctx: Context) -> int:
    """``ac logout``: the server revokes this identity's token (a human's last one also ends
    the Matrix session ``ac login`` opened), then it is removed from this home. With
    AGENT_CHAT_TOKEN, that token is revoked and no file is touched."""
    s = ctx.settings
    found = ctx.current_identity()
    if found is None:
        raise UsageError(f"no identity is stored here for {s.server_url}: nothing to log out")
    try:
        ctx.client(found.token).call("POST", "/logout")
    except AuthError:
        pass  # revoked already: it is forgotten here all the same
    if not s.env_token and found.key is not None:
        with ident.CredentialsLock(s.home):
            data = ident.load_credentials(s.home)
            ident.forget_identity(data, s.server_url, found.key)
            ident.save_credentials(s.home, data)
            point_hook_at(s, ident.stored_identity(data, s.server_url, None))
    out(f"logged out {one_line(found.label())} ({one_line(found.user_id or '?')})")
    return 0


def login(ctx: Context, name: str, *, make_default: bool = False) -> int:
    s = ctx.settings
    if s.env_token:
        raise _env_token_refusal(ctx)
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"Password for {name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("empty password")
    try:
        answer = ctx.client().call(
            "POST", "/login", body={"user": name, "password": password}, auth=False
        )
    except ApiError as e:
        if e.status in (404, 405) or e.errcode == "M_UNRECOGNIZED":
            raise AcError(
                f"{s.server_url} does not support password login (POST /login)", detail=e.detail
            ) from None
        if e.status == 403:
            raise AuthError(f"login failed: {e.message}", detail=e.detail) from None
        raise
    if not isinstance(answer.get("token"), str):
        raise AcError("the server's /login answer has no token")
    answer.setdefault("nick", name)
    answer.setdefault("kind", "human")
    with ident.CredentialsLock(s.home):
        data = ident.load_credentials(s.home)
        before = ident.default_key(data, s.server_url)
        ident.free_key(data, s.server_url, ident.nick_key(name))
        found = ident.store_identity(
            data, s.server_url, ident.nick_key(name), answer, make_default=make_default
        )
        ident.save_credentials(s.home, data)
        point_hook_at(s, ident.stored_identity(data, s.server_url, s.nick))
    out(
        f"logged in as {one_line(found.nick or name)} ({one_line(found.user_id or '?')})"
        + _joined(answer)
    )
    _say_default(s, data, before, found)
    return 0


def create_room(ctx: Context, name: str, *, topic: str | None) -> int:
    """``ac create-room '#name' [--topic TEXT]``."""
    alias = normalize_target(name, "room name")
    if not alias.startswith("#"):
        raise UsageError("a room name starts with #, e.g. '#builds'")
    body: dict[str, object] = {"alias": alias}
    if topic:
        body["topic"] = topic
    try:
        answer = ctx.authed().call("POST", "/rooms", body=body)
    except ApiError as e:
        if e.status == 409:
            raise AcError(f"room {one_line(alias)} already exists", detail=e.detail) from None
        raise
    room_id = one_line(answer.get("room_id") or "?")
    out(f"created {one_line(answer.get('room') or alias)} ({room_id})")
    return 0


def join(ctx: Context, name: str) -> int:
    """``ac join '#room'``."""
    room = normalize_target(name, "room")
    try:
        answer = ctx.authed().call("POST", "/join", body={"room": room})
    except ApiError as e:
        if e.status == 404:
            raise AcError(f"no such room: {one_line(room)}", detail=e.detail) from None
        raise
    out(f"joined {one_line(answer.get('room') or room)}")
    return 0
