"""Every console form that deletes, revokes, rotates, removes, cancels, rolls back,
cordons or drains asks first (htmx's hx-confirm, with the object named), except the
organization's deletion, which asks for its name to be typed."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FORM = re.compile(r"<form\b[^>]*>", re.DOTALL)
DESTRUCTIVE = re.compile(r"\{% url '[a-z-]*(delete|revoke|rotate|remove|cancel|rollback|cordon|drain)[a-z-]*'")
# Confirmed another way: the owner types the organization's name into the form.
TYPED = {"organization-delete"}


def test_every_destructive_form_asks_first() -> None:
    unconfirmed = []
    checked = 0
    for template in sorted(TEMPLATES.rglob("*.html")):
        for tag in FORM.findall(template.read_text()):
            match = DESTRUCTIVE.search(tag)
            if match is None or any(f"'{name}'" in tag for name in TYPED):
                continue
            checked += 1
            if "hx-confirm=" not in tag:
                unconfirmed.append(f"{template.relative_to(TEMPLATES)}: {tag[:120]}")
    assert checked >= 10  # the pattern still finds the forms it is about
    assert unconfirmed == []
