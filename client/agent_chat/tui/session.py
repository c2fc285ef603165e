"""The TUI's side of the API: blocking calls through the same client ``ac`` uses.

Everything here runs on worker threads (never on Textual's event loop) and imports nothing of
Textual, so it can be tested and benchmarked alone. Identity and settings are resolved exactly
as ``ac`` commands resolve them (:class:`agent_chat.commands.Context`), except that the TUI
never registers a new identity: a person watching runs as someone already stored.
"""

from __future__ import annotations

import os
import threading

from .. import identity as ident
from .. import wait as longpoll
from ..api import Client
from ..ask import post
from ..config import Settings
from ..context import Context
from ..errors import ApiError, AuthError
from ..safe_text import one_line
from ..wire import AGENT_LOCALPART_PREFIX, MAX_MESSAGE_BYTES, SERVICE_LOCALPART

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject

#: Messages fetched per page when catching up on everything new.
PAGE = 100
#: The body limit of ``PUT /send`` (bytes of UTF-8); ``agent`` localparts' prefix.
MAX_BODY = MAX_MESSAGE_BYTES
AGENT_PREFIX = AGENT_LOCALPART_PREFIX


def objects(value: object) -> list[JSONObject]:
    """The JSON objects of a list from the server (anything else dropped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def open_context(nick: str | None) -> Context:
    """The ``ac`` context for ``--nick`` (or the identity a plain ``ac`` command would use).

    Raises:
        AuthError: no identity is stored for the server (what to run is in the message).
    """
    env = dict(os.environ)
    if nick:
        env["AGENT_CHAT_NICK"] = nick
    ctx = Context(False, Settings(env))
    found = ctx.current_identity()
    if found is None:
        where = ctx.settings.server_url
        if nick:
            raise AuthError(
                f"no identity {one_line(nick)!r} is stored for {where}: 'ac whoami' lists the "
                f"stored ones; log in with 'ac login {one_line(nick)}' (a human) or register "
                f"with 'ac register {one_line(nick)}' (an agent)"
            )
        raise AuthError(
            f"no identity is stored for {where}: log in with 'ac login NAME' (a human), or "
            "run as a stored agent with --nick NAME ('ac whoami' lists them)"
        )
    return ctx


class Session:
    """One identity on one server: the calls the TUI makes, each blocking."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        found = ctx.current_identity()
        assert found is not None  # open_context checked
        self.identity: ident.Identity = found
        self.client: Client = ctx.authed()
        self.user_id: str = found.user_id or ""
        self.nick: str = found.nick or found.key or ""
        self.kind: str = found.kind or ""
        #: The newest message seen across every room (``/messages?since=``).
        self.last_event: str | None = None
        #: The newest message seen per room, and the ids :meth:`fetch_room` returned that the
        #: feed (:meth:`fetch_new`) has not passed yet (it skips them).
        self.room_last: dict[str, str] = {}
        self._ahead: set[str] = set()
        self._feed = threading.Lock()

    @property
    def server_url(self) -> str:
        return self.settings.server_url

    def poll_client(self) -> Client:
        """A second client for the long-poll (its timeout is the poll's own)."""
        client = Client(self.server_url, self.identity.token)
        client.on_rejected = self.ctx.rejected
        return client

    # --- who we are, where we are ---------------------------------------------------------

    def whoami(self) -> JSONObject:
        me = self.client.call("GET", "/whoami")
        self.user_id = text_of(me.get("user_id")) or self.user_id
        self.nick = text_of(me.get("nick")) or self.nick
        self.kind = text_of(me.get("kind")) or self.kind
        return me

    def channels(self) -> list[JSONObject]:
        return objects(self.client.call("GET", "/channels").get("channels"))

    def notify(self, cursor: str | None = None, wait: float = 0.0) -> JSONObject:
        """``/notify`` (long-polled with ``cursor``), as ``ac wait`` asks it."""
        return longpoll.poll(self.client, cursor, wait)

    # --- messages --------------------------------------------------------------------------

    def _messages(self, **query: object) -> JSONObject:
        return self.client.call("GET", "/messages", query={"mark_read": False, **query})

    def recent(self, room_id: str, limit: int) -> list[JSONObject]:
        """The room's newest ``limit`` messages, oldest first; marks nothing read."""
        return objects(
            self._messages(room=room_id, limit=max(1, min(limit, 1000))).get("messages")
        )

    def unread(self, room_id: str) -> list[JSONObject]:
        """The room's unread messages (from others), oldest first; marks nothing read."""
        answer = self._messages(room=room_id, unread=True, limit=1000)
        return objects(answer.get("messages"))

    def after(self, room_id: str, event_id: str, limit: int = 1000) -> list[JSONObject]:
        """The room's messages after ``event_id``, oldest first; marks nothing read."""
        answer = self._messages(room=room_id, since=event_id, limit=limit)
        return objects(answer.get("messages"))

    def thread(self, event_id: str) -> list[JSONObject]:
        """A thread: its root and replies (reading a thread never marks read)."""
        return objects(self._messages(thread=event_id, limit=1000).get("messages"))

    def start_feed(self) -> None:
        """Remember the newest message now: :meth:`fetch_new` returns what comes after it."""
        with self._feed:
            found = objects(self._messages(limit=1).get("messages"))
            event = found[-1].get("event_id") if found else None
            self.last_event = event if isinstance(event, str) else None
            self._note(found)

    def fetch_new(self) -> list[JSONObject]:
        """Every message in any room since the last call, oldest first; marks nothing read.

        Called by the long-poll thread after each change and by the UI after a send (our own
        messages do not change our counts, so the long-poll does not wake for them).
        """
        with self._feed:
            found: list[JSONObject] = []
            while True:
                query: dict[str, object] = {"limit": PAGE}
                if self.last_event is not None:
                    query["since"] = self.last_event
                try:
                    page = objects(self._messages(**query).get("messages"))
                except ApiError as e:
                    if e.status != 404 or self.last_event is None:
                        raise
                    self.last_event = None  # we left that room: start from the newest
                    page = objects(self._messages(limit=1).get("messages"))
                    event = page[-1].get("event_id") if page else None
                    self.last_event = event if isinstance(event, str) else None
                    return found
                event = page[-1].get("event_id") if page else None
                if isinstance(event, str):
                    self.last_event = event
                self._note(page)
                found.extend(m for m in page if m.get("event_id") not in self._ahead)
                if len(page) < PAGE or self.last_event is None:
                    self._ahead.clear()  # the feed has caught up with them
                    return found

    def _note(self, page: list[JSONObject]) -> None:
        for m in page:
            room_id, event_id = m.get("room_id"), m.get("event_id")
            if isinstance(room_id, str) and isinstance(event_id, str):
                self.room_last[room_id] = event_id

    def fetch_room(self, room_id: str) -> list[JSONObject] | None:
        """What is new in one room (when only it changed: a much smaller request than the
        feed's, which reads every room); None when :meth:`fetch_new` must do it (the room's
        newest message is not known, or there are many, or the feed is far behind)."""
        with self._feed:
            since = self.room_last.get(room_id)
            if since is None or len(self._ahead) >= PAGE:
                return None
            try:
                answer = self._messages(room=room_id, since=since, limit=PAGE)
            except ApiError:
                return None
            page = objects(answer.get("messages"))
            if len(page) >= PAGE:
                return None
            self._note(page)
            fresh = [m for m in page if m.get("event_id") not in self._ahead]
            self._ahead.update(text_of(m.get("event_id")) for m in fresh)
            return fresh

    def mark_read(self, room_id: str, anchor: str | None, count: int) -> JSONObject:
        """Mark read exactly ``count`` messages shown on screen: those after ``anchor`` (the
        message before the first unread one), or, without an anchor, the first ``count``
        unread ones. The server never moves a marker past a message it did not return."""
        query: dict[str, object] = {"room": room_id, "mark_read": True, "limit": count}
        if anchor is not None:
            query["since"] = anchor
        else:
            query["unread"] = True
        return self.client.call("GET", "/messages", query=query)

    def send(self, body: str, to: str | None = None, reply_to: str | None = None) -> JSONObject:
        """One message (a thread reply with ``reply_to``); never posted twice (one txn id)."""
        payload: dict[str, object] = {"body": body}
        if to is not None:
            payload["to"] = to
        if reply_to is not None:
            payload["reply_to"] = reply_to
        return post(self.client, payload)

    def search(self, query: str, room: str | None = None, limit: int = 50) -> list[JSONObject]:
        params: dict[str, object] = {"q": query, "limit": limit}
        if room:
            params["room"] = room
        return objects(self.client.call("GET", "/search", query=params).get("results"))

    def who(self, room: str) -> list[JSONObject]:
        return objects(self.client.call("GET", "/who", query={"room": room}).get("members"))

    def presence(self, user_ids: list[str]) -> list[JSONObject]:
        """``GET /presence``: the sessions of up to 100 identities (what ``ac who`` shows)."""
        users = ",".join(user_ids[:100])
        answer = self.client.call("GET", "/presence", query={"users": users})
        return objects(answer.get("identities"))

    def receipts(self, event_id: str) -> JSONObject:
        """``GET /receipts?event=``: what became of one of our messages, per recipient."""
        from ..receipts import fetch

        return fetch(self.client, {"event": event_id})

    def receipts_wait(self, client: Client, event_id: str, stage: str, hold: float) -> JSONObject:
        """The same, held by the server until every recipient reached ``stage`` (or ``hold``
        seconds passed): one long-poll, woken by the recipients' own progress."""
        from ..receipts import fetch

        return fetch(client, {"event": event_id}, stage, hold)

    def join(self, room: str) -> JSONObject:
        return self.client.call("POST", "/join", body={"room": room})

    # --- claims (the same requests as ac claim / claims / release) -------------------------

    def claims(self, project: str | None) -> tuple[str, list[JSONObject]]:
        from ..claims import find_claims

        return find_claims(self.ctx, [], False, project)

    def claim(
        self, patterns: list[str], ttl: int, reason: str | None, shared: bool, project: str | None
    ) -> tuple[str, JSONObject]:
        from ..claims import ClaimRequest, request_claim

        request = ClaimRequest(patterns, ttl=ttl, reason=reason, shared=shared, project=project)
        return request_claim(self.ctx, request)

    def release(
        self, patterns: list[str], everything: bool, project: str | None
    ) -> tuple[str, list[JSONObject]]:
        from ..claims import request_release

        return request_release(self.ctx, patterns, everything, project)


def sender_kind(user_id: object) -> str:
    """``service``, ``agent`` or ``human``, from the Matrix id alone (never the display name:
    anyone can call themselves an agent's nick or the service's name)."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return "human"
    localpart = user_id[1:].partition(":")[0]
    if localpart == SERVICE_LOCALPART:
        return "service"
    return "agent" if localpart.startswith(AGENT_PREFIX) else "human"
