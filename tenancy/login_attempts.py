"""How django-axes names the account of a sign-in attempt: the email as the login form
cleans it (trimmed, lower case), whichever of the request or the credentials it reads, so
"Ada@X.test" and "ada@x.test" count against one account."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def attempted_account(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    raw = (credentials or {}).get("username") or request.POST.get("username", "")
    return str(raw).strip().lower()
