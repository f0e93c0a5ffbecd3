from __future__ import annotations

from django.urls import path

from routing.api import views

urlpatterns = [
    path("routes/", views.RouteListView.as_view(), name="api-routes"),
    path("routes/<str:route_id>/", views.RouteDetailView.as_view(), name="api-route"),
    path("providers/", views.ProviderListView.as_view(), name="api-providers"),
    path("providers/<str:provider_id>/", views.ProviderDetailView.as_view(), name="api-provider"),
]
