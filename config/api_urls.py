"""/api/v1/: the management API, each part's endpoints, the schema and its reference."""

from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from tenancy.api.errors import unknown_endpoint

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="api-schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[], authentication_classes=[]),
        name="api-docs",
    ),
    path("", include("tenancy.api.urls")),
    path("", include("deployments.api.urls")),
    path("", include("routing.api.urls")),
    path("", include("metering.api.urls")),
    path("", include("billing.api.urls")),
    # Anything else under /api/ answers in the API's error shape, not an HTML page.
    re_path(r"^.*$", unknown_endpoint),
]
