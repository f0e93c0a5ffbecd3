"""An in-process cache for what the gateway reads from the database on its hot path
(API keys, organization snapshots).

- Entries are fresh for `ttl` seconds; after that the next request reloads them, so a
  change in the database (a revoked key, an edited route) reaches every process within
  `ttl` seconds plus one load.
- One load per key at a time (single flight), in a thread pool, never on the event loop.
- A load that fails because the database is unreachable serves the last good value for up
  to `stale_for` seconds, so a short database outage does not turn valid keys into 401s.
- A loader's own refusal (an unknown key) is cached too, for `negative_ttl` seconds, so a
  flood of bad keys costs one query per key per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.db import Error as DatabaseError
from django.db import close_old_connections, connection

K = TypeVar("K")
V = TypeVar("V")

# Django keeps one connection per thread; a small fixed pool keeps them few and reused.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-db")


class DatabaseUnavailable(Exception):
    pass


def drop_broken_connection() -> None:
    """Closes this thread's connection if it broke (a database restart), so the next query
    reconnects. Unlike close_old_connections() it keeps a healthy connection open: these
    threads run for the life of the process."""
    if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
        connection.close()
    connection.errors_occurred = False


def _with_fresh_connection(load: Callable[[K], V], key: K) -> V:
    drop_broken_connection()
    try:
        return load(key)
    except DatabaseError as error:
        close_old_connections()
        raise DatabaseUnavailable(str(error)) from error


async def run_db(function: Callable[..., V], *args: object) -> V:
    """Runs synchronous ORM work in the gateway's database threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, lambda: _with_fresh_connection(lambda _: function(*args), None))


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V | None
    refusal: Exception | None
    loaded_at: float


class RefreshingCache(Generic[K, V]):
    def __init__(
        self,
        load: Callable[[K], V],
        *,
        ttl: float,
        stale_for: float,
        negative_ttl: float,
        refusals: tuple[type[Exception], ...] = (),
        max_entries: int = 100_000,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.stale_for = stale_for
        self.negative_ttl = negative_ttl
        self._refusals = refusals
        self._max_entries = max_entries
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, asyncio.Future[_Entry[V]]] = {}

    async def get(self, key: K, *, max_age: float | None = None) -> V:
        """The value, reloaded if it is older than `ttl` (or than `max_age`, for a caller
        that found the cached one out of date)."""
        ttl = self.ttl if max_age is None else min(self.ttl, max_age)
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry.loaded_at
            if entry.refusal is None and age < ttl:
                return entry.value  # type: ignore[return-value]
            if entry.refusal is not None and age < self.negative_ttl:
                raise entry.refusal.with_traceback(None)  # a cached instance: drop old frames
        try:
            entry = await asyncio.shield(self._load_once(key))
        except DatabaseUnavailable:
            if entry is not None and entry.refusal is None and time.monotonic() - entry.loaded_at < self.stale_for:
                return entry.value  # type: ignore[return-value]
            raise
        if entry.refusal is not None:
            raise entry.refusal.with_traceback(None)
        return entry.value  # type: ignore[return-value]

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    def _load_once(self, key: K) -> asyncio.Future[_Entry[V]]:
        future = self._loading.get(key)
        if future is None:
            future = asyncio.ensure_future(self._reload(key))
            self._loading[key] = future
            future.add_done_callback(lambda _: self._loading.pop(key, None))
        return future

    async def _reload(self, key: K) -> _Entry[V]:
        loop = asyncio.get_running_loop()
        try:
            value = await loop.run_in_executor(_executor, _with_fresh_connection, self._load, key)
            entry: _Entry[V] = _Entry(value, None, time.monotonic())
        except self._refusals as refusal:
            entry = _Entry(None, refusal, time.monotonic())
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = entry
        return entry
