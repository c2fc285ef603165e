"""The homeserver-facing side: ``/_matrix/app/v1/*``, authenticated by the hs_token.

mautrix's own handler is not used: it runs handlers in the background, answers 200 even
when they fail, remembers txnIds only in memory, and accepts tokens in the query string.
Here a transaction's whole effect is committed in one database transaction before the 200;
any failure answers 500, and Synapse retries the same transaction later.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import hmac
import json
import logging
import time

from aiohttp import web
from mautrix.util.async_db import Connection, Database

from . import ingest, metrics
from .db import HSTransaction, Identity, run_transaction
from .waiters import Waiters

log = logging.getLogger("agent_chat.transactions")


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class TransactionEndpoint:
    def __init__(
        self,
        db: Database,
        hs_token: str,
        server_name: str,
        is_ours: Callable[[str], bool],
        on_invite: Callable[[ingest.MemberRecord], None],
        is_ready: Callable[[], bool],
        on_failure: Callable[[], None] = lambda: None,
        waiters: Waiters | None = None,
        accepts: Callable[[str], bool] = lambda _: True,
        on_applied: Callable[[list[ingest.Record]], None] = lambda _: None,
    ) -> None:
        self.db = db
        self.hs_token = hs_token.encode()
        self.server_name = server_name
        self.is_ours = is_ours
        self.on_invite = on_invite
        self.is_ready = is_ready
        self.on_failure = on_failure
        self.waiters = waiters
        #: Whether an invitation of ours from this inviter is taken (``auto_join``).
        self.accepts = accepts
        #: A committed transaction's records (``gone_notice.py``).
        self.on_applied = on_applied
        #: False after a transaction failed, until one is applied again.
        self.healthy = True

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", self.transaction)
        app.router.add_post("/_matrix/app/v1/ping", self.ping)
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self.query_user)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self.query_room)

    def _authorized(self, request: web.Request) -> bool:
        if "access_token" in request.query:
            return False  # the legacy query-string token leaks into logs: never accepted
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].encode(), self.hs_token)

    def _forbidden(self) -> web.Response:
        return _error(403, "M_FORBIDDEN", "missing or wrong hs_token in the Authorization header")

    async def ping(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._forbidden()
        if not self.is_ready():
            return _error(503, "AC_STARTING", "the appservice is still starting")
        return web.json_response({})

    async def query_user(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._forbidden()
        if await Identity.get(request.match_info["user_id"]):
            return web.json_response({})
        return _error(404, "M_NOT_FOUND", "no such agent")

    async def query_room(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._forbidden()
        return _error(404, "M_NOT_FOUND", "rooms are created through the Agent Chat API")

    async def transaction(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._forbidden()
        txn_id = request.match_info["txn_id"]
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "M_NOT_JSON", "the transaction body is not JSON")
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            return _error(400, "M_BAD_JSON", "the transaction has no 'events' list")
        ephemeral = data.get("ephemeral", data.get("de.sorunome.msc2409.ephemeral", []))
        records: list[ingest.Record] = []
        skipped = 0
        for raw in events:
            record = ingest.parse_event(raw, self.server_name)
            if record is None:
                skipped += raw_is_interesting(raw)
            else:
                records.append(record)
        for raw in ephemeral if isinstance(ephemeral, list) else []:
            records.extend(ingest.parse_receipts(raw))
        if skipped:
            metrics.MALFORMED.inc(amount=skipped)
            log.warning("transaction %s: skipped %d malformed event(s)", txn_id, skipped)
        # What identifies a transaction's contents: its events' ids (a retry re-serialises their
        # "age" fields) and its ephemeral data whole. Counting ephemeral events was not enough:
        # when Synapse reuses a txnId, one receipt-only transaction looked like another and a
        # human's read receipt was dropped as a repeat. Re-applying is harmless either way.
        ids = [e.get("event_id") if isinstance(e, dict) else None for e in events]
        contents = json.dumps([ids, ephemeral], sort_keys=True, default=str)
        digest = hashlib.sha256(contents.encode()).hexdigest()

        async def claim_and_apply(conn: Connection) -> ingest.Effects | None:
            if not await HSTransaction.claim(conn, txn_id, digest):
                return None
            return await ingest.apply(conn, records, self.is_ours, self.accepts)

        started = time.perf_counter()
        try:
            effects = await run_transaction(claim_and_apply, self.db)
            if effects is None:
                metrics.TRANSACTIONS.inc("duplicate")
                return web.json_response({})  # delivered again: applied already
        except Exception:
            metrics.TRANSACTIONS.inc("failed")
            log.exception("transaction %s not applied; the homeserver will retry it", txn_id)
            self.healthy = False
            self.on_failure()
            return _error(500, "M_UNKNOWN", "transaction not applied; retry later")
        self.healthy = True
        metrics.TRANSACTION_APPLY.observe(time.perf_counter() - started)
        metrics.TRANSACTIONS.inc("applied")
        metrics.LEDGER_UPDATES.inc(amount=effects.messages_counted)
        if self.waiters is not None:  # committed: long-poll waiters may read the change now
            try:
                await self.waiters.wake_changed(effects.rooms, effects.users)
            except Exception:  # applied all the same; waiters still answer at their timeout
                log.exception("transaction %s: waking long-poll waiters failed", txn_id)
        for invite in [*effects.invites, *effects.declined]:
            self.on_invite(invite)  # joins, or declines what the policy refuses
        self.on_applied(records)  # committed: people writing to a gone agent are told
        return web.json_response({})


def raw_is_interesting(raw: object) -> int:
    """Count a skipped event as malformed only if it claimed to be a message or membership."""
    if not isinstance(raw, dict):
        return 1
    return int(raw.get("type") in ("m.room.message", "m.room.member"))
