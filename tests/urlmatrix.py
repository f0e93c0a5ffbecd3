"""Every route of the URL configuration, with its parameters, for the isolation and role
matrices. A new route is picked up here without anyone adding it by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "/o/<slug:org_slug>/keys/<str:key_id>/revoke/"
    name: str | None
    callback: object

    @property
    def params(self) -> list[str]:
        return [match.group("name") for match in _PARAM.finditer(self.template)]

    @property
    def is_api(self) -> bool:
        return self.template.startswith("/api/")

    def build(self, **values: str) -> str:
        return _PARAM.sub(lambda match: values[match.group("name")], self.template)

    @property
    def api_methods(self) -> list[str]:
        view_class = getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)
        if view_class is None:
            return ["get"]
        return [method for method in ("get", "post", "put", "patch", "delete") if hasattr(view_class, method)]


def _walk(patterns: list, prefix: str) -> list[Route]:  # type: ignore[type-arg]
    routes: list[Route] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes.extend(_walk(pattern.url_patterns, prefix + str(pattern.pattern)))
        elif isinstance(pattern, URLPattern):
            routes.append(Route(template="/" + prefix + str(pattern.pattern), name=pattern.name, callback=pattern.callback))
    return routes


def all_routes() -> list[Route]:
    return [route for route in _walk(get_resolver().url_patterns, "") if not route.template.startswith("/django-admin/")]
