"""Requests per minute, tokens per minute and concurrent requests, per key and per
organization, enforced across every gateway process.

Per minute limits are token buckets holding a minute's allowance and refilling
continuously (so N requests at once against a limit of N all pass, and the next waits for
a refill). A request reserves its estimated tokens (prompt plus max_tokens) up front and
settles the difference when its real usage is known. Concurrency is a set of in-flight
request ids with a lease, so a crashed process cannot leak slots forever.

With REDIS_URL every check for a request runs as one Lua script on Redis (one round trip,
atomic across processes, on Redis's clock). On the embedded default the same arithmetic
runs in the process, which is then the only gateway.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from routing.gateway.snapshot import Limits

CONCURRENCY_LEASE_S = 900.0  # an in-flight slot not released by then is presumed leaked


@dataclass(frozen=True, slots=True)
class LimitScope:
    name: str  # "org:<id>" or "key:<id>"
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent: int | None


@dataclass(slots=True)
class BucketReading:
    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class Admission:
    allowed: bool
    exceeded: str = ""  # "requests", "tokens" or "concurrency"
    scope: str = ""
    retry_after_s: float = 0.0
    requests: BucketReading | None = None
    tokens: BucketReading | None = None
    reserved_tokens: int = 0
    scopes: list[LimitScope] = field(default_factory=list)

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = []
        if self.requests is not None:
            headers += [
                (b"x-ratelimit-limit-requests", str(self.requests.limit).encode()),
                (b"x-ratelimit-remaining-requests", str(self.requests.remaining).encode()),
                (b"x-ratelimit-reset-requests", format_duration(self.requests.reset_s).encode()),
            ]
        if self.tokens is not None:
            headers += [
                (b"x-ratelimit-limit-tokens", str(self.tokens.limit).encode()),
                (b"x-ratelimit-remaining-tokens", str(self.tokens.remaining).encode()),
                (b"x-ratelimit-reset-tokens", format_duration(self.tokens.reset_s).encode()),
            ]
        if not self.allowed:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after_s))).encode()))
        return headers


def format_duration(seconds: float) -> str:
    """OpenAI's style: 12ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


class Limiter(Protocol):
    async def admit(self, request_id: str, scopes: list[LimitScope], tokens: int) -> Admission: ...

    async def settle(self, request_id: str, admission: Admission, used_tokens: int) -> None: ...


def _tightest(readings: list[BucketReading]) -> BucketReading | None:
    return min(readings, key=lambda r: r.remaining, default=None)


# ---------------------------------------------------------------------------------------
# In process (embedded default)


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class MemoryLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._in_flight: dict[str, dict[str, float]] = {}

    def _level(self, key: str, capacity: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(capacity), now)
        else:
            bucket.level = min(float(capacity), bucket.level + (now - bucket.at) * capacity / 60.0)
            bucket.at = now
        return bucket

    async def admit(self, request_id: str, scopes: list[LimitScope], tokens: int) -> Admission:
        now = time.monotonic()
        # Check every limit before taking from any, so a refusal takes nothing.
        for scope in scopes:
            refusal = self._refusal(scope, tokens, now)
            if refusal is not None:
                return refusal
        request_readings, token_readings = [], []
        for scope in scopes:
            if scope.requests_per_minute:
                bucket = self._buckets[scope.name + ":r"]
                bucket.level -= 1
                rate = scope.requests_per_minute / 60.0
                request_readings.append(
                    BucketReading(scope.requests_per_minute, int(bucket.level), (scope.requests_per_minute - bucket.level) / rate)
                )
            if scope.tokens_per_minute:
                bucket = self._buckets[scope.name + ":t"]
                bucket.level -= min(tokens, scope.tokens_per_minute)
                rate = scope.tokens_per_minute / 60.0
                token_readings.append(
                    BucketReading(scope.tokens_per_minute, max(0, int(bucket.level)), (scope.tokens_per_minute - bucket.level) / rate)
                )
            if scope.concurrent:
                self._in_flight[scope.name][request_id] = now + CONCURRENCY_LEASE_S
        return Admission(
            True, requests=_tightest(request_readings), tokens=_tightest(token_readings), reserved_tokens=tokens, scopes=scopes
        )

    def _refusal(self, scope: LimitScope, tokens: int, now: float) -> Admission | None:
        """The refusal this scope's limits give a request now, or None if they admit it."""
        if scope.requests_per_minute:
            bucket = self._level(scope.name + ":r", scope.requests_per_minute, now)
            if bucket.level < 1:
                rate = scope.requests_per_minute / 60.0
                return Admission(
                    False,
                    "requests",
                    scope.name,
                    (1 - bucket.level) / rate,
                    requests=BucketReading(scope.requests_per_minute, 0, (scope.requests_per_minute - bucket.level) / rate),
                )
        if scope.tokens_per_minute:
            bucket = self._level(scope.name + ":t", scope.tokens_per_minute, now)
            cost = min(tokens, scope.tokens_per_minute)
            if bucket.level < cost:
                rate = scope.tokens_per_minute / 60.0
                return Admission(
                    False,
                    "tokens",
                    scope.name,
                    (cost - bucket.level) / rate,
                    tokens=BucketReading(
                        scope.tokens_per_minute, max(0, int(bucket.level)), (scope.tokens_per_minute - bucket.level) / rate
                    ),
                )
        if scope.concurrent:
            flying = self._in_flight.setdefault(scope.name, {})
            if len(flying) >= scope.concurrent:
                for rid in [rid for rid, until in flying.items() if until < now]:
                    del flying[rid]
            if len(flying) >= scope.concurrent:
                return Admission(False, "concurrency", scope.name, 1.0)
        return None

    async def settle(self, request_id: str, admission: Admission, used_tokens: int) -> None:
        now = time.monotonic()
        for scope in admission.scopes:
            if scope.tokens_per_minute:
                bucket = self._level(scope.name + ":t", scope.tokens_per_minute, now)
                reserved = min(admission.reserved_tokens, scope.tokens_per_minute)
                bucket.level = min(float(scope.tokens_per_minute), bucket.level + reserved - used_tokens)
            if scope.concurrent:
                self._in_flight.get(scope.name, {}).pop(request_id, None)


# ---------------------------------------------------------------------------------------
# Redis (every process shares one set of counters)

# KEYS: per scope, its request bucket, token bucket and in-flight set.
# ARGV: request id, tokens, lease seconds, then per scope: rpm, tpm, concurrency (0 = none).
# Returns {1, readings...} or {0, scope index, kind, retry after, reading...}; readings
# are strings (Lua numbers become integers on the way out).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid, tokens, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 3
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
end
local levels = {}
for i = 1, n do
  local rpm, tpm, conc = tonumber(ARGV[1 + i * 3]), tonumber(ARGV[2 + i * 3]), tonumber(ARGV[3 + i * 3])
  if rpm > 0 then
    local l = level(KEYS[i * 3 - 2], rpm)
    if l < 1 then return {0, i, 'requests', tostring((1 - l) * 60 / rpm), tostring(rpm), tostring(l)} end
    levels[i * 3 - 2] = l
  end
  if tpm > 0 then
    local l = level(KEYS[i * 3 - 1], tpm)
    local cost = math.min(tokens, tpm)
    if l < cost then return {0, i, 'tokens', tostring((cost - l) * 60 / tpm), tostring(tpm), tostring(l)} end
    levels[i * 3 - 1] = l
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i * 3], '-inf', now)
    if redis.call('ZCARD', KEYS[i * 3]) >= conc then return {0, i, 'concurrency', '1', tostring(conc), '0'} end
  end
end
local out = {1}
for i = 1, n do
  local rpm, tpm, conc = tonumber(ARGV[1 + i * 3]), tonumber(ARGV[2 + i * 3]), tonumber(ARGV[3 + i * 3])
  if rpm > 0 then
    local l = levels[i * 3 - 2] - 1
    redis.call('HSET', KEYS[i * 3 - 2], 'l', tostring(l), 't', tostring(now))
    redis.call('PEXPIRE', KEYS[i * 3 - 2], 120000)
    table.insert(out, tostring(l))
  else
    table.insert(out, '')
  end
  if tpm > 0 then
    local l = levels[i * 3 - 1] - math.min(tokens, tpm)
    redis.call('HSET', KEYS[i * 3 - 1], 'l', tostring(l), 't', tostring(now))
    redis.call('PEXPIRE', KEYS[i * 3 - 1], 120000)
    table.insert(out, tostring(l))
  else
    table.insert(out, '')
  end
  if conc > 0 then
    redis.call('ZADD', KEYS[i * 3], now + lease, rid)
    redis.call('PEXPIRE', KEYS[i * 3], math.floor(lease * 1000))
  end
end
return out
"""

# KEYS as above. ARGV: request id, refund (reserved - used, may be negative), then per
# scope: tpm, reserved-for-this-scope.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid = ARGV[1]
local n = #KEYS / 3
for i = 1, n do
  local tpm, delta = tonumber(ARGV[i * 2]), tonumber(ARGV[i * 2 + 1])
  if tpm > 0 and delta ~= 0 then
    local v = redis.call('HMGET', KEYS[i * 3 - 1], 'l', 't')
    local l = tpm
    if v[1] then l = math.min(tpm, tonumber(v[1]) + (now - tonumber(v[2])) * tpm / 60) end
    redis.call('HSET', KEYS[i * 3 - 1], 'l', tostring(math.min(tpm, l + delta)), 't', tostring(now))
    redis.call('PEXPIRE', KEYS[i * 3 - 1], 120000)
  end
  redis.call('ZREM', KEYS[i * 3], rid)
end
return 1
"""


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        # Short timeouts: a limiter that stops answering must not hold requests forever.
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)

    @staticmethod
    def _keys(scopes: list[LimitScope]) -> list[str]:
        keys = []
        for scope in scopes:
            # The hash tag keeps a scope's keys on one slot if this ever runs on a cluster.
            keys += [f"sb:rl:{{{scope.name}}}:r", f"sb:rl:{{{scope.name}}}:t", f"sb:rl:{{{scope.name}}}:c"]
        return keys

    async def admit(self, request_id: str, scopes: list[LimitScope], tokens: int) -> Admission:
        args: list[str | int | float] = [request_id, tokens, CONCURRENCY_LEASE_S]
        for scope in scopes:
            args += [scope.requests_per_minute or 0, scope.tokens_per_minute or 0, scope.concurrent or 0]
        result = await self._admit(keys=self._keys(scopes), args=args)
        if int(result[0]) == 0:
            scope = scopes[int(result[1]) - 1]
            kind = result[2].decode()
            retry_after, limit, level = float(result[3]), int(result[4]), float(result[5])
            admission = Admission(False, kind, scope.name, retry_after)
            if kind in ("requests", "tokens"):
                reading = BucketReading(limit, max(0, int(level)), (limit - level) * 60 / limit)
                admission.requests, admission.tokens = (reading, None) if kind == "requests" else (None, reading)
            return admission
        request_readings, token_readings = [], []
        for index, scope in enumerate(scopes):
            request_level, token_level = result[1 + index * 2], result[2 + index * 2]
            if scope.requests_per_minute:
                level = float(request_level)
                request_readings.append(
                    BucketReading(
                        scope.requests_per_minute, max(0, int(level)), (scope.requests_per_minute - level) * 60 / scope.requests_per_minute
                    )
                )
            if scope.tokens_per_minute:
                level = float(token_level)
                token_readings.append(
                    BucketReading(
                        scope.tokens_per_minute, max(0, int(level)), (scope.tokens_per_minute - level) * 60 / scope.tokens_per_minute
                    )
                )
        return Admission(
            True, requests=_tightest(request_readings), tokens=_tightest(token_readings), reserved_tokens=tokens, scopes=scopes
        )

    async def settle(self, request_id: str, admission: Admission, used_tokens: int) -> None:
        args: list[str | int] = [request_id]
        for scope in admission.scopes:
            reserved = min(admission.reserved_tokens, scope.tokens_per_minute or 0)
            args += [scope.tokens_per_minute or 0, reserved - used_tokens]
        await self._settle(keys=self._keys(admission.scopes), args=args)


def scopes_for(org_id: str, key_id: str, limits: Limits) -> list[LimitScope]:
    scopes = [
        LimitScope(
            f"org:{org_id}", limits.requests_per_minute or None, limits.tokens_per_minute or None, limits.concurrent_requests or None
        )
    ]
    if key_id and (limits.key_requests_per_minute or limits.key_tokens_per_minute or limits.key_concurrent_requests):
        scopes.insert(
            0, LimitScope(f"key:{key_id}", limits.key_requests_per_minute, limits.key_tokens_per_minute, limits.key_concurrent_requests)
        )
    return scopes
