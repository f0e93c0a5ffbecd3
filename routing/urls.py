from __future__ import annotations

from django.urls import path

from routing import views

urlpatterns = [
    path("", views.routing_index, name="routing"),
    path("new/", views.route_create, name="route-create"),
    path("playground/", views.playground, name="playground"),
    path("providers/new/", views.provider_create, name="provider-create"),
    path("providers/<str:provider_id>/edit/", views.provider_edit, name="provider-edit"),
    path("providers/<str:provider_id>/delete/", views.provider_delete, name="provider-delete"),
    path("<str:route_id>/", views.route_detail, name="route-detail"),
    path("<str:route_id>/edit/", views.route_edit, name="route-edit"),
    path("<str:route_id>/delete/", views.route_delete, name="route-delete"),
]
