from __future__ import annotations

from django.urls import path

from tenancy.api import views

urlpatterns = [
    path("organization/", views.OrganizationView.as_view(), name="api-organization"),
    path("members/", views.MemberListView.as_view(), name="api-members"),
    path("members/<str:member_id>/", views.MemberDetailView.as_view(), name="api-member"),
    path("invitations/", views.InvitationListView.as_view(), name="api-invitations"),
    path("invitations/<str:invitation_id>/", views.InvitationDetailView.as_view(), name="api-invitation"),
    path("keys/", views.ApiKeyListView.as_view(), name="api-keys"),
    path("keys/<str:key_id>/", views.ApiKeyDetailView.as_view(), name="api-key"),
    path("keys/<str:key_id>/rotate/", views.ApiKeyRotateView.as_view(), name="api-key-rotate"),
    path("audit-log/", views.AuditListView.as_view(), name="api-audit-log"),
    path("audit-log/<str:entry_id>/", views.AuditDetailView.as_view(), name="api-audit-entry"),
]
