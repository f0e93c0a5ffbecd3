from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("", views.usage, name="usage"),
]
