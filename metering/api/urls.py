from __future__ import annotations

from django.urls import path

from metering.api import request_views, views

urlpatterns = [
    path("usage/", views.UsageView.as_view(), name="api-usage"),
    path("usage/events.csv", views.UsageEventsCsvView.as_view(), name="api-usage-events-csv"),
    path("usage/gpu-seconds/", views.GpuSecondsView.as_view(), name="api-usage-gpu-seconds"),
    path("usage/series.csv", views.UsageRollupsCsvView.as_view(), name="api-usage-series-csv"),
    path("requests/", request_views.RequestListView.as_view(), name="api-requests"),
    path("requests/<str:request_id>/", request_views.RequestDetailView.as_view(), name="api-request"),
]
