"""WebSocket routes. Live usage and deployment status consumers join this list with their issues."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
