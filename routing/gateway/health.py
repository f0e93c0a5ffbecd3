"""What this gateway process has observed of each upstream endpoint: its circuit breaker,
requests outstanding (for least-outstanding balancing) and moving averages of latency and
time to first token (for the lowest-latency and balanced strategies).

Breakers are per process, as in every mainstream proxy: each process learns on its own
within a few failed requests. Their state changes are also written to the shared cache
(off the event loop) so the console can show them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_EWMA_ALPHA = 0.2


@dataclass(slots=True)
class EndpointHealth:
    key: str
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    outstanding: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    last_used: float = 0.0

    def available(self, now: float, cooldown_s: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now - self.opened_at >= cooldown_s
        return not self.probing

    def observe_latency(self, latency_ms: float, ttft_ms: float | None) -> None:
        self.latency_ms = latency_ms if self.latency_ms is None else self.latency_ms + _EWMA_ALPHA * (latency_ms - self.latency_ms)
        if ttft_ms is not None:
            self.ttft_ms = ttft_ms if self.ttft_ms is None else self.ttft_ms + _EWMA_ALPHA * (ttft_ms - self.ttft_ms)


IDLE_FORGET_S = 3600.0  # replicas come and go; forget endpoints unused this long
_PRUNE_EVERY = 10_000


class HealthBook:
    def __init__(self, on_change: Callable[[EndpointHealth], None] | None = None, on_forget: Callable[[str], None] | None = None) -> None:
        self._endpoints: dict[str, EndpointHealth] = {}
        self._on_change = on_change
        self._on_forget = on_forget
        self._picks = 0

    def get(self, key: str) -> EndpointHealth:
        health = self._endpoints.get(key)
        if health is None:
            health = self._endpoints[key] = EndpointHealth(key, last_used=time.monotonic())
            self._changed(health)  # so every known endpoint shows, closed, in /metrics
        return health

    def all(self) -> list[EndpointHealth]:
        return list(self._endpoints.values())

    def pick(self, keys: Sequence[str], now: float, cooldown_s: float) -> EndpointHealth | None:
        """Power of two choices on requests outstanding, among endpoints whose breaker lets
        a request through; takes the half-open probe slot when it picks one."""
        self._picks += 1
        if self._picks % _PRUNE_EVERY == 0:
            self.prune(now)
        candidates = [health for health in (self.get(key) for key in keys) if health.available(now, cooldown_s)]
        if not candidates:
            return None
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            first, second = random.sample(candidates, 2)
            chosen = first if first.outstanding <= second.outstanding else second
        if chosen.state == OPEN:
            chosen.state = HALF_OPEN
            self._changed(chosen)
        if chosen.state == HALF_OPEN:
            chosen.probing = True
        chosen.last_used = now
        return chosen

    def prune(self, now: float) -> None:
        for key in [key for key, health in self._endpoints.items() if health.outstanding == 0 and now - health.last_used > IDLE_FORGET_S]:
            del self._endpoints[key]
            if self._on_forget is not None:
                self._on_forget(key)

    def succeeded(self, health: EndpointHealth) -> None:
        health.consecutive_failures = 0
        health.probing = False
        if health.state != CLOSED:
            health.state = CLOSED
            self._changed(health)

    def failed(self, health: EndpointHealth, threshold: int) -> None:
        health.consecutive_failures += 1
        health.probing = False
        if health.state == HALF_OPEN or (health.state == CLOSED and health.consecutive_failures >= threshold):
            health.state = OPEN
            health.opened_at = time.monotonic()
            self._changed(health)

    def released_probe(self, health: EndpointHealth) -> None:
        """A probe that ended without a verdict (the client went away) frees the slot."""
        health.probing = False

    def _changed(self, health: EndpointHealth) -> None:
        if self._on_change is not None:
            self._on_change(health)
