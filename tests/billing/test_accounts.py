"""How an organization starts paying: on free credit with a hard limit until a payment
method exists, and no more than a few such organizations per person."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client

from billing import accounts, invoices
from billing.models import BillingAccount, Plan
from tenancy.models import AuditEntry, Organization
from tests.conftest import Tenants
from tests.factories import UserFactory


def test_a_new_organization_starts_on_free_credit_with_a_hard_limit(tenants: Tenants) -> None:
    person = UserFactory()
    browser = Client()
    browser.force_login(person)
    answer = browser.post("/orgs/new/", {"name": "Fresh Start"})
    assert answer.status_code == 302
    org = Organization.objects.get(name="Fresh Start")
    assert BillingAccount.objects.get(organization=org).plan == Plan.FREE
    limit = invoices.spend_limit(org)
    assert limit is not None and limit.amount == Decimal("5.00") and "free plan credit" in limit.reason
    assert BillingAccount.objects.filter(organization=tenants.org_b).first() is None  # others unchanged


def test_one_person_cannot_multiply_free_credit(tenants: Tenants) -> None:
    person = UserFactory()
    browser = Client()
    browser.force_login(person)
    for name in ("One", "Two"):
        assert browser.post("/orgs/new/", {"name": name}).status_code == 302
    refused = browser.post("/orgs/new/", {"name": "Three"})
    assert refused.status_code == 400 and "already own 2 organizations on free credit" in refused.content.decode()
    assert not Organization.objects.filter(name="Three").exists()

    # A payment method on one of them frees a place, and moves it to pay as you go.
    two = Organization.objects.get(name="Two")
    assert accounts.payment_method_added(two) is True
    assert accounts.payment_method_added(two) is False  # once
    assert BillingAccount.objects.get(organization=two).plan == Plan.PAY_AS_YOU_GO and invoices.spend_limit(two) is None
    assert AuditEntry.objects.for_org(two).filter(action="billing.plan_changed").count() == 1
    assert browser.post("/orgs/new/", {"name": "Three"}).status_code == 302
