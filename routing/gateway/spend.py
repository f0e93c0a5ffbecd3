"""Spend caps in the gateway: a request is admitted only if the most it can cost still fits
under every monthly limit that applies to it, counting what other requests have reserved:
the organization's (the staff's hard cap, or on the free plan what its credits cover), its
API key's budget and its route's budget.

Money here is integer micro-dollars. The month's spend as rated from the database comes
with the organization's snapshot (refreshed every few seconds). Between refreshes, and
until the ingester has written a finished request's usage, the ledger holds:
- reservations of requests in flight (their most possible charge), and
- the real charges of requests settled in the last SETTLED_WINDOW_S seconds.
A settled charge can be counted twice for a moment (in the window and already in the
database): that errs towards refusing early, never towards overspending.

Each reservation is a lease, named by its request and ending by itself after the lease
time (SWITCHBOARD_SPEND_LEASE_SECONDS, 900 by default): a gateway killed with requests in
flight leaves reservations that free themselves within that bound, while other gateways
keep serving. (A request longer than its lease stops counting as reserved when the lease
ends; its charge still counts when it settles.)

With REDIS_URL the ledger is one Lua script per admission on Redis (atomic across gateway
processes, on Redis's clock); on the embedded default it lives in the one gateway process,
whose reservations die with it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

MICROS = Decimal(1_000_000)
SETTLED_WINDOW_S = 10  # longer than a snapshot's age plus the ingester's delay


@dataclass(frozen=True, slots=True)
class Cap:
    """One monthly limit: the organization's, one API key's budget or one route's."""

    scope: str  # names its ledger entries: the organization's id, "key:<id>" or "route:<id>"
    limit_micros: int
    spent_micros: int  # this month, rated from the database
    refusal: str  # the 402 message: what the limit is and who can lift it
    code: str = "spend_limit_reached"


@dataclass(frozen=True, slots=True)
class SpendPolicy:
    """An organization's monthly limits and prices, as of its snapshot."""

    organization: Cap | None
    keys: dict[str, Cap]  # key id -> its budget, for the keys that have one
    routes: dict[str, Cap] = field(default_factory=dict)  # route name -> its budget, for the routes that have one

    def caps_for(self, key_id: str, route: str = "") -> list[Cap]:
        """The organization's limit, the key's budget and the route's budget, those that exist."""
        caps = [self.organization] if self.organization is not None else []
        caps += [self.keys[key_id]] if key_id in self.keys else []
        return caps + ([self.routes[route]] if route in self.routes else [])


def to_micros(amount: Decimal, *, up: bool = False) -> int:
    micros = amount * MICROS
    return math.ceil(micros) if up else int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge(input_tokens: int, output_tokens: int, charged_per_mtok: tuple[Decimal, Decimal] | None) -> Decimal:
    """What a request is charged at a provider target's charged prices (routing.pricing.
    TokenPrices: the price book's price for the model served, else the provider's cost
    with the markup); a dedicated deployment's requests (None) are billed as GPU time."""
    if charged_per_mtok is None:
        return Decimal(0)
    return (input_tokens * charged_per_mtok[0] + output_tokens * charged_per_mtok[1]) / MICROS


class SpendLedger(Protocol):
    async def reserve(self, caps: list[Cap], micros: int, *, lease: str) -> Cap | None:
        """Holds `micros` under every cap, or under none: returns the cap that refused."""
        ...

    async def settle(self, scopes: list[str], lease: str, actual: int) -> None: ...


class MemorySpendLedger:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._leases: dict[tuple[str, str], int] = {}
        self._settled: dict[str, deque[tuple[float, int]]] = {}

    def _recent(self, scope: str) -> int:
        settled = self._settled.setdefault(scope, deque())
        horizon = time.monotonic() - SETTLED_WINDOW_S
        while settled and settled[0][0] < horizon:
            settled.popleft()
        return sum(amount for _, amount in settled)

    async def reserve(self, caps: list[Cap], micros: int, *, lease: str) -> Cap | None:
        for cap in caps:
            committed = cap.spent_micros + self._inflight.get(cap.scope, 0) + self._recent(cap.scope)
            if committed >= cap.limit_micros or committed + micros > cap.limit_micros:
                return cap
        for cap in caps:
            self._inflight[cap.scope] = self._inflight.get(cap.scope, 0) + micros
            self._leases[(cap.scope, lease)] = micros
        return None

    async def settle(self, scopes: list[str], lease: str, actual: int) -> None:
        for scope in scopes:
            self._inflight[scope] = self._inflight.get(scope, 0) - self._leases.pop((scope, lease), 0)
            if actual:
                self._settled.setdefault(scope, deque()).append((time.monotonic(), actual))


# For each of N caps, KEYS holds 3 lease keys (the leases: a sorted set of lease -> end in
# ms; each lease's micros: a hash; their total) and then the settled charges of the
# window's seconds (W keys). ARGV: N, W, micros, lease, lease ms, then limit and spent for
# each cap. Expired leases are freed first, on Redis's clock. Returns 0 when held under
# every cap, else the number (1-based) of the cap that refused; then nothing is held.
_RESERVE = """
local n, w, micros, lease, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stride = 3 + w
for c = 0, n - 1 do
  local base = c * stride
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[base + 1], '-inf', now)) do
    redis.call('DECRBY', KEYS[base + 3], tonumber(redis.call('HGET', KEYS[base + 2], id) or '0'))
    redis.call('HDEL', KEYS[base + 2], id)
    redis.call('ZREM', KEYS[base + 1], id)
  end
  local committed = tonumber(ARGV[7 + 2 * c]) + tonumber(redis.call('GET', KEYS[base + 3]) or '0')
  for i = base + 4, base + stride do committed = committed + tonumber(redis.call('GET', KEYS[i]) or '0') end
  local limit = tonumber(ARGV[6 + 2 * c])
  if committed >= limit or committed + micros > limit then return c + 1 end
end
for c = 0, n - 1 do
  local base = c * stride
  redis.call('ZADD', KEYS[base + 1], now + lease_ms, lease)
  redis.call('HSET', KEYS[base + 2], lease, micros)
  redis.call('INCRBY', KEYS[base + 3], micros)
  for i = base + 1, base + 3 do redis.call('PEXPIRE', KEYS[i], lease_ms * 2) end
end
return 0
"""
# KEYS: the three lease keys of one cap; ARGV: the lease. A lease already expired frees nothing twice.
_RELEASE = """
local micros = redis.call('HGET', KEYS[2], ARGV[1])
if micros then
  redis.call('DECRBY', KEYS[3], tonumber(micros))
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


class RedisSpendLedger:
    def __init__(self, url: str, *, lease_s: float) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self._reserve = self._redis.register_script(_RESERVE)
        self._release = self._redis.register_script(_RELEASE)
        self._lease_ms = int(lease_s * 1000)

    @staticmethod
    def _lease_keys(scope: str) -> list[str]:
        return [f"sb:spend:{scope}:leases", f"sb:spend:{scope}:lease-micros", f"sb:spend:{scope}:inflight"]

    async def reserve(self, caps: list[Cap], micros: int, *, lease: str) -> Cap | None:
        # The settled window uses this host's clock: only its keys are summed, and a second
        # of skew between gateway hosts shifts it by a second.
        now = int(time.time())
        seconds = range(now - SETTLED_WINDOW_S, now + 1)
        keys = [key for cap in caps for key in [*self._lease_keys(cap.scope), *(f"sb:spend:{cap.scope}:settled:{s}" for s in seconds)]]
        args: list[int | str] = [len(caps), len(seconds), micros, lease, self._lease_ms]
        for cap in caps:
            args += [cap.limit_micros, cap.spent_micros]
        refused = int(await self._reserve(keys=keys, args=args))
        return caps[refused - 1] if refused else None

    async def settle(self, scopes: list[str], lease: str, actual: int) -> None:
        for scope in scopes:
            await self._release(keys=self._lease_keys(scope), args=[lease])
        if actual:
            second = int(time.time())
            pipe = self._redis.pipeline()
            for scope in scopes:
                settled = f"sb:spend:{scope}:settled:{second}"
                pipe.incrby(settled, actual)
                pipe.expire(settled, SETTLED_WINDOW_S + 5)
            await pipe.execute()
