"""Rate limits beside the send limiter: room creation, registration, login and webhooks.

Each is a token bucket (``api.base.RateLimiter``; in the database when several appservice
processes share the ledger) under a key naming what is limited:

=================  =========================  =======================================
limit              key                        default
=================  =========================  =======================================
room creation      the caller's user id       10, then 2 a minute
registration       the client's address       60, then 60 a minute
login, per account the account's localpart    5 failed attempts, then 1 a minute
login, per address the client's address       30 attempts, then 60 a minute
webhook posts      the hook                   10, then 60 a minute
=================  =========================  =======================================

A successful login gives its token back: only failures (guesses) count against an account.
The login limits are ours because Synapse sees every login through the appservice from one
address, so its own per-address bucket (``rc_login.address``: 10 a second, 100 at once) is
shared by every caller: one client address, held to one attempt a second, cannot empty it.

The client's address is the TCP peer's, unless that peer is one of ``trusted_proxies``: then
the right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (what the
nearest untrusted hop told the proxy). From any other peer the header is ignored, so a client
cannot pick the bucket it is counted in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import ipaddress
import time

from aiohttp import web

from .config import Config
from .db import SendRate
from .errors import ErrorAnswer, seconds_up
from .recent import RecentMap

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Callers remembered at most, per cache: beyond this the least recent are forgotten.
CALLERS_CAP = 100_000

#: Login: failed attempts per account (a burst, then one a minute).
LOGIN_ACCOUNT_BURST, LOGIN_ACCOUNT_PER_MINUTE = 5, 1.0
#: Login: attempts per client address, whichever account.
LOGIN_ADDRESS_BURST, LOGIN_ADDRESS_PER_MINUTE = 30, 60.0


class RateLimiter:
    """A token bucket per caller.

    A bucket left alone long enough to refill is forgotten (a new one is the same), and at
    most ``cap`` are kept: memory does not grow with every caller ever seen.
    """

    def __init__(
        self,
        per_second: float,
        burst: int,
        cap: int = CALLERS_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        refill = burst / per_second if per_second > 0 else float("inf")
        self._buckets: RecentMap[str, float] = RecentMap(refill, cap, clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str) -> int | None:
        """None when allowed, else milliseconds until the next request would be."""
        now = self._buckets.clock()
        tokens, last = self._buckets.get(key) or (float(self.burst), now)
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        if tokens < 1:
            self._buckets.set(key, tokens)
            return int((1 - tokens) / self.per_second * 1000) + 1
        self._buckets.set(key, tokens - 1)
        return None

    async def take(self, key: str) -> int | None:
        """:meth:`check`, as the shared limiter answers it."""
        return self.check(key)

    async def refund(self, key: str) -> None:
        """Give back the token a request took, when only failures should count (a login
        that succeeded): taken first, so concurrent attempts cannot all pass a check."""
        found = self._buckets.get(key)
        if found is not None:
            self._buckets.set(key, min(float(self.burst), found[0] + 1))


class SharedRateLimiter:
    """The same buckets in the database, for appservice replicas: a caller whose requests
    are spread over several processes gets one limit, not one per process."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst

    async def take(self, key: str) -> int | None:
        """None when allowed, else milliseconds until the next request would be."""
        if self.per_second <= 0:
            return None
        return await SendRate.take(key, self.burst, self.per_second)

    async def refund(self, key: str) -> None:
        await SendRate.refund(key, self.burst)


Limiter = RateLimiter | SharedRateLimiter


def networks(proxies: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(p, strict=False) for p in proxies]


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    """Who is calling: the peer, or what a trusted proxy says the peer of it was."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = peer[0] if isinstance(peer, tuple) and peer else str(peer or "unknown")
    if not trusted or not _trusted(address, trusted):
        return address
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address  # garbage from beyond the proxy: count it as the proxy's
    return address


@dataclass
class Limits:
    """The limiters, built from the config (``Context.limits``)."""

    rooms: Limiter
    registrations: Limiter
    login_accounts: Limiter
    login_addresses: Limiter
    webhooks: Limiter
    trusted_proxies: list[Network]

    @classmethod
    def default(cls) -> Limits:
        """The defaults of an empty config (for a Context built without one)."""
        return cls.from_config(Config("", "", "", "", "", ""))

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        kind: type[RateLimiter] | type[SharedRateLimiter]
        kind = SharedRateLimiter if config.clustered else RateLimiter

        def make(burst: int, per_minute: float) -> Limiter:
            return kind(per_minute / 60.0, burst)

        return cls(
            rooms=make(config.room_create_burst, config.room_create_per_minute),
            registrations=make(config.register_burst, config.register_per_minute),
            login_accounts=make(LOGIN_ACCOUNT_BURST, LOGIN_ACCOUNT_PER_MINUTE),
            login_addresses=make(LOGIN_ADDRESS_BURST, LOGIN_ADDRESS_PER_MINUTE),
            webhooks=make(config.webhook_burst, config.webhook_per_minute),
            trusted_proxies=networks(config.trusted_proxies),
        )

    def client(self, request: web.Request) -> str:
        return client_address(request, self.trusted_proxies)


async def enforce(limiter: Limiter, key: str, what: str) -> None:
    """Take a token for ``key`` or refuse with 429, saying what was limited and when to retry."""
    wait_ms = await limiter.take(key)
    if wait_ms is not None:
        seconds = seconds_up(wait_ms)
        raise ErrorAnswer(
            429,
            "M_LIMIT_EXCEEDED",
            f"too many {what} (at most {limiter.burst}, then {limiter.per_second * 60:g} a "
            f"minute); try again in {seconds} s",
            wait_ms,
        )
