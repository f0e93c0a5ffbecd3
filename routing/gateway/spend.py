"""Spend caps in the gateway: a request is admitted only if the most it can cost still fits
under the organization's monthly limit (the staff's hard cap, or on the free plan what
its credits cover), counting what other requests have reserved.

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
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

MICROS = Decimal(1_000_000)
SETTLED_WINDOW_S = 10  # longer than a snapshot's age plus the ingester's delay


@dataclass(frozen=True, slots=True)
class SpendPolicy:
    """An organization's monthly limit and prices, as of its snapshot."""

    limit_micros: int
    spent_micros: int  # this month, rated from the database
    reason: str  # what the limit is, for the 402 message
    model_prices: dict[str, tuple[Decimal, Decimal]]  # model -> input, output per million tokens
    markup: Decimal  # external providers' cost multiplier
    lifted_by: str = "platform staff can raise the limit"  # who can lift it, for the 402 message


def to_micros(amount: Decimal, *, up: bool = False) -> int:
    micros = amount * MICROS
    return math.ceil(micros) if up else int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge(
    policy: SpendPolicy, model: str, input_tokens: int, output_tokens: int, provider_prices: tuple[Decimal, Decimal] | None
) -> Decimal:
    """What a request is charged: at the model's price-book price, else an external
    provider's cost with the markup; a dedicated deployment's requests are billed as GPU
    time instead, so 0 here."""
    prices = policy.model_prices.get(model)
    if prices is not None:
        return (input_tokens * prices[0] + output_tokens * prices[1]) / MICROS
    if provider_prices is not None:
        return (input_tokens * provider_prices[0] + output_tokens * provider_prices[1]) / MICROS * policy.markup
    return Decimal(0)


class SpendLedger(Protocol):
    async def reserve(self, org_id: str, policy: SpendPolicy, micros: int, *, lease: str) -> bool: ...

    async def settle(self, org_id: str, lease: str, actual: int) -> None: ...


class MemorySpendLedger:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._leases: dict[str, int] = {}
        self._settled: dict[str, deque[tuple[float, int]]] = {}

    def _recent(self, org_id: str) -> int:
        settled = self._settled.setdefault(org_id, deque())
        horizon = time.monotonic() - SETTLED_WINDOW_S
        while settled and settled[0][0] < horizon:
            settled.popleft()
        return sum(amount for _, amount in settled)

    async def reserve(self, org_id: str, policy: SpendPolicy, micros: int, *, lease: str) -> bool:
        committed = policy.spent_micros + self._inflight.get(org_id, 0) + self._recent(org_id)
        if committed >= policy.limit_micros or committed + micros > policy.limit_micros:
            return False
        self._inflight[org_id] = self._inflight.get(org_id, 0) + micros
        self._leases[lease] = micros
        return True

    async def settle(self, org_id: str, lease: str, actual: int) -> None:
        self._inflight[org_id] = self._inflight.get(org_id, 0) - self._leases.pop(lease, 0)
        if actual:
            self._settled.setdefault(org_id, deque()).append((time.monotonic(), actual))


# KEYS[1]: the leases (sorted set: lease -> when it ends, in ms), KEYS[2]: each lease's
# micros (hash), KEYS[3]: their total; KEYS[4..]: settled charges of the window's seconds.
# ARGV: limit, spent, micros, lease, lease ms. Expired leases are freed first, on Redis's clock.
_FREE_EXPIRED = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000 + math.floor(tonumber(now_s[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('DECRBY', KEYS[3], tonumber(redis.call('HGET', KEYS[2], id) or '0'))
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
"""
_RESERVE = (
    _FREE_EXPIRED
    + """
local committed = tonumber(ARGV[2]) + tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 4, #KEYS do committed = committed + tonumber(redis.call('GET', KEYS[i]) or '0') end
local limit, micros, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[5])
if committed >= limit or committed + micros > limit then return 0 end
redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], micros)
redis.call('INCRBY', KEYS[3], micros)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], lease_ms * 2) end
return 1
"""
)
# KEYS: the three lease keys; ARGV: the lease. A lease already expired frees nothing twice.
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
    def _lease_keys(org_id: str) -> list[str]:
        return [f"sb:spend:{org_id}:leases", f"sb:spend:{org_id}:lease-micros", f"sb:spend:{org_id}:inflight"]

    async def reserve(self, org_id: str, policy: SpendPolicy, micros: int, *, lease: str) -> bool:
        # The settled window uses this host's clock: only its keys are summed, and a second
        # of skew between gateway hosts shifts it by a second.
        now = int(time.time())
        settled = [f"sb:spend:{org_id}:settled:{second}" for second in range(now - SETTLED_WINDOW_S, now + 1)]
        args: list[int | str] = [policy.limit_micros, policy.spent_micros, micros, lease, self._lease_ms]
        return bool(await self._reserve(keys=[*self._lease_keys(org_id), *settled], args=args))

    async def settle(self, org_id: str, lease: str, actual: int) -> None:
        await self._release(keys=self._lease_keys(org_id), args=[lease])
        if actual:
            settled = f"sb:spend:{org_id}:settled:{int(time.time())}"
            pipe = self._redis.pipeline()
            pipe.incrby(settled, actual)
            pipe.expire(settled, SETTLED_WINDOW_S + 5)
            await pipe.execute()
