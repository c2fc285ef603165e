"""The appservice process: database, homeserver client, HTTP server, start-up and shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from aiohttp import web

from agent_chat.wire import API_PREFIX

from . import db as tables
from . import metrics, presence
from .api import make_app
from .api.base import Context
from .catchup import catch_up
from .cluster import Leadership, WakeBus, migration_lock
from .config import Config
from .connections import ConnectionGuard, connection_cap, open_file_limit
from .gone_notice import GoneNotice
from .homeserver import Homeserver
from .identities import Identities
from .ingest import MemberRecord
from .invites import InvitePolicy
from .limits import Limits, RateLimiter, SharedRateLimiter
from .loop_guard import LoopGuard, SharedLoopGuard
from .retention import prune_forever
from .rooms import Rooms
from .transactions import TransactionEndpoint

log = logging.getLogger("agent_chat.service")


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


async def _keep_session(conn: object) -> None:
    """asyncpg's pool resets each connection it takes back (UNLISTEN, RESET ALL, advisory locks
    …): a query, so one more round trip at the end of every read and every transaction. No
    code here leaves session state on a pooled connection (the cluster's locks and LISTEN
    have connections of their own), and an open transaction is still rolled back by asyncpg
    itself."""


class AgentChatService:
    def __init__(self, config: Config) -> None:
        self.config = config
        # SQLite (WAL): one writer connection, so writes queue in-process instead of sleeping
        # in SQLite's busy handler, and a pool of readers that never wait for a write.
        # PostgreSQL: one pool for both.
        postgres = config.database.startswith(("postgres:", "postgresql:"))
        self.db = tables.create(
            config.database,
            upgrade_table=tables.upgrade_table,
            db_args=(
                {"min_size": 1, "max_size": 10, "reset": _keep_session}
                if postgres
                else {"min_size": 1}
            ),
        )
        self.read_db = (
            self.db if postgres else tables.create(config.database, db_args={"min_size": 3})
        )
        self.hs = Homeserver(config)
        self.rooms = Rooms(self.hs)
        self.identities = Identities(self.rooms)
        self.context = Context(
            config=config,
            hs=self.hs,
            rooms=self.rooms,
            identities=self.identities,
            send_limiter=(SharedRateLimiter if config.clustered else RateLimiter)(
                config.send_rate_per_second, config.send_rate_burst
            ),
            loop_guard=(SharedLoopGuard if config.clustered else LoopGuard)(
                config.loop_guard_answers_per_minute
            ),
        )
        self.invites = InvitePolicy(config.auto_join, config.server_name, self.identities.is_ours)
        self.transactions = TransactionEndpoint(
            self.db,
            config.hs_token,
            config.server_name,
            is_ours=self.identities.is_ours,
            on_invite=self._accept_invite,
            is_ready=lambda: self.context.ready,
            on_failure=self._transaction_failed,
            waiters=self.context.waiters,
            accepts=self.invites.accepts,
            on_applied=GoneNotice(
                self.hs,
                self.context.presence,
                self.identities.is_ours,
                self.context.background.spawn,
                config.gone_notice,
            ).applied,
        )
        self._kicking = False
        self.runner: web.AppRunner | None = None
        #: Clustered: the ledger writer's homeserver-facing server on ``transactions_port``.
        self.writer_runner: web.AppRunner | None = None
        self.context.waiters.per_identity = config.max_waits_per_identity
        self.context.limits = Limits.from_config(config)
        #: The API server's connections: capped below the open-file limit (set at start).
        self.connections = ConnectionGuard(
            connection_cap(1024, config.max_connections), config.header_timeout_seconds
        )
        self.background = self.context.background
        self.leadership = Leadership(config.database) if config.clustered else None
        self.bus = WakeBus(config.database, self.context.waiters.wake_here)
        #: Set when this process must end (it lost the ledger-writer lock): exit non-zero.
        self.failed = asyncio.Event()

    def build_app(self, transactions: bool = True, api: bool = True) -> web.Application:
        # Synapse may batch 100 events of up to 64 KiB each into one transaction.
        app = web.Application(
            client_max_size=128 * 1024 * 1024, middlewares=[self.connections.middleware]
        )
        if transactions:
            self.transactions.add_routes(app)
        app.router.add_get("/metrics", self._metrics)
        if api:
            app.add_subapp(API_PREFIX, make_app(self.context))
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self.config.metrics_public and not _is_loopback(request.remote):
            return web.json_response(
                {
                    "errcode": "M_FORBIDDEN",
                    "error": "metrics are served to loopback callers only"
                    " (set metrics_public: true in appservice.yaml)",
                },
                status=403,
            )
        return web.Response(text=metrics.render(), content_type="text/plain")

    async def start(self) -> None:
        tables.use_key(self.config.token_key)  # before the migrations: one seals tokens
        if self.config.clustered:
            async with migration_lock(self.config.database):  # replicas migrate once
                await self.db.start()
        else:
            await self.db.start()  # runs the migrations
        if self.read_db is not self.db:
            await self.read_db.start()
        tables.init(self.db, self.read_db)
        await self.hs.start()
        self.hs.user_tokens = await tables.Identity.matrix_tokens()
        # Serve before bootstrapping: room creation makes Synapse push transactions to us.
        clustered = self.config.clustered
        fd_limit = open_file_limit()
        self.connections.cap = connection_cap(fd_limit, self.config.max_connections)
        log.info(
            "open-file limit %d: serving at most %d connections", fd_limit, self.connections.cap
        )
        self.runner = web.AppRunner(
            self.build_app(transactions=not clustered),
            access_log=None,
            # Idle kept-alive connections, and slow headers of their next request, end here.
            keepalive_timeout=self.config.header_timeout_seconds,
        )
        await self.runner.setup()
        self._watch_connections(self.runner)
        await web.TCPSite(self.runner, self.config.host, self.config.port).start()
        log.info("listening on %s:%d", self.config.host, self.config.port)
        if self.config.tls_port is not None:
            from .tls import server_context

            tls_site = web.TCPSite(
                self.runner,
                self.config.tls_host,
                self.config.tls_port,
                ssl_context=server_context(self.config),
            )
            await tls_site.start()
            log.info("listening with TLS on %s:%d", self.config.tls_host, self.config.tls_port)
        await self._wait_for_homeserver()
        if self.leadership is None:
            await self._bootstrap()
            self._start_writing()
        else:
            await self._start_replica(self.leadership)
        self.context.presence.gone_after = self.config.presence_gone_after_seconds
        self.context.presence.publish = presence.matrix_publisher(self.hs)
        metrics.SESSIONS.read = lambda: dict(self.context.presence.counts)
        self.background.spawn(presence.refresh_loop(self.context.presence), loop=True)
        self.context.ready = True
        log.info("ready: %s%s", self.config.api_url, API_PREFIX)

    def _start_writing(self) -> None:
        """What only the ledger writer runs: the ping that flushes Synapse's queue, catch-up,
        the watch that catches up again after Synapse restarts, and pruning
        (``retention.py``)."""
        self.background.spawn(self._ping_homeserver(), loop=True)
        self.background.spawn(self._catch_up(), loop=True)
        self.background.spawn(self._watch_homeserver(), loop=True)
        self.background.spawn(prune_forever(), loop=True)

    async def _start_replica(self, leadership: Leadership) -> None:
        """Clustered: join the wake-up bus, then write the ledger now if no other process
        does, else serve the API and wait (in the background) to take over."""
        await self.bus.start()
        self.background.spawn(self._fail_when(self.bus.deaf), loop=True)
        self.context.waiters.publish = self.bus.publish
        self.context.is_writer = lambda: leadership.is_leader
        if await leadership.acquire(block=False):
            await self._become_writer()
            return
        log.info("another process writes the ledger: serving the API as a replica")
        self.rooms.default_room_ids = await self.rooms.await_default_rooms()
        self.background.spawn(self._take_over(leadership), loop=True)

    async def _take_over(self, leadership: Leadership) -> None:
        await leadership.acquire(block=True)
        log.info("took over as the ledger writer")
        try:
            await self._become_writer()
        except Exception:
            log.exception("could not start writing the ledger: stopping")
            self.failed.set()

    async def _become_writer(self, bind_for: float = 10.0) -> None:
        assert self.leadership is not None and self.config.transactions_port is not None
        # Another replica may be writing by now if the lock is lost: this one must stop.
        self.background.spawn(self._fail_when(self.leadership.lost), loop=True)
        self.writer_runner = web.AppRunner(self.build_app(api=False), access_log=None)
        await self.writer_runner.setup()
        port = self.config.transactions_port
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bind_for
        while True:  # a writer that lost its lock may hold the port for a moment yet
            try:
                await web.TCPSite(self.writer_runner, self.config.host, port).start()
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        log.info("writing the ledger; homeserver transactions on %s:%d", self.config.host, port)
        await self._bootstrap()
        self._start_writing()

    async def _fail_when(self, event: asyncio.Event) -> None:
        await event.wait()
        self.failed.set()

    async def stop(self) -> None:
        """Stop serving, finish the background work (bounded), then close the connections."""
        self.background.cancel_loops()
        for runner in (self.runner, self.writer_runner):
            if runner:
                await runner.cleanup()
        await self.background.drain()
        await self.bus.stop()
        if self.leadership is not None:
            await self.leadership.release()
        await self.hs.stop()
        if self.read_db is not self.db:
            await self.read_db.stop()
        await self.db.stop()

    async def _wait_for_homeserver(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.hs.versions_ok():
            if loop.time() > deadline:
                raise RuntimeError(f"homeserver {self.config.homeserver_url} did not answer")
            await asyncio.sleep(0.1)

    async def _bootstrap(self) -> None:
        await self.hs.register(self.config.bot_localpart)
        await self.hs.set_displayname(self.config.bot_mxid, self.config.bot_displayname)
        await self.rooms.ensure_default_rooms()

    async def _ping_homeserver(self, attempts: int = 20) -> None:
        """Synapse's ping flushes transactions it queued while we were down."""
        error: Exception | None = None
        for attempt in range(attempts):
            try:
                ms = await self.hs.ping()
                log.info("homeserver ping ok (%d ms)", ms)
                return
            except Exception as e:
                error = e
                log.debug("homeserver ping failed (%s), retrying", e)
                await asyncio.sleep(min(0.2 * 2**attempt, 5))
        log.warning(
            "homeserver ping failed %d times, giving up (last error: %s): what it queued "
            "while we were down arrives only when it retries on its own",
            attempts,
            error,
        )

    async def _catch_up(self) -> None:
        try:
            missed = await catch_up(
                self.hs, self.config.server_name, self.identities.is_ours, self.context.waiters
            )
            log.info("catch-up done: %d missed message(s) applied", missed)
        except Exception:
            log.exception("catch-up failed")

    async def _watch_homeserver(self, interval: float = 0.5) -> None:
        """Catch up whenever Synapse (or one of its workers) comes back after being
        unreachable (e.g. restarted): what was in its in-memory queue when it stopped is never
        pushed."""
        was_down = False
        while True:
            await asyncio.sleep(interval)
            up = await self.hs.all_up()
            if up and was_down:
                log.info("homeserver is back: catching up")
                await self._catch_up()
            was_down = not up

    def _watch_connections(self, runner: web.AppRunner) -> None:
        """Cap the server's connections and time out slow headers (``connections.py``), and
        end a long-poll waiter as soon as its caller hangs up: aiohttp tells its server of
        every lost connection (it does not cancel the handler, by default and on purpose)."""
        server = runner.server
        if server is None:
            return
        waiters = self.context.waiters
        metrics.NOTIFY_WAITERS.read = lambda: len(waiters)
        metrics.NOTIFY_WOKEN.read = lambda: waiters.woken
        metrics.NOTIFY_EVICTED.read = lambda: waiters.evicted
        self.connections.install(server, waiters.connection_lost)

    def _transaction_failed(self) -> None:
        if not self._kicking:
            self._kicking = True
            self.background.spawn(self._kick_homeserver(), loop=True)

    async def _kick_homeserver(self, window: float = 300.0) -> None:
        """After a failed transaction Synapse backs off exponentially (up to 512 s). Its ping
        makes it retry at once, so ping every couple of seconds until one is applied again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        try:
            while not self.transactions.healthy and loop.time() < deadline:
                await asyncio.sleep(2)
                try:
                    await self.hs.ping()
                except Exception as e:
                    log.debug("ping during recovery failed: %s", e)
        finally:
            self._kicking = False

    def _accept_invite(self, invite: MemberRecord) -> None:
        """An agent invited (e.g. to a DM by a human) joins by itself."""
        self.background.spawn(self._join_invited(invite))

    async def _join_invited(self, invite: MemberRecord) -> None:
        if invite.user_id != self.config.bot_mxid and not await tables.Identity.get(
            invite.user_id
        ):
            return
        if not self.invites.accepts(invite.sender):  # auto_join: declined, never joined
            await self.rooms.decline(invite.user_id, invite.room_id)
            log.info("%s declined %s's invitation (auto_join)", invite.user_id, invite.sender)
            return
        try:
            await self.rooms.join(invite.user_id, invite.room_id)
            # Joining shows the room's members: record who is already there (the DM's human).
            members = await self.hs.joined_members(invite.user_id, invite.room_id)
            async with tables.transaction() as conn:
                for user_id, name in members.items():
                    if user_id != invite.user_id:
                        await tables.Member.set(conn, invite.room_id, user_id, "join", name)
                        await tables.Ledger.on_join(conn, invite.room_id, user_id)
            log.info("%s accepted an invite to %s", invite.user_id, invite.room_id)
        except Exception as e:
            log.warning("%s could not join %s: %s", invite.user_id, invite.room_id, e)
