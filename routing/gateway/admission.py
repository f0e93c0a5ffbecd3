"""Admission: the rate limits (requests, tokens, concurrency) and the monthly spend limit,
each held for the request before it is served and settled on every way out.

A rate-limit store that is down (Redis) admits rather than refuses every tenant, and
says so in the log. A spend ledger that is down is replaced, for the requests it cannot
answer, by one in this process: each monthly limit still binds, on the month's spend as
the snapshot rated it plus what this process has in flight, so an outage can overspend by
at most what the other gateway processes admit at the same time, not without bound. A
lost settle only leaks a lease or a reservation until it expires.
"""

from __future__ import annotations

import logging
from typing import Any

from routing.gateway import metrics, spend
from routing.gateway.auth import Caller
from routing.gateway.errors import GatewayError
from routing.gateway.exchange import Exchange
from routing.gateway.limits import Admission, Limiter, scopes_for
from routing.gateway.parsing import spend_token_bounds, token_estimate
from routing.gateway.snapshot import OrgSnapshot, Route
from routing.gateway.spend import MemorySpendLedger, SpendLedger, SpendPolicy

log = logging.getLogger("switchboard.gateway")


class _Outage:
    """A store's failure is logged in full once, then in one line per request until the
    store answers again: an outage under traffic must not bury the log in tracebacks."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.down = False

    def failed(self, what: str) -> None:
        if self.down:
            log.warning("%s still unavailable; %s", self.store, what)
        else:
            self.down = True
            log.exception("%s unavailable; %s", self.store, what)

    def answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("%s answers again", self.store)


_LIMITER, _LEDGER = _Outage("rate limiter"), _Outage("spend ledger")
# While the shared ledger is unreachable: this process's own (spend.MemorySpendLedger).
_LOCAL_LEDGER = MemorySpendLedger()


async def admit(
    limiter: Limiter, *, exchange: Exchange, caller: Caller, snapshot: OrgSnapshot, payload: dict[str, Any]
) -> Admission | None:
    """Takes from every limit that applies, or refuses with 429 and takes nothing."""
    scopes = scopes_for(caller.org_id, caller.key_id, snapshot.limits)
    try:
        admission = await limiter.admit(exchange.request_id, scopes, token_estimate(payload, exchange.endpoint))
    except Exception:  # noqa: BLE001 - limiter store down: serve rather than refuse everyone
        _LIMITER.failed(f"admitting {exchange.request_id} unchecked")
        return None
    _LIMITER.answered()
    if not admission.allowed:
        metrics.RATE_LIMITED.labels(caller.org_id, admission.exceeded).inc()
        who = "this API key" if admission.scope.startswith("key:") else "this organization"
        if admission.exceeded == "concurrency":
            message = f"Too many concurrent requests for {who}; wait for one to finish."
        else:
            retry_after = max(1, round(admission.retry_after_s))
            message = (
                f"Rate limit reached for {who}: {admission.exceeded} per minute. Retry after {retry_after} s, or ask for a higher quota."
            )
        raise GatewayError(429, message, f"rate_limit_{admission.exceeded}", headers=admission.headers())
    return admission


async def reserve_spend(
    ledger: SpendLedger, *, exchange: Exchange, snapshot: OrgSnapshot, policy: SpendPolicy, route: Route, payload: dict[str, Any]
) -> None:
    """Holds the most this request can be charged under the organization's monthly limit,
    its key's budget and its route's budget, all in one step or none, or refuses it with
    402 naming which. The route is the one the caller named: its fallbacks' targets serve
    under its budget. Requests already in flight are never cut off."""
    caps = policy.caps_for(exchange.caller.key_id if exchange.caller else "", "" if route.is_deployment else route.name)
    if not caps:
        return
    prompt_bound, output_bound = spend_token_bounds(payload, exchange.endpoint)
    providers = [t for r in snapshot.chain(route) for t in r.targets if t.kind == "provider"]
    dearest = (max(t.input_price_per_mtok for t in providers), max(t.output_price_per_mtok for t in providers)) if providers else None
    micros = spend.to_micros(spend.charge(prompt_bound, output_bound, dearest), up=True)
    try:
        refused = await ledger.reserve(caps, micros, lease=exchange.request_id)
        _LEDGER.answered()
    except Exception:  # noqa: BLE001 - an outage must neither refuse every tenant nor lift every limit
        _LEDGER.failed(f"holding {exchange.request_id} against this process's ledger")
        ledger = _LOCAL_LEDGER
        refused = await ledger.reserve(caps, micros, lease=exchange.request_id)
    if refused is not None:
        metrics.SPEND_REFUSED.labels(snapshot.org_id).inc()
        raise GatewayError(402, refused.refusal, refused.code)
    exchange.spend_policy, exchange.spend_reserved, exchange.spend_ledger = policy, micros, ledger
    exchange.spend_scopes = [cap.scope for cap in caps]


async def settle(limiter: Limiter, ledger: SpendLedger, exchange: Exchange) -> None:
    """Gives back what the request held beyond what it used."""
    admission = exchange.admission
    if admission is not None:
        used_tokens = exchange.input_tokens + exchange.output_tokens
        if not exchange.usage_reported and exchange.status == 200 and not used_tokens:
            # Served with no figures at all (an upstream that reports no usage): keep the
            # reservation rather than refund tokens that were certainly used. A dropped or
            # cut stream has its figures (routing.gateway.sse) and settles with them.
            used_tokens = admission.reserved_tokens
        try:
            await limiter.settle(exchange.request_id, admission, used_tokens)
        except Exception:  # noqa: BLE001 - a lost settle only leaks a lease until it expires
            _LIMITER.failed(f"settling {exchange.request_id} lost")
    if exchange.spend_reserved is not None and exchange.spend_policy is not None:
        provider = (exchange.input_price, exchange.output_price) if exchange.target and not exchange.deployment_id else None
        charged = spend.charge(exchange.input_tokens, exchange.output_tokens, provider)
        try:
            await (exchange.spend_ledger or ledger).settle(exchange.spend_scopes, exchange.request_id, spend.to_micros(charged))
        except Exception:  # noqa: BLE001 - a lost settle keeps a reservation until its key expires
            _LEDGER.failed(f"settling {exchange.request_id} lost")
