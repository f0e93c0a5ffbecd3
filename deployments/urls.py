from __future__ import annotations

from django.urls import path

from deployments import views

urlpatterns = [
    path("", views.deployment_list, name="deployments"),
    path("new/", views.deployment_create, name="deployment-create"),
    path("<str:deployment_id>/", views.deployment_detail, name="deployment-detail"),
    path("<str:deployment_id>/scale/", views.deployment_scale, name="deployment-scale"),
    path("<str:deployment_id>/promote/", views.deployment_promote, name="deployment-promote"),
    path("<str:deployment_id>/rollback/", views.deployment_rollback, name="deployment-rollback"),
    path("<str:deployment_id>/delete/", views.deployment_delete, name="deployment-delete"),
]
