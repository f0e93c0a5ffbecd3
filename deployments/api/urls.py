from __future__ import annotations

from django.urls import path

from deployments.api import model_views, views

urlpatterns = [
    path("deployments/", views.DeploymentListView.as_view(), name="api-deployments"),
    path("deployments/<str:deployment_id>/", views.DeploymentDetailView.as_view(), name="api-deployment"),
    path("deployments/<str:deployment_id>/revisions/", views.RevisionListView.as_view(), name="api-deployment-revisions"),
    path("deployments/<str:deployment_id>/promote/", views.PromoteView.as_view(), name="api-deployment-promote"),
    path("deployments/<str:deployment_id>/rollback/", views.RollbackView.as_view(), name="api-deployment-rollback"),
    path("deployments/<str:deployment_id>/staging/", views.StagingView.as_view(), name="api-deployment-staging"),
    path(
        "deployments/<str:deployment_id>/promote-to-production/",
        views.PromoteToProductionView.as_view(),
        name="api-deployment-promote-to-production",
    ),
    path("deployments/<str:deployment_id>/canary/", views.CanaryView.as_view(), name="api-deployment-canary"),
    *[
        path(
            f"deployments/<str:deployment_id>/canary/{action}/",
            views.CanaryActionView.as_view(action_name=action),
            name=f"api-deployment-canary-{action}",
        )
        for action in views.CanaryActionView.actions
    ],
    path("gpu-types/", views.GpuTypeListView.as_view(), name="api-gpu-types"),
    path("regions/", views.RegionListView.as_view(), name="api-regions"),
    path("catalog/models/", views.CatalogModelListView.as_view(), name="api-catalog-models"),
    path("models/", model_views.ModelListView.as_view(), name="api-models"),
    path("models/uploads/", model_views.UploadListView.as_view(), name="api-model-uploads"),
    path("models/uploads/<str:upload_id>/", model_views.UploadDetailView.as_view(), name="api-model-upload"),
    path("models/uploads/<str:upload_id>/complete/", model_views.UploadCompleteView.as_view(), name="api-model-upload-complete"),
    path("models/uploads/<str:upload_id>/files/<path:file_path>", model_views.UploadChunkView.as_view(), name="api-model-upload-file"),
    path("models/<str:model_id>/", model_views.ModelDetailView.as_view(), name="api-model"),
]
