"""Calls to Synapse's client-server API, as the bot or as any user in our namespace.

A thin layer over mautrix's ``AppServiceAPI`` (HTTP, error mapping, ``?user_id=``
masquerading). IntentAPI is not used: its state-store caching makes extra requests and can
go stale, and the ledger already knows membership from the events Synapse pushes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
import asyncio
import hashlib
import logging

from mautrix.api import HTTPAPI, Method, Path
from mautrix.appservice import AppServiceAPI
from mautrix.client import ClientAPI
from mautrix.errors import MatrixRequestError, MatrixResponseError, MNotFound, MUserInUse
from mautrix.types import (
    EventID,
    EventType,
    RoomAlias,
    RoomCreatePreset,
    RoomDirectoryVisibility,
    RoomID,
    UserID,
)
import aiohttp

from .agent_tokens import DEVICE_ID, DEVICE_NAME, AgentTokens
from .config import Config
from .sessions import Sessions

log = logging.getLogger("agent_chat.homeserver")

#: Content key carrying a send's Matrix txn id (a hash: it reveals nothing of the client's).
TXN_MARKER = "chat.agent.txn"


def _text(resp: Any, key: str) -> str:
    """A string field of a homeserver's JSON answer, or MatrixResponseError."""
    value = resp.get(key) if isinstance(resp, dict) else None
    if not isinstance(value, str):
        raise MatrixResponseError(f"the homeserver's answer has no {key!r}")
    return value


T = TypeVar("T")

#: The room version of a direct chat with people on this server (``create_room``).
DIRECT_ROOM_VERSION = "12"


class Homeserver:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.api: AppServiceAPI | None = None
        #: Humans' own Matrix tokens (from `ac login`): we act for them with these.
        self.user_tokens: dict[str, str] = {}
        #: Clients of Synapse's generic workers (``homeserver_worker_urls``), for sends.
        self.worker_apis: list[AppServiceAPI] = []
        #: Whether humans' Matrix sessions still stand, as last asked (``sessions.py``).
        self.sessions = Sessions(self)
        #: Agents' own Matrix tokens, for createRoom outside the appservice's queue.
        self.agent_tokens = AgentTokens(self)

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.api = self._api(self.config.homeserver_url)
        self.worker_apis = [self._api(url) for url in self.config.homeserver_worker_urls]

    def _api(self, base_url: str) -> AppServiceAPI:
        return AppServiceAPI(
            base_url=base_url,
            bot_mxid=UserID(self.config.bot_mxid),
            token=self.config.as_token,
            # mautrix annotates a TraceLogger but calls only Logger methods on it; this one
            # may exist (levels set in __main__) before mautrix installs its logger class.
            log=logging.getLogger("agent_chat.matrix"),  # type: ignore[arg-type]
            # No IntentAPI, so no state store: mautrix defaults it to None but annotates the
            # parameter without Optional.
            state_store=None,  # type: ignore[arg-type]
            client_session=self.http,
        )

    @property
    def as_api(self) -> AppServiceAPI:
        """The appservice's API client (after ``start``)."""
        if self.api is None:
            raise RuntimeError("the homeserver client is not started")
        return self.api

    @property
    def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the homeserver client is not started")
        return self.session

    async def stop(self) -> None:
        if self.session:
            await self.session.close()

    def client(self, user_id: str | None = None, sending: bool = False) -> ClientAPI:
        """A ClientAPI acting as ``user_id`` (the bot when None); ``sending``: through the
        user's own Synapse worker, when there are workers."""
        base = self.worker_api(user_id or self.config.bot_mxid) if sending else self.as_api
        if user_id is None or user_id == self.config.bot_mxid:
            return ClientAPI(UserID(self.config.bot_mxid), api=base)
        mxid = UserID(user_id)
        token = self.user_tokens.get(user_id)
        if token is not None:
            return ClientAPI(mxid, api=base.real_user(mxid, token))
        return ClientAPI(mxid, api=base.user(mxid))

    def worker_api(self, user_id: str) -> AppServiceAPI:
        """The Synapse process ``user_id``'s sends go to: always the same one (a hash every
        replica computes alike), since Synapse deduplicates a txnId inside one process only.
        Main when there are no workers."""
        if not self.worker_apis:
            return self.as_api
        digest = hashlib.sha256(user_id.encode()).digest()
        return self.worker_apis[int.from_bytes(digest[:8], "big") % len(self.worker_apis)]

    async def password_login(self, user: str, password: str) -> tuple[str, str]:
        """A Matrix password login; returns (user_id, access_token)."""
        # A plain client without the as_token: this is the human's own login.
        anonymous = HTTPAPI(base_url=self.config.homeserver_url, client_session=self.http)
        resp = await anonymous.request(
            Method.POST,
            Path.v3.login,
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "initial_device_display_name": "ac (Agent Chat)",
            },
            sensitive=True,
        )
        return _text(resp, "user_id"), _text(resp, "access_token")

    async def appservice_login(self, user_id: str, device_id: str, device_name: str) -> str:
        """A new access token of ``user_id`` (in our namespace) for ``device_id``, from an
        ``m.login.application_service`` login with the as_token."""
        resp = await self.as_api.request(
            Method.POST,
            Path.v3.login,
            {
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": user_id},
                "device_id": device_id,
                "initial_device_display_name": device_name,
            },
        )
        return _text(resp, "access_token")

    async def as_own(self, user_id: str | None, request: Callable[[ClientAPI], Awaitable[T]]) -> T:
        """``request`` made with ``user_id``'s own token (``agent_tokens.py``), so a membership
        change in it does not queue behind the appservice's others; masqueraded when the user
        has none, when the homeserver no longer knows it, or when it rate-limits the user
        (the appservice is not rate-limited: the API's own limits are the brake). Only for
        requests that a refusal leaves undone, so making them again is safe."""
        token = await self.agent_tokens.token(user_id) if user_id else None
        if user_id is None or token is None:
            return await request(self.client(user_id))
        mxid = UserID(user_id)
        try:
            return await request(ClientAPI(mxid, api=self.as_api.real_user(mxid, token)))
        except MatrixRequestError as e:
            if e.errcode == "M_UNKNOWN_TOKEN":
                await self.agent_tokens.forget(user_id, token)
            elif e.errcode != "M_LIMIT_EXCEEDED":
                raise
        return await request(self.client(user_id))

    async def whoami(self, token: str) -> str:
        """The user a Matrix access token belongs to (raises if it is not valid)."""
        api = self.as_api.real_user(UserID("@unknown:" + self.config.server_name), token)
        resp = await api.request(Method.GET, Path.v3.account.whoami)
        return _text(resp, "user_id")

    async def logout(self, token: str) -> None:
        """End the Matrix session of this access token (one ended already is no error)."""
        api = self.as_api.real_user(UserID("@unknown:" + self.config.server_name), token)
        try:
            await api.request(Method.POST, Path.v3.logout, {})
        except MatrixRequestError as e:
            log.info("the Matrix session was not logged out: %s", e)

    async def versions_ok(self) -> bool:
        try:
            await self.as_api.request(Method.GET, Path.versions)
            return True
        except Exception:
            return False

    async def all_up(self) -> bool:
        """Synapse's main process and every worker of ``homeserver_worker_urls`` answer.

        A worker that restarted loses what it held in memory, among it (for the one that
        sends the appservice's transactions) events not pushed yet: whoever watches this
        catches up when it is true again."""
        apis = [self.as_api, *self.worker_apis]
        answers = await asyncio.gather(
            *(api.request(Method.GET, Path.versions) for api in apis), return_exceptions=True
        )
        return not any(isinstance(a, BaseException) for a in answers)

    async def ping(self) -> int:
        """Ask Synapse to ping us: proves both directions work and flushes a queued backlog.

        With workers, asked of the first of ``homeserver_worker_urls`` (generic1, which sends
        the transactions): its scheduler holds the retry backoff that the ping cuts short;
        main's has nothing to retry."""
        api = self.worker_apis[0] if self.worker_apis else self.as_api
        resp = await api.request(
            Method.POST, Path.v1.appservice[self.config.appservice_id].ping, content={}
        )
        return int(resp.get("duration_ms", -1))

    async def register(self, localpart: str) -> bool:
        """Register a user in our namespace. False if it existed already. An agent's or
        bot's own Matrix token comes with it (``agent_tokens.py``): no login is needed later;
        the appservice's own bot needs none."""
        body: dict[str, Any] = {"type": "m.login.application_service", "username": localpart}
        if localpart == self.config.bot_localpart:
            body["inhibit_login"] = True
        else:
            body.update(device_id=DEVICE_ID, initial_device_display_name=DEVICE_NAME)
        try:
            resp = await self.as_api.request(Method.POST, Path.v3.register, body)
        except MUserInUse:
            return False
        token = resp.get("access_token") if isinstance(resp, dict) else None
        user_id = resp.get("user_id") if isinstance(resp, dict) else None
        if isinstance(token, str) and isinstance(user_id, str):
            self.agent_tokens.registered(user_id, token)
        return True

    async def set_displayname(self, user_id: str, name: str) -> None:
        await self.client(user_id).set_displayname(name, check_current=False)

    async def join(self, user_id: str, room: str) -> str:
        return await self.client(user_id).join_room(RoomID(room), max_retries=0)

    async def leave(self, user_id: str, room_id: str) -> None:
        await self.client(user_id).leave_room(RoomID(room_id))

    async def invite(self, inviter: str | None, room_id: str, user_id: str) -> None:
        await self.client(inviter).invite_user(RoomID(room_id), UserID(user_id))

    async def invite_direct(self, inviter: str, room_id: str, user_id: str) -> None:
        """Invite to a direct chat: the member event carries ``is_direct`` (what createRoom's
        invitees get), so the invitee's client shows a direct message."""
        path = Path.v3.rooms[room_id].state[EventType.ROOM_MEMBER.t][user_id]
        content = {"membership": "invite", "is_direct": True}
        await self.client(inviter).api.request(Method.PUT, path, content)

    async def forget(self, user_id: str, room_id: str) -> None:
        await self.client(user_id).forget_room(RoomID(room_id))

    async def user_exists(self, user_id: str) -> bool:
        """Whether the homeserver knows ``user_id`` (their profile answers; 404 is nobody,
        which Synapse answers as M_NOT_FOUND or, for a local user, M_UNKNOWN)."""
        try:
            await self.as_api.request(Method.GET, Path.v3.profile[user_id])
        except MatrixRequestError as e:
            if e.http_status == 404:
                return False
            raise
        return True

    async def search(self, user_id: str, body: dict[str, Any], next_batch: str | None) -> Any:
        """Synapse's server-side search (``POST /search``) as ``user_id``: Synapse itself
        answers only from rooms that user may see."""
        query = {"next_batch": next_batch} if next_batch else None
        api = self.client(user_id).api
        return await api.request(Method.POST, Path.v3.search, body, query_params=query)

    async def create_room(
        self,
        creator: str | None,
        *,
        alias_localpart: str | None = None,
        name: str | None = None,
        topic: str | None = None,
        public: bool = True,
        invitees: list[str] | None = None,
        is_direct: bool = False,
    ) -> str:
        invited = invitees or []
        direct: dict[str, Any] = {}
        if is_direct and invited:
            # A direct chat's invitations go in with the room's first state events, as the
            # trusted preset would make them (each invitee an additional creator, the invite
            # marked is_direct): Synapse writes them in the same batch, where `invite` costs
            # one more event write after the batch, behind a per-room lock. Room version 12
            # (Synapse's default) makes additional creators what the preset's invitees are;
            # named, so a server set to an older default builds the same room.
            direct = {
                "room_version": DIRECT_ROOM_VERSION,
                "creation_content": {"additional_creators": invited},
                "initial_state": [
                    {
                        "type": "m.room.member",
                        "state_key": user_id,
                        "content": {"membership": "invite", "is_direct": True},
                    }
                    for user_id in invited
                ],
            }
            invited = []
        room_id = await self.as_own(
            creator,
            lambda client: client.create_room(
                alias_localpart=alias_localpart,
                visibility=(
                    RoomDirectoryVisibility.PUBLIC if public else RoomDirectoryVisibility.PRIVATE
                ),
                preset=RoomCreatePreset.PUBLIC if public else RoomCreatePreset.TRUSTED_PRIVATE,
                name=name,
                topic=topic,
                invitees=[UserID(u) for u in invited],
                is_direct=is_direct,
                **direct,
            ),
        )
        return str(room_id)

    async def resolve_alias(self, alias: str) -> str:
        info = await self.client().resolve_room_alias(RoomAlias(alias))
        return info.room_id

    async def joined_members(self, user_id: str, room_id: str) -> dict[str, str | None]:
        members = await self.client(user_id).get_joined_members(RoomID(room_id))
        return {mxid: m.displayname for mxid, m in members.items()}

    @staticmethod
    def matrix_txn(user_id: str, client_txn: str) -> str:
        return hashlib.sha256(f"{user_id}\x00{client_txn}".encode()).hexdigest()[:40]

    async def send(
        self, user_id: str, room_id: str, content: dict[str, Any], client_txn: str
    ) -> str:
        """Send as ``user_id``. The Matrix txnId is derived from the client's, so Synapse
        answers a concurrent or repeated request with the first event instead of posting again;
        the same id is written into the content, so a send can be found again later."""
        txn = self.matrix_txn(user_id, client_txn)
        content = {**content, TXN_MARKER: txn}
        # What ClientAPI.send_message_event does, minus its typing: it wants mautrix's event
        # content classes, and this content is plain JSON.
        path = Path.v3.rooms[room_id].send[EventType.ROOM_MESSAGE.t][txn]
        resp = await self.client(user_id, sending=True).api.request(Method.PUT, path, content)
        return _text(resp, "event_id")

    async def find_sent(self, user_id: str, room_id: str, client_txn: str) -> str | None:
        """The event a send with this client txn id produced, if the room's recent timeline
        has it (used when an earlier attempt's outcome is unknown)."""
        txn = self.matrix_txn(user_id, client_txn)
        resp = await self.client(user_id).api.request(
            Method.GET,
            Path.v3.rooms[room_id].messages,
            query_params={"dir": "b", "limit": "100"},
        )
        for event in resp.get("chunk") or []:
            if not isinstance(event, dict) or event.get("sender") != user_id:
                continue
            content, event_id = event.get("content"), event.get("event_id")
            if isinstance(content, dict) and content.get(TXN_MARKER) == txn:
                return event_id if isinstance(event_id, str) else None
        return None

    async def add_direct(self, user_id: str, other: str, room_id: str) -> None:
        """Add ``room_id`` to ``user_id``'s ``m.direct`` account data under ``other``."""
        api = self.client(user_id).api
        path = Path.v3.user[user_id].account_data["m.direct"]
        try:
            found = await api.request(Method.GET, path)
        except MNotFound:
            found = None
        direct: dict[str, Any] = found if isinstance(found, dict) else {}
        rooms = direct.get(other)
        rooms = [r for r in rooms if isinstance(r, str)] if isinstance(rooms, list) else []
        if room_id in rooms:
            return
        direct[other] = [*rooms, room_id]
        await api.request(Method.PUT, path, direct)

    async def read_receipt(self, user_id: str, room_id: str, event_id: str) -> None:
        await self.client(user_id).send_receipt(RoomID(room_id), EventID(event_id))
