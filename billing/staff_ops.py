"""Price book management, credits and plans: what platform staff change in the Admin
console, each change audited (tenancy.staff_audit).

Price versions are never edited. A price change is a new version with a later
`effective_from`, on a whole hour (UTC) and not in the past: usage is rated hour by hour
from the version in force at each hour (billing.rating), running invoices show it and
the hours already pushed to Stripe's meters were priced with the versions then in force,
so a version that reached back in time would make those figures disagree. The same rule
holds for an organization's own versions (an enterprise deal): a deal starts at an hour
to come. A version that has not taken effect yet may be cancelled (deleted); one in force
or past never changes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from billing.invoices import account_for
from billing.models import BillingAccount, CreditGrant, ModelPrice, Plan, ProviderMarkup
from deployments.models import GpuPrice, GpuType
from tenancy.decimals import plain
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization
from tenancy.staff_audit import StaffContext, record

MAX_MONEY = Decimal("999999999999.99")  # DecimalField(max_digits=14, decimal_places=2)
PRICE_KINDS = ("model", "gpu", "markup")


def next_whole_hour(now: datetime | None = None) -> datetime:
    now = (now or timezone.now()).astimezone(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    return hour if hour == now else hour + timedelta(hours=1)


def _decimal(
    value: object,
    field: str,
    what: str,
    *,
    places: int,
    integer_digits: int,
    minimum: Decimal = Decimal(0),
    strictly_positive: bool = False,
) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ServiceError(f"{what} must be a number like 1.25.", field=field)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ServiceError(f"{what} must be a number like 1.25.", field=field) from None
    if not number.is_finite():
        raise ServiceError(f"{what} must be a number like 1.25.", field=field)
    if number < minimum or (strictly_positive and number <= 0):
        raise ServiceError(f"{what} must be {'more than' if strictly_positive else 'at least'} {minimum}.", field=field)
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise ServiceError(f"{what} takes at most {places} decimals.", field=field)
    if abs(number) >= Decimal(10) ** integer_digits:
        raise ServiceError(f"{what} must be under {Decimal(10) ** integer_digits}.", field=field)
    return number


def _effective_from(value: datetime | None, now: datetime) -> datetime:
    if value is None:
        raise ServiceError("Say when the version takes effect (a whole hour, UTC).", field="effective_from")
    if timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value.minute or value.second or value.microsecond:
        raise ServiceError("Prices change on a whole hour (UTC), like 2026-12-01 00:00; usage is rated per hour.", field="effective_from")
    if value < now:
        earliest = next_whole_hour(now)
        raise ServiceError(
            "A version cannot take effect in the past: usage already rated (and pushed to Stripe) would change. "
            f"The earliest is {earliest:%Y-%m-%d %H:%M} UTC.",
            field="effective_from",
        )
    return value


def _who(organization: Organization | None) -> str:
    return f"{organization.name}'s" if organization is not None else "the platform"


def price_snapshot(row: Model) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": row.pk,
        "organization": getattr(row, "organization_id", None),
        "effective_from": row.effective_from.isoformat(),  # type: ignore[attr-defined]
    }
    if isinstance(row, ModelPrice):
        return {
            **base,
            "kind": "model",
            "model": row.model,
            "input_price_per_mtok": plain(row.input_price_per_mtok),
            "output_price_per_mtok": plain(row.output_price_per_mtok),
        }
    if isinstance(row, GpuPrice):
        return {**base, "kind": "gpu", "gpu_type": row.gpu_type_id, "price_per_hour": plain(row.price_per_hour)}
    assert isinstance(row, ProviderMarkup)
    return {**base, "kind": "markup", "percent": str(row.percent)}


def _audit_price(
    staff: StaffContext,
    action: str,
    row: Model,
    organization: Organization | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    kind = price_snapshot(row)["kind"]
    record(staff, action, target_type=f"{kind}_price", target_id=str(row.pk), organization=organization, before=before, after=after)


@transaction.atomic
def add_model_price(
    staff: StaffContext,
    *,
    model: str,
    input_price_per_mtok: object,
    output_price_per_mtok: object,
    effective_from: datetime | None,
    organization: Organization | None = None,
    now: datetime | None = None,
) -> ModelPrice:
    now = now or timezone.now()
    model = (model or "").strip()
    if not model or len(model) > 100:
        raise ServiceError("Name the model (up to 100 characters), as callers name it in requests.", field="model")
    prices = {
        name: _decimal(value, name, label, places=9, integer_digits=9)
        for name, value, label in (
            ("input_price_per_mtok", input_price_per_mtok, "The input price per million tokens"),
            ("output_price_per_mtok", output_price_per_mtok, "The output price per million tokens"),
        )
    }
    start = _effective_from(effective_from, now)
    if ModelPrice.objects.filter(organization=organization, model=model, effective_from=start).exists():
        raise Conflict(
            f"{_who(organization).capitalize()} price book already has a version of {model} from {start:%Y-%m-%d %H:%M} UTC.",
            field="effective_from",
        )
    row = ModelPrice.objects.create(organization=organization, model=model, effective_from=start, **prices)
    _audit_price(staff, "price.model_version_added", row, organization, after=price_snapshot(row))
    return row


@transaction.atomic
def add_gpu_price(
    staff: StaffContext,
    *,
    gpu_type: str,
    price_per_hour: object,
    effective_from: datetime | None,
    organization: Organization | None = None,
    now: datetime | None = None,
) -> GpuPrice:
    now = now or timezone.now()
    if not GpuType.objects.filter(code=gpu_type).exists():
        codes = ", ".join(GpuType.objects.values_list("code", flat=True))
        raise ServiceError(f"Unknown GPU type {gpu_type!r}; choose one of {codes}.", field="gpu_type")
    price = _decimal(price_per_hour, "price_per_hour", "The price per GPU-hour", places=9, integer_digits=9)
    start = _effective_from(effective_from, now)
    if GpuPrice.objects.filter(organization=organization, gpu_type_id=gpu_type, effective_from=start).exists():
        raise Conflict(
            f"{_who(organization).capitalize()} price book already has a {gpu_type} version from {start:%Y-%m-%d %H:%M} UTC.",
            field="effective_from",
        )
    row = GpuPrice.objects.create(organization=organization, gpu_type_id=gpu_type, price_per_hour=price, effective_from=start)
    _audit_price(staff, "price.gpu_version_added", row, organization, after=price_snapshot(row))
    return row


@transaction.atomic
def add_markup(
    staff: StaffContext,
    *,
    percent: object,
    effective_from: datetime | None,
    organization: Organization | None = None,
    now: datetime | None = None,
) -> ProviderMarkup:
    now = now or timezone.now()
    value = _decimal(percent, "percent", "The markup", places=3, integer_digits=4)
    start = _effective_from(effective_from, now)
    if ProviderMarkup.objects.filter(organization=organization, effective_from=start).exists():
        raise Conflict(
            f"{_who(organization).capitalize()} price book already has a markup version from {start:%Y-%m-%d %H:%M} UTC.",
            field="effective_from",
        )
    row = ProviderMarkup.objects.create(organization=organization, percent=value, effective_from=start)
    _audit_price(staff, "price.markup_version_added", row, organization, after=price_snapshot(row))
    return row


def _price_model(kind: str) -> type[ModelPrice] | type[GpuPrice] | type[ProviderMarkup]:
    if kind == "model":
        return ModelPrice
    if kind == "gpu":
        return GpuPrice
    if kind == "markup":
        return ProviderMarkup
    raise ServiceError(f"Unknown price kind {kind!r}; use model, gpu or markup.", field="kind")


@transaction.atomic
def cancel_upcoming(staff: StaffContext, kind: str, version_id: int, *, now: datetime | None = None) -> None:
    """Deletes a version that has not taken effect; one in force or past is kept forever."""
    now = now or timezone.now()
    model = _price_model(kind)
    row = model.objects.select_for_update().filter(pk=version_id).first()  # no join: FOR UPDATE refuses a nullable outer join
    if row is None:
        raise ServiceError("No such price version.", field="version")
    if row.effective_from <= now:
        raise Conflict("This version is already in force (or past) and can never change; add a new version instead.")
    before = price_snapshot(row)
    organization = row.organization
    row.delete()
    record(
        staff,
        f"price.{kind}_version_cancelled",
        target_type=f"{kind}_price",
        target_id=str(version_id),
        organization=organization,
        before=before,
    )


# ---------------------------------------------------------------------------------------
# Credits and plans


def credit_snapshot(grant: CreditGrant) -> dict[str, Any]:
    return {
        "id": grant.pk,
        "amount": plain(grant.amount),
        "reason": grant.reason,
        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
    }


@transaction.atomic
def grant_credit(
    staff: StaffContext, org: Organization, *, amount: object, reason: str, expires_at: datetime | None = None, now: datetime | None = None
) -> CreditGrant:
    now = now or timezone.now()
    value = _decimal(amount, "amount", "The credit", places=2, integer_digits=12, strictly_positive=True)
    reason = (reason or "").strip()
    if not reason or len(reason) > 200:
        raise ServiceError("Give a reason (up to 200 characters); the tenant sees it on its Billing page.", field="reason")
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= now:
            raise ServiceError("The expiry must be in the future; leave it empty for credit that never expires.", field="expires_at")
    grant = CreditGrant.objects.create(organization=org, amount=value, reason=reason, granted_at=now, expires_at=expires_at)
    record(staff, "billing.credit_granted", target_type="credit_grant", target_id=grant.pk, organization=org, after=credit_snapshot(grant))
    return grant


def plan_snapshot(account: BillingAccount) -> dict[str, Any]:
    return {"plan": account.plan, "committed_monthly_minimum": str(account.committed_monthly_minimum), "currency": account.currency}


@transaction.atomic
def set_plan(staff: StaffContext, org: Organization, *, plan: str, committed_monthly_minimum: object = "0") -> BillingAccount:
    """The plan applies to the whole current month: the free plan's credit, or the
    enterprise minimum, shows on the running invoice at once."""
    if plan not in Plan.values:
        raise ServiceError(f"Unknown plan {plan!r}; choose {', '.join(Plan.values)}.", field="plan")
    minimum = _decimal(
        committed_monthly_minimum if committed_monthly_minimum not in (None, "") else "0",
        "committed_monthly_minimum",
        "The committed minimum",
        places=2,
        integer_digits=12,
    )
    if minimum and plan != Plan.ENTERPRISE:
        raise ServiceError(
            "A committed monthly minimum belongs to the enterprise plan; set it to 0 or choose Enterprise.",
            field="committed_monthly_minimum",
        )
    account = BillingAccount.objects.select_for_update().filter(organization=org).first() or account_for(org)
    before = plan_snapshot(account)
    account.plan, account.committed_monthly_minimum = plan, minimum
    after = plan_snapshot(account)
    if before == after:
        return account  # nothing changed: no write, no entry
    account.save()
    record(staff, "billing.plan_changed", target_type="billing_account", target_id=org.pk, organization=org, before=before, after=after)
    return account


# ---------------------------------------------------------------------------------------
# Reading the price book


@dataclass
class PriceLine:
    """One price (a model's, a GPU type's, the markup) of one price book: the version in
    force now, those to come, and how many came before."""

    kind: str
    key: str
    organization: Organization | None
    current: Any = None
    upcoming: list[Any] = field(default_factory=list)
    earlier: int = 0


def price_lines(*, overrides: bool, organization: Organization | None = None, now: datetime | None = None) -> list[PriceLine]:
    """The platform's price book (overrides=False), or the organizations' own versions
    (every organization's, or one's)."""
    now = now or timezone.now()
    lines: dict[tuple[str, str, str], PriceLine] = {}
    sources: list[tuple[str, Any, str]] = [
        ("model", ModelPrice.objects.select_related("organization"), "model"),
        ("gpu", GpuPrice.objects.select_related("organization"), "gpu_type_id"),
        ("markup", ProviderMarkup.objects.select_related("organization"), ""),
    ]
    for kind, rows, attribute in sources:
        rows = rows.filter(organization__isnull=not overrides)
        if organization is not None:
            rows = rows.filter(organization=organization)
        versions: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
        for row in rows.order_by("effective_from", "pk"):
            key = getattr(row, attribute) if attribute else "provider markup"
            versions[(row.organization_id or "", kind, key)].append(row)
        for group, ordered in versions.items():
            line = PriceLine(kind=kind, key=group[2], organization=ordered[0].organization)
            started = [row for row in ordered if row.effective_from <= now]
            line.current = started[-1] if started else None
            line.earlier = max(0, len(started) - 1)
            line.upcoming = [row for row in ordered if row.effective_from > now]
            lines[group] = line
    order = {kind: position for position, kind in enumerate(PRICE_KINDS)}
    return sorted(lines.values(), key=lambda line: (line.organization.name if line.organization else "", order[line.kind], line.key))
