"""A closed invoice as CSV and as PDF, line by line as stored (never re-rated)."""

from __future__ import annotations

import csv
import io

from fpdf import FPDF

from billing.models import Invoice
from tenancy.spreadsheet import safe_row


def _rows(invoice: Invoice) -> list[list[str]]:
    rows = [
        [line.description, f"{line.quantity.normalize():f}", line.unit, f"{line.unit_price.normalize():f}", f"{line.amount}"]
        for line in invoice.lines.all()
    ]
    rows.append(["Subtotal", "", "", "", f"{invoice.subtotal}"])
    if invoice.minimum_adjustment:
        rows.append(["Committed monthly minimum", "", "", "", f"{invoice.minimum_adjustment}"])
    if invoice.credits_applied:
        rows.append(["Credits applied", "", "", "", f"-{invoice.credits_applied}"])
    if invoice.carried_adjustments:
        rows.append(["Carried from earlier months (reconciled with Stripe)", "", "", "", f"{invoice.carried_adjustments}"])
    rows.append(["Total", "", "", "", f"{invoice.total}"])
    return rows


def as_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "invoice",
            invoice.pk,
            "period",
            f"{invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d}",
            "currency",
            invoice.currency.upper(),
        ]
    )
    writer.writerow(["description", "quantity", "unit", "unit_price", "amount"])
    writer.writerows(safe_row(row) for row in _rows(invoice))
    return out.getvalue()


def _latin1(text: str) -> str:
    # The PDF's built-in fonts cover Latin-1; anything else (an organization's name in
    # another script) shows as "?" rather than failing the download.
    return text.encode("latin-1", "replace").decode("latin-1")


def as_pdf(invoice: Invoice) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Switchboard invoice", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Invoice", invoice.pk),
        ("Organization", invoice.organization.name),
        ("Period", f"{invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d} (UTC)"),
        ("Plan", invoice.get_plan_display()),
        ("Currency", invoice.currency.upper()),
        ("Closed", f"{invoice.closed_at:%Y-%m-%d %H:%M} UTC"),
    ):
        pdf.cell(0, 6, _latin1(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = (78, 28, 30, 32, 22)
    pdf.set_font("Helvetica", "B", 9)
    for width, title in zip(widths, ("Description", "Quantity", "Unit", "Unit price", "Amount"), strict=True):
        pdf.cell(width, 7, title, border="B", align="R" if title in ("Quantity", "Unit price", "Amount") else "L")
    pdf.ln()
    pdf.set_font("Helvetica", size=9)
    for row in _rows(invoice):
        bold = row[0] in ("Subtotal", "Total")
        pdf.set_font("Helvetica", "B" if bold else "", 9)
        for index, (width, value) in enumerate(zip(widths, row, strict=True)):
            pdf.cell(width, 6, _latin1(value[:48]), align="R" if index in (1, 3, 4) else "L")
        pdf.ln()
    return bytes(pdf.output())
