"""A small, stateful Stripe-compatible HTTP server for the tests: the real `stripe`
library talks to it through its own `base_addresses={"api": ...}` setting.

It implements exactly the calls Switchboard makes, following Stripe's documented rules:

- form-encoded bodies with bracket notation (`payload[value]=5`, `items[0][price]=...`),
  query strings for GET; JSON answers with `object` fields so the library builds its
  typed objects;
- `Authorization: Bearer sk_test_...` (or `rk_test_`) required, else 401;
- `Idempotency-Key`: the same key with the same parameters replays the first (2xx)
  answer with `Idempotent-Replayed: true`; with other parameters it is a 400
  `idempotency_error`;
- ids with Stripe's prefixes (cus_, cs_test_, bps_, seti_, pm_, mtr_test_, prod_, price_,
  sub_, si_);
- error bodies `{"error": {"type", "code", "message", "param"}}`, with
  `Stripe-Should-Retry: false` on 4xx;
- meter events: `event_name` must belong to an active meter, the meter's customer key
  (`payload[stripe_customer_id]`) must name an existing customer, the value must be a
  whole-number string, `timestamp` within the past 35 days and at most 5 minutes
  ahead, and an `identifier` already used is refused with a 400 ("An event already
  exists with identifier ..."). Meters with `event_time_window` hour or day keep only
  the newest event per customer and window when aggregated, as Stripe documents for
  pre-aggregated meters;
- meter event summaries (`GET /v1/billing/meters/:id/event_summaries`) aggregate those
  billed events over `[start_time, end_time)` for one customer, as one summary or per
  `hour`/`day` window (start and end aligned to the window, else a 400), paginated;
- pending invoice items (`POST /v1/invoiceitems`, whole-cent `amount`, negative allowed);
- subscriptions take a `billing_cycle_anchor` (in the future, within a period).

Admin endpoints (no auth) for the tests: `POST /_admin/reset`, `POST /_admin/outage`
(JSON `{"mode": "off" | "503" | "429" | "drop" | "lost_response", "count": n}`: 503s,
rate limits, connections closed without an answer, or requests carried out whose answer
is then lost; `count` limits it to the next n API requests, `"path": "/v1/..."` to requests
to that path), `POST /_admin/clock`
(JSON `{"offset": seconds}`: the double's clock runs that far ahead, for the timestamp
window), `GET /_admin/meter_events`
(the events and, per customer, the raw sum and the billed sum), `POST /_admin/meter_events/lose`
(JSON `{"identifier": ...}`: an accepted event stops counting), `GET /_admin/requests`,
`POST /_admin/checkout/<cs_id>/complete` (the customer saves a card in Checkout, or in
payment mode pays; JSON `{"delayed": true}` leaves the payment unpaid, as a delayed
method does, until `POST /_admin/checkout/<cs_id>/settle`).

Checkout Sessions in payment mode take `line_items` with `price_data` (currency,
`product` or `product_data[name]`, a non-negative integer `unit_amount`) and a positive
integer `quantity`, all in one currency, and answer `amount_total` (from $0.50 to
$999,999.99) and `payment_status`.

Run alone: `python -m tests.stripe_server --port 12111`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

PAST_WINDOW_SECONDS = 35 * 24 * 3600
FUTURE_WINDOW_SECONDS = 5 * 60
WHOLE_NUMBER = re.compile(r"^[0-9]+$")
# A payment-mode Checkout Session in USD charges from $0.50 to $999,999.99.
MINIMUM_CHARGE_CENTS = 50
MAXIMUM_CHARGE_CENTS = 99_999_999
_ALPHANUMERIC = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


class StripeApiError(Exception):
    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type, "message": message}}
        if param:
            self.body["error"]["param"] = param
        if code:
            self.body["error"]["code"] = code


def _check_unit_amount_decimal(value: str) -> None:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise StripeApiError(400, "Invalid decimal: unit_amount_decimal.", param="unit_amount_decimal") from None
    if amount < 0 or amount.as_tuple().exponent < -12:  # type: ignore[operator]
        raise StripeApiError(400, "unit_amount_decimal accepts at most 12 decimal places.", param="unit_amount_decimal")


def _missing(kind: str, object_id: str, param: str) -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{object_id}'", param=param, code="resource_missing")


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value in (None, ""):
        raise StripeApiError(400, f"Missing required param: {name}.", param=name, code="parameter_missing")
    return value


# ------------------------------------------------------------------- form decoding


def _summary_window(params: dict[str, Any], grouping: str | None) -> tuple[int, int, int]:
    """start_time and end_time, checked as Stripe checks them, and the grouping window's size."""
    size = {"hour": 3600, "day": 86400, None: 60}.get(grouping)
    if size is None:
        raise StripeApiError(400, "Invalid value_grouping_window: must be one of day or hour.", param="value_grouping_window")
    bounds = []
    for name in ("start_time", "end_time"):
        raw = str(_required(params, name))
        if not re.fullmatch(r"[0-9]+", raw):
            raise StripeApiError(400, f"Invalid integer: {name}.", param=name)
        if int(raw) % size:
            unit = {3600: "hour", 86400: "day", 60: "minute"}[size]
            raise StripeApiError(400, f"{name} must be aligned with {unit} boundaries.", param=name)
        bounds.append(int(raw))
    if bounds[1] <= bounds[0]:
        raise StripeApiError(400, "end_time must be after start_time.", param="end_time")
    return bounds[0], bounds[1], size


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation into nested dicts; dicts keyed 0..n-1 become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "[]":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {key: _listify(value) for key, value in node.items()}
        if converted and all(key.isdigit() for key in converted) and sorted(int(key) for key in converted) == list(range(len(converted))):
            return [converted[str(index)] for index in range(len(converted))]
        return converted
    return node


# ------------------------------------------------------------------------ the state


class StripeState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.customers: dict[str, dict[str, Any]] = {}
            self.checkout_sessions: dict[str, dict[str, Any]] = {}
            self.portal_sessions: dict[str, dict[str, Any]] = {}
            self.setup_intents: dict[str, dict[str, Any]] = {}
            self.payment_methods: dict[str, dict[str, Any]] = {}
            self.meters: dict[str, dict[str, Any]] = {}
            self.products: dict[str, dict[str, Any]] = {}
            self.prices: dict[str, dict[str, Any]] = {}
            self.subscriptions: dict[str, dict[str, Any]] = {}
            self.meter_events: list[dict[str, Any]] = []
            self.invoice_items: dict[str, dict[str, Any]] = {}
            self.identifiers: set[str] = set()
            self.idempotency: dict[tuple[str, str], tuple[str, str, dict[str, Any], int, dict[str, Any]]] = {}
            self.requests: list[dict[str, Any]] = []
            self.outage_mode = "off"
            self.outage_remaining: int | None = None
            self.outage_path = ""  # only requests to this path, when set
            self.clock_offset = 0

    def now(self) -> int:
        """The double's clock: real time plus an offset the tests may set."""
        return int(time.time()) + self.clock_offset

    # ------------------------------------------------------------------ outages

    def take_outage(self, path: str) -> str:
        with self.lock:
            if self.outage_mode == "off" or (self.outage_path and path != self.outage_path):
                return "off"
            mode = self.outage_mode
            if self.outage_remaining is not None:
                self.outage_remaining -= 1
                if self.outage_remaining <= 0:
                    self.outage_mode, self.outage_remaining = "off", None
            return mode

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, path: str, params: dict[str, Any], base_url: str) -> tuple[int, dict[str, Any]]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/v1/customers", self.create_customer),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", self.get_customer),
            ("POST", r"/v1/customers/(?P<id>[^/]+)", self.update_customer),
            ("POST", r"/v1/checkout/sessions", self.create_checkout_session),
            ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", self.get_checkout_session),
            ("POST", r"/v1/billing_portal/sessions", self.create_portal_session),
            ("GET", r"/v1/setup_intents/(?P<id>[^/]+)", self.get_setup_intent),
            ("POST", r"/v1/billing/meters", self.create_meter),
            ("GET", r"/v1/billing/meters", self.list_meters),
            ("POST", r"/v1/products", self.create_product),
            ("POST", r"/v1/prices", self.create_price),
            ("GET", r"/v1/prices", self.list_prices),
            ("POST", r"/v1/subscriptions", self.create_subscription),
            ("GET", r"/v1/subscriptions/(?P<id>[^/]+)", self.get_subscription),
            ("POST", r"/v1/billing/meter_events", self.create_meter_event),
            ("GET", r"/v1/billing/meters/(?P<id>[^/]+)/event_summaries", self.list_event_summaries),
            ("POST", r"/v1/invoiceitems", self.create_invoice_item),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                with self.lock:
                    return 200, handler(params, base_url=base_url, **match.groupdict())
        raise StripeApiError(404, f"Unrecognized request URL ({method}: {path}).")

    # ------------------------------------------------------------------ customers

    def create_customer(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        customer = {
            "id": new_id("cus_"),
            "object": "customer",
            "created": self.now(),
            "email": params.get("email"),
            "name": params.get("name"),
            "metadata": params.get("metadata", {}),
            "invoice_settings": {"default_payment_method": None},
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _customer(self, customer_id: str, param: str = "customer") -> dict[str, Any]:
        if customer_id not in self.customers:
            raise _missing("customer", customer_id, param)
        return self.customers[customer_id]

    def get_customer(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        return self._customer(id, "id")

    def update_customer(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        customer = self._customer(id, "id")
        settings = params.get("invoice_settings") or {}
        if "default_payment_method" in settings:
            method = settings["default_payment_method"]
            if method not in self.payment_methods or self.payment_methods[method]["customer"] != id:
                raise StripeApiError(
                    400, f"No such PaymentMethod: '{method}'", param="invoice_settings[default_payment_method]", code="resource_missing"
                )
            customer["invoice_settings"]["default_payment_method"] = method
        for key in ("name", "email"):
            if key in params:
                customer[key] = params[key]
        if "metadata" in params:
            customer["metadata"].update(params["metadata"])
        return customer

    # ------------------------------------------------------------------ checkout and portal

    def create_checkout_session(self, params: dict[str, Any], base_url: str, **_: Any) -> dict[str, Any]:
        mode = _required(params, "mode")
        if mode not in ("payment", "setup", "subscription"):
            raise StripeApiError(400, "Invalid mode: must be one of payment, setup, or subscription", param="mode")
        customer_id = params.get("customer")
        if customer_id:
            self._customer(customer_id)
        _required(params, "success_url")
        if mode == "setup" and not params.get("currency") and not params.get("payment_method_types"):
            raise StripeApiError(400, "currency is required in setup mode when payment_method_types is not set.", param="currency")
        line_items, amount_total = self._checkout_line_items(params) if mode == "payment" else (None, None)
        session_id = new_id("cs_test_", 58)
        intent = None
        if mode == "setup":
            intent = {
                "id": new_id("seti_", 24),
                "object": "setup_intent",
                "status": "requires_payment_method",
                "customer": customer_id,
                "payment_method": None,
                "usage": "off_session",
            }
            self.setup_intents[intent["id"]] = intent
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "customer": customer_id,
            "currency": params.get("currency"),
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "setup_intent": intent["id"] if intent else None,
            "metadata": params.get("metadata", {}),
            "url": f"{base_url}/c/pay/{session_id}",
            "livemode": False,
        }
        if mode == "payment":
            session.update(
                currency=line_items[0]["currency"] if line_items else params.get("currency"),
                amount_subtotal=amount_total,
                amount_total=amount_total,
                payment_status="unpaid",
                payment_intent=None,
                line_items={
                    "object": "list",
                    "has_more": False,
                    "url": f"/v1/checkout/sessions/{session_id}/line_items",
                    "data": line_items,
                },
            )
        self.checkout_sessions[session_id] = session
        return session

    def _checkout_line_items(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Payment mode's line items, checked as Stripe checks `price_data` ones, and the
        session's total in the smallest currency unit."""
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise StripeApiError(400, "line_items is required in payment mode.", param="line_items", code="parameter_missing")
        lines: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            at = f"line_items[{index}]"
            if not isinstance(item, dict):
                raise StripeApiError(400, f"Invalid object: {at}.", param=at)
            price_data = item.get("price_data")
            if not isinstance(price_data, dict):
                raise StripeApiError(400, f"Missing required param: {at}[price_data].", param=f"{at}[price_data]", code="parameter_missing")
            currency = price_data.get("currency")
            if not currency:
                raise StripeApiError(
                    400,
                    f"Missing required param: {at}[price_data][currency].",
                    param=f"{at}[price_data][currency]",
                    code="parameter_missing",
                )
            name = (price_data.get("product_data") or {}).get("name") if isinstance(price_data.get("product_data"), dict) else None
            if not name and not price_data.get("product"):
                raise StripeApiError(
                    400,
                    f"You must specify either `product` or `product_data` when creating a price ({at}[price_data]).",
                    param=f"{at}[price_data]",
                )
            unit_amount = str(price_data.get("unit_amount", ""))
            if not WHOLE_NUMBER.match(unit_amount):
                raise StripeApiError(
                    400,
                    f"Invalid non-negative integer: {at}[price_data][unit_amount].",
                    param=f"{at}[price_data][unit_amount]",
                )
            quantity = str(item.get("quantity", ""))
            if not WHOLE_NUMBER.match(quantity) or int(quantity) < 1:
                raise StripeApiError(
                    400, f"Missing required param: {at}[quantity] (a positive integer).", param=f"{at}[quantity]", code="parameter_missing"
                )
            if lines and currency != lines[0]["currency"]:
                raise StripeApiError(400, "All line items must use the same currency.", param=f"{at}[price_data][currency]")
            total = int(unit_amount) * int(quantity)
            lines.append(
                {
                    "id": new_id("li_", 24),
                    "object": "item",
                    "currency": currency,
                    "description": name or price_data.get("product"),
                    "quantity": int(quantity),
                    "price": {"object": "price", "currency": currency, "unit_amount": int(unit_amount), "type": "one_time"},
                    "amount_subtotal": total,
                    "amount_total": total,
                }
            )
        amount_total = sum(line["amount_total"] for line in lines)
        if amount_total < MINIMUM_CHARGE_CENTS:
            raise StripeApiError(400, "The Checkout Session's total amount due must add up to at least $0.50 usd", param="line_items")
        if amount_total > MAXIMUM_CHARGE_CENTS:
            raise StripeApiError(400, "The Checkout Session's total amount due must be no more than $999,999.99 usd", param="line_items")
        return lines, amount_total

    def get_checkout_session(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        if id not in self.checkout_sessions:
            raise _missing("checkout.session", id, "session")
        return self.checkout_sessions[id]

    def complete_checkout(self, session_id: str, delayed: bool = False) -> dict[str, Any]:
        """The customer finishes Checkout. In payment mode the charge succeeds at once
        (`payment_status` paid), or with `delayed` is left to a delayed method (unpaid
        until `settle_checkout`); the card is not saved to the customer, as Stripe saves
        none in payment mode unless asked to (`setup_future_usage`)."""
        with self.lock:
            session = self.get_checkout_session({}, session_id)
            payment = session["mode"] == "payment"
            method = {
                "id": new_id("pm_", 24),
                "object": "payment_method",
                "type": "us_bank_account" if delayed else "card",
                "customer": None if payment else session["customer"],
                "card": {"brand": "visa", "last4": "4242"},
            }
            self.payment_methods[method["id"]] = method
            if session["setup_intent"]:
                intent = self.setup_intents[session["setup_intent"]]
                intent.update(status="succeeded", payment_method=method["id"])
            if payment:
                session.update(payment_intent=new_id("pi_", 24), payment_status="unpaid" if delayed else "paid")
            session["status"] = "complete"
            return session

    def settle_checkout(self, session_id: str) -> dict[str, Any]:
        """A delayed payment of a completed payment-mode session succeeds (Stripe then
        sends `checkout.session.async_payment_succeeded`)."""
        with self.lock:
            session = self.get_checkout_session({}, session_id)
            if session["mode"] != "payment" or session["status"] != "complete":
                raise StripeApiError(400, f"Checkout session {session_id} is not a completed payment-mode session.", param="session")
            session["payment_status"] = "paid"
            return session

    def create_portal_session(self, params: dict[str, Any], base_url: str, **_: Any) -> dict[str, Any]:
        customer_id = _required(params, "customer")
        self._customer(customer_id)
        session_id = new_id("bps_", 24)
        session = {
            "id": session_id,
            "object": "billing_portal.session",
            "customer": customer_id,
            "return_url": params.get("return_url"),
            "url": f"{base_url}/p/session/{session_id}",
            "created": self.now(),
            "livemode": False,
        }
        self.portal_sessions[session_id] = session
        return session

    def get_setup_intent(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        if id not in self.setup_intents:
            raise _missing("setup_intent", id, "intent")
        return self.setup_intents[id]

    # ------------------------------------------------------------------ meters, products, prices

    def create_meter(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        display_name = _required(params, "display_name")
        event_name = _required(params, "event_name")
        aggregation = params.get("default_aggregation") or {}
        if aggregation.get("formula") not in ("sum", "count", "last"):
            raise StripeApiError(
                400, "default_aggregation[formula] must be one of sum, count or last.", param="default_aggregation[formula]"
            )
        if any(meter["event_name"] == event_name and meter["status"] == "active" for meter in self.meters.values()):
            raise StripeApiError(400, f"An active meter with event_name `{event_name}` already exists.", param="event_name")
        mapping = params.get("customer_mapping") or {"type": "by_id", "event_payload_key": "stripe_customer_id"}
        if mapping.get("type") != "by_id" or not mapping.get("event_payload_key"):
            raise StripeApiError(400, "customer_mapping[type] must be by_id, with an event_payload_key.", param="customer_mapping[type]")
        window = params.get("event_time_window")
        if window not in (None, "hour", "day"):
            raise StripeApiError(400, "event_time_window must be hour or day.", param="event_time_window")
        now = self.now()
        meter = {
            "id": new_id("mtr_test_", 24),
            "object": "billing.meter",
            "created": now,
            "updated": now,
            "display_name": display_name,
            "event_name": event_name,
            "event_time_window": window,
            "status": "active",
            "status_transitions": {"deactivated_at": None},
            "default_aggregation": {"formula": aggregation["formula"]},
            "customer_mapping": {"type": "by_id", "event_payload_key": mapping["event_payload_key"]},
            "value_settings": {"event_payload_key": (params.get("value_settings") or {}).get("event_payload_key", "value")},
            "livemode": False,
        }
        self.meters[meter["id"]] = meter
        return meter

    def list_meters(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        meters = [meter for meter in self.meters.values() if params.get("status") in (None, meter["status"])]
        return {"object": "list", "url": "/v1/billing/meters", "has_more": False, "data": meters}

    def create_product(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        product = {
            "id": params.get("id") or new_id("prod_"),
            "object": "product",
            "name": _required(params, "name"),
            "active": True,
            "metadata": params.get("metadata", {}),
            "created": self.now(),
            "livemode": False,
        }
        if product["id"] in self.products:
            raise StripeApiError(400, "Product already exists.", param="id", code="resource_already_exists")
        self.products[product["id"]] = product
        return product

    def _check_recurring(self, recurring: dict[str, Any]) -> None:
        if recurring.get("interval") not in ("day", "week", "month", "year"):
            raise StripeApiError(400, "recurring[interval] must be day, week, month or year.", param="recurring[interval]")
        if recurring.get("usage_type", "licensed") == "metered":
            meter_id = recurring.get("meter")
            if not meter_id:
                raise StripeApiError(400, "Metered prices must be backed by a meter: set recurring[meter].", param="recurring[meter]")
            if meter_id not in self.meters:
                raise _missing("billing.meter", meter_id, "recurring[meter]")

    def create_price(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        currency = _required(params, "currency")
        product_id = _required(params, "product")
        if product_id not in self.products:
            raise _missing("product", product_id, "product")
        if ("unit_amount" in params) == ("unit_amount_decimal" in params):
            raise StripeApiError(400, "Exactly one of unit_amount or unit_amount_decimal must be set.", param="unit_amount")
        if "unit_amount_decimal" in params:
            _check_unit_amount_decimal(params["unit_amount_decimal"])
        recurring = params.get("recurring")
        if recurring is not None:
            self._check_recurring(recurring)
        lookup_key = params.get("lookup_key")
        if lookup_key:
            holders = [price for price in self.prices.values() if price["lookup_key"] == lookup_key]
            if holders and params.get("transfer_lookup_key") != "true":
                raise StripeApiError(400, f"A price (`{holders[0]['id']}`) already uses that lookup key.", param="lookup_key")
            for price in holders:
                price["lookup_key"] = None
        price = {
            "id": new_id("price_", 24),
            "object": "price",
            "active": True,
            "currency": currency,
            "product": product_id,
            "unit_amount": int(params["unit_amount"]) if "unit_amount" in params else None,
            "unit_amount_decimal": params.get("unit_amount_decimal", params.get("unit_amount")),
            "billing_scheme": params.get("billing_scheme", "per_unit"),
            "lookup_key": lookup_key,
            "nickname": params.get("nickname"),
            "recurring": (
                {
                    "interval": recurring["interval"],
                    "interval_count": 1,
                    "usage_type": recurring.get("usage_type", "licensed"),
                    "meter": recurring.get("meter"),
                }
                if recurring
                else None
            ),
            "type": "recurring" if recurring else "one_time",
            "created": self.now(),
            "livemode": False,
        }
        self.prices[price["id"]] = price
        return price

    def list_prices(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        prices = list(self.prices.values())
        lookup_keys = params.get("lookup_keys")
        if lookup_keys is not None:
            keys = lookup_keys if isinstance(lookup_keys, list) else [lookup_keys]
            prices = [price for price in prices if price["lookup_key"] in keys]
        if "active" in params:
            prices = [price for price in prices if str(price["active"]).lower() == str(params["active"]).lower()]
        return {"object": "list", "url": "/v1/prices", "has_more": False, "data": prices[: int(params.get("limit", 10))]}

    # ------------------------------------------------------------------ subscriptions

    def create_subscription(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        customer_id = _required(params, "customer")
        self._customer(customer_id)
        items = params.get("items")
        if not isinstance(items, list) or not items:
            raise StripeApiError(400, "Missing required param: items.", param="items", code="parameter_missing")
        subscription_id = new_id("sub_", 24)
        data = []
        for index, item in enumerate(items):
            price_id = item.get("price")
            if price_id not in self.prices:
                raise _missing("price", str(price_id), f"items[{index}][price]")
            data.append(
                {"id": new_id("si_"), "object": "subscription_item", "price": self.prices[price_id], "subscription": subscription_id}
            )
        now = self.now()
        anchor = now
        if params.get("billing_cycle_anchor") not in (None, ""):
            if not re.fullmatch(r"[0-9]+", str(params["billing_cycle_anchor"])):
                raise StripeApiError(400, "Invalid integer: billing_cycle_anchor.", param="billing_cycle_anchor")
            anchor = int(params["billing_cycle_anchor"])
            if anchor < now or anchor > now + 31 * 86400:
                raise StripeApiError(
                    400, "billing_cycle_anchor must be in the future and within one billing period.", param="billing_cycle_anchor"
                )
        if params.get("proration_behavior") not in (None, "create_prorations", "none", "always_invoice"):
            raise StripeApiError(400, "Invalid proration_behavior.", param="proration_behavior")
        subscription = {
            "id": subscription_id,
            "billing_cycle_anchor": anchor,
            "object": "subscription",
            "customer": customer_id,
            "status": "active",
            "collection_method": "charge_automatically",
            "start_date": now,
            "created": now,
            "metadata": params.get("metadata", {}),
            "items": {"object": "list", "url": f"/v1/subscription_items?subscription={subscription_id}", "has_more": False, "data": data},
            "livemode": False,
        }
        self.subscriptions[subscription_id] = subscription
        return subscription

    def get_subscription(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        if id not in self.subscriptions:
            raise _missing("subscription", id, "id")
        return self.subscriptions[id]

    # ------------------------------------------------------------------ meter events

    def create_meter_event(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        event_name = _required(params, "event_name")
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise StripeApiError(400, "Missing required param: payload.", param="payload", code="parameter_missing")
        meter = next((meter for meter in self.meters.values() if meter["event_name"] == event_name and meter["status"] == "active"), None)
        if meter is None:
            raise StripeApiError(400, f"No active meter found for event_name '{event_name}'.", param="event_name")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id:
            raise StripeApiError(
                400, f"Missing required param: payload[{customer_key}].", param=f"payload[{customer_key}]", code="parameter_missing"
            )
        if customer_id not in self.customers:
            raise _missing("customer", customer_id, f"payload[{customer_key}]")
        value_key = meter["value_settings"]["event_payload_key"]
        value = payload.get(value_key)
        if value is None or not WHOLE_NUMBER.match(str(value)):
            raise StripeApiError(400, f"payload[{value_key}] must be a whole number, got {value!r}.", param=f"payload[{value_key}]")
        now = self.now()
        timestamp_raw = params.get("timestamp", str(now))
        if not re.fullmatch(r"[0-9]+", str(timestamp_raw)):
            raise StripeApiError(400, "Invalid integer: timestamp.", param="timestamp")
        timestamp = int(timestamp_raw)
        if timestamp < now - PAST_WINDOW_SECONDS or timestamp > now + FUTURE_WINDOW_SECONDS:
            raise StripeApiError(
                400, "Timestamp must be within the past 35 calendar days and not more than 5 minutes in the future.", param="timestamp"
            )
        identifier = params.get("identifier") or new_id("mev_", 24)
        if len(identifier) > 100:
            raise StripeApiError(400, "identifier is too long (maximum 100 characters).", param="identifier")
        if identifier in self.identifiers:
            raise StripeApiError(400, f"An event already exists with identifier {identifier}.", param="identifier")
        self.identifiers.add(identifier)
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }
        self.meter_events.append(
            {**event, "customer": customer_id, "value": int(value), "meter": meter["id"], "sequence": len(self.meter_events)}
        )
        return event

    def _billed_events(self, meter_id: str, customer_id: str) -> list[dict[str, Any]]:
        """The events a meter counts for a customer: on a pre-aggregated meter only the
        newest of each window."""
        meter = self.meters[meter_id]
        events = [event for event in self.meter_events if event["meter"] == meter_id and event["customer"] == customer_id]
        window = {"hour": 3600, "day": 86400}.get(meter["event_time_window"] or "")
        if window is None:
            return events
        newest: dict[int, dict[str, Any]] = {}
        for event in events:
            key = event["timestamp"] // window
            if key not in newest or (event["timestamp"], event["sequence"]) > (newest[key]["timestamp"], newest[key]["sequence"]):
                newest[key] = event
        return list(newest.values())

    def list_event_summaries(self, params: dict[str, Any], id: str, **_: Any) -> dict[str, Any]:
        """`GET /v1/billing/meters/:id/event_summaries`: the customer's aggregated value
        over [start_time, end_time), as one summary or one per hour or day window that has
        events, oldest first, paginated by `starting_after`/`limit`."""
        if id not in self.meters:
            raise _missing("billing.meter", id, "id")
        customer_id = _required(params, "customer")
        self._customer(customer_id)
        grouping = params.get("value_grouping_window")
        start, end, size = _summary_window(params, grouping)
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 100:
            raise StripeApiError(400, "limit must be between 1 and 100.", param="limit")
        meter = self.meters[id]
        sums: dict[int, int] = {}
        for event in self._billed_events(id, customer_id):
            if start <= event["timestamp"] < end:
                window_start = start if grouping is None else event["timestamp"] - event["timestamp"] % size
                sums[window_start] = sums.get(window_start, 0) + event["value"]
        summaries = [
            {
                "id": f"mtrusg_test_{id[-8:]}{customer_id[-8:]}{window_start}",
                "object": "billing.meter_event_summary",
                "aggregated_value": float(value),
                "start_time": window_start,
                "end_time": end if grouping is None else window_start + size,
                "livemode": False,
                "meter": meter["id"],
            }
            for window_start, value in sorted(sums.items())
        ]
        after = params.get("starting_after")
        if after:
            ids = [summary["id"] for summary in summaries]
            if after not in ids:
                raise StripeApiError(400, f"Invalid starting_after: {after}.", param="starting_after")
            summaries = summaries[ids.index(after) + 1 :]
        return {
            "object": "list",
            "url": f"/v1/billing/meters/{id}/event_summaries",
            "has_more": len(summaries) > limit,
            "data": summaries[:limit],
        }

    # ------------------------------------------------------------------ invoice items

    def create_invoice_item(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        """A pending invoice item: Stripe adds it to the customer's next invoice."""
        customer_id = _required(params, "customer")
        self._customer(customer_id)
        currency = _required(params, "currency")
        raw = str(_required(params, "amount"))
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise StripeApiError(400, "Invalid integer: amount.", param="amount")
        item = {
            "id": new_id("ii_", 24),
            "object": "invoiceitem",
            "customer": customer_id,
            "amount": int(raw),
            "currency": currency,
            "description": params.get("description"),
            "date": self.now(),
            "invoice": None,
            "metadata": params.get("metadata", {}),
            "livemode": False,
        }
        self.invoice_items[item["id"]] = item
        return item

    def lose_meter_event(self, identifier: str) -> bool:
        """An accepted event that stops counting (for the reconciliation tests)."""
        with self.lock:
            before = len(self.meter_events)
            self.meter_events = [event for event in self.meter_events if event["identifier"] != identifier]
            return len(self.meter_events) < before

    def meter_summary(self) -> dict[str, Any]:
        """The stored events, and per customer the raw sum and what Stripe would bill:
        for pre-aggregated meters only the newest event of each window counts."""
        with self.lock:
            events = [dict(event) for event in self.meter_events]
            newest: dict[tuple[str, str, int], dict[str, Any]] = {}
            customers: dict[str, dict[str, int]] = {}
            for event in events:
                meter = self.meters[event["meter"]]
                totals = customers.setdefault(event["customer"], {"count": 0, "raw_sum": 0, "billed_sum": 0})
                totals["count"] += 1
                totals["raw_sum"] += event["value"]
                window = {"hour": 3600, "day": 86400}.get(meter["event_time_window"] or "")
                if window is None:
                    totals["billed_sum"] += event["value"]
                    continue
                key = (event["customer"], event["meter"], event["timestamp"] // window)
                if key not in newest or (event["timestamp"], event["sequence"]) > (newest[key]["timestamp"], newest[key]["sequence"]):
                    newest[key] = event
            for event in newest.values():
                customers[event["customer"]]["billed_sum"] += event["value"]
            return {"events": events, "customers": customers}


# ------------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: StripeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", new_id("req_"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _outage(self, outage: str) -> bool:
        """Answers as the outage the test asked for would; True if it did."""
        if outage == "503":
            self._send_json(503, {"error": {"type": "api_error", "message": "The service is temporarily unavailable (test outage)."}})
        elif outage == "429":
            self._send_json(
                429, {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests (test outage)."}}
            )
        elif outage == "drop":
            self._drop()
        return outage in ("503", "429", "drop")

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode() if length else ""
        if split.path.startswith("/_admin/"):
            self._admin(method, split.path, raw_body)
            return
        pairs = parse_qsl(split.query if method in ("GET", "DELETE") else raw_body, keep_blank_values=True)
        params = decode_form(pairs)
        api_key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        with state.lock:
            state.requests.append(
                {"method": method, "path": split.path, "params": params, "idempotency_key": self.headers.get("Idempotency-Key")}
            )
        if not api_key.startswith(("sk_test_", "rk_test_")):
            shown = (api_key[:8] + "*" * 8) if api_key else ""
            message = f"Invalid API Key provided: {shown}" if api_key else "You did not provide an API key."
            self._send_json(401, {"error": {"type": "invalid_request_error", "message": message}})
            return
        outage = state.take_outage(split.path)
        if self._outage(outage):
            return
        idempotency_key = self.headers.get("Idempotency-Key") if method == "POST" else None
        if idempotency_key:
            with state.lock:
                saved = state.idempotency.get((api_key, idempotency_key))
            if saved is not None:
                saved_method, saved_path, saved_params, status, body = saved
                if (saved_method, saved_path, saved_params) != (method, split.path, params):
                    self._send_json(
                        400,
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the same parameters "
                                "they were first used with. "
                                f"Try using a key other than '{idempotency_key}' if you meant to execute a different request.",
                            }
                        },
                    )
                else:
                    self._send_json(status, body, {"Idempotent-Replayed": "true", "Idempotency-Key": idempotency_key})
                return
        base_url = f"http://{self.headers.get('Host') or '127.0.0.1'}"
        try:
            status, body = state.handle(method, split.path, params, base_url)
        except StripeApiError as error:
            if outage == "lost_response":
                self._drop()
                return
            self._send_json(error.status, error.body, {"Stripe-Should-Retry": "false"})
            return
        if idempotency_key:
            with state.lock:
                state.idempotency[(api_key, idempotency_key)] = (method, split.path, params, status, body)
        if outage == "lost_response":
            self._drop()  # carried out, but the answer never arrives
            return
        self._send_json(status, body, {"Idempotency-Key": idempotency_key} if idempotency_key else None)

    def _admin(self, method: str, path: str, raw_body: str) -> None:
        state = self.server.state
        body = json.loads(raw_body) if raw_body.strip() else {}
        if method == "POST" and path == "/_admin/reset":
            state.reset()
            self._send_json(200, {"reset": True})
        elif method == "POST" and path == "/_admin/outage":
            with state.lock:
                state.outage_mode = str(body.get("mode", "off"))
                state.outage_remaining = int(body["count"]) if body.get("count") else None
                state.outage_path = str(body.get("path") or "")
            self._send_json(200, {"mode": state.outage_mode, "count": state.outage_remaining, "path": state.outage_path})
        elif method == "POST" and path == "/_admin/clock":
            with state.lock:
                state.clock_offset = int(body.get("offset", 0))
            self._send_json(200, {"offset": state.clock_offset, "now": state.now()})
        elif method == "GET" and path == "/_admin/meter_events":
            self._send_json(200, state.meter_summary())
        elif method == "GET" and path == "/_admin/requests":
            with state.lock:
                self._send_json(200, {"requests": list(state.requests)})
        elif method == "GET" and path == "/_admin/state":
            with state.lock:
                self._send_json(
                    200,
                    {
                        "customers": state.customers,
                        "meters": state.meters,
                        "products": state.products,
                        "prices": state.prices,
                        "subscriptions": state.subscriptions,
                        "checkout_sessions": state.checkout_sessions,
                        "portal_sessions": state.portal_sessions,
                        "invoice_items": state.invoice_items,
                    },
                )
        elif method == "POST" and path == "/_admin/meter_events/lose":
            self._send_json(200, {"lost": state.lose_meter_event(str(body.get("identifier", "")))})
        elif method == "POST" and (match := re.fullmatch(r"/_admin/checkout/([^/]+)/complete", path)):
            try:
                self._send_json(200, state.complete_checkout(match.group(1), delayed=bool(body.get("delayed"))))
            except StripeApiError as error:
                self._send_json(error.status, error.body)
        elif method == "POST" and (match := re.fullmatch(r"/_admin/checkout/([^/]+)/settle", path)):
            try:
                self._send_json(200, state.settle_checkout(match.group(1)))
            except StripeApiError as error:
                self._send_json(error.status, error.body)
        else:
            self._send_json(404, {"error": {"type": "invalid_request_error", "message": f"Unknown admin endpoint {method} {path}"}})


class StripeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.state = StripeState()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@contextmanager
def running_stripe_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[StripeHTTPServer]:
    server = StripeHTTPServer((host, port))
    thread = threading.Thread(target=server.serve_forever, name="stripe-test-double", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------ webhooks


def sign_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: t=<unix time>,v1=<HMAC-SHA256 of
    "<t>.<payload>" keyed with the endpoint's secret>."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def webhook_event(event_type: str, data_object: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> str:
    """A v1 event as Stripe posts it to a webhook endpoint (JSON text)."""
    return json.dumps(
        {
            "id": event_id or new_id("evt_", 24),
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()) if created is None else created,
            "data": {"object": data_object},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    with running_stripe_server(args.host, args.port) as server:
        print(f"Stripe test double at {server.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
