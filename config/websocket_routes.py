"""WebSocket routes."""

from __future__ import annotations

from django.urls import path

from deployments.consumers import DeploymentStatusConsumer
from metering.consumers import UsageConsumer

websocket_urlpatterns = [
    path("ws/o/<slug:org_slug>/deployments/<str:deployment_id>/", DeploymentStatusConsumer.as_asgi()),
    path("ws/o/<slug:org_slug>/usage/", UsageConsumer.as_asgi()),
]
