from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path

from console.forms import EmailAuthenticationForm
from console.views import accounts, audit, deployments, keys, members, models, org_settings, pages, requests, usage

deployment_patterns: list[URLPattern | URLResolver] = [
    path("", deployments.deployment_list, name="deployments"),
    path("new/", deployments.deployment_create, name="deployment-create"),
    path("<str:deployment_id>/", deployments.deployment_detail, name="deployment-detail"),
    path("<str:deployment_id>/scale/", deployments.deployment_scale, name="deployment-scale"),
    path("<str:deployment_id>/promote/", deployments.deployment_promote, name="deployment-promote"),
    path("<str:deployment_id>/rollback/", deployments.deployment_rollback, name="deployment-rollback"),
    path("<str:deployment_id>/canary/start/", deployments.deployment_canary_start, name="deployment-canary-start"),
    path("<str:deployment_id>/canary/<str:action>/", deployments.deployment_canary, name="deployment-canary"),
    path("<str:deployment_id>/staging/", deployments.deployment_staging_create, name="deployment-staging-create"),
    path(
        "<str:deployment_id>/promote-to-production/",
        deployments.deployment_promote_to_production,
        name="deployment-promote-to-production",
    ),
    path("<str:deployment_id>/delete/", deployments.deployment_delete, name="deployment-delete"),
]

org_patterns: list[URLPattern | URLResolver] = [
    path("", pages.overview, name="overview"),
    path("keys/", keys.api_keys, name="keys"),
    path("keys/<str:key_id>/revoke/", keys.revoke_api_key, name="key-revoke"),
    path("keys/<str:key_id>/rotate/", keys.rotate_api_key, name="key-rotate"),
    path("keys/<str:key_id>/limits/", keys.api_key_limits, name="key-limits"),
    path("members/", members.members, name="members"),
    path("members/<str:member_id>/role/", members.change_role, name="member-role"),
    path("members/<str:member_id>/remove/", members.remove_member, name="member-remove"),
    path("invitations/<str:invitation_id>/revoke/", members.revoke_invitation, name="invitation-revoke"),
    path("audit/", audit.audit_log, name="audit"),
    path("audit/<str:entry_id>/", audit.audit_entry, name="audit-entry"),
    path("settings/", org_settings.org_settings, name="settings"),
    path("settings/delete/", org_settings.delete_organization, name="organization-delete"),
    path("usage/", usage.usage, name="usage"),
    path("requests/", requests.requests_list, name="requests"),
    path("requests/<str:request_id>/", requests.request_detail, name="request-detail"),
    path("deployments/", include(deployment_patterns)),
    path("models/", models.model_list, name="models"),
    path("models/<str:model_id>/delete/", models.model_delete, name="model-delete"),
    path("routing/", include("routing.urls")),
    path("", include("billing.urls")),
]

account_patterns: list[URLPattern | URLResolver] = [
    path("signup/", accounts.signup, name="signup"),
    path("signup/sent/", accounts.signup_sent, name="signup-sent"),
    path("signup/confirm/<str:token>/", accounts.signup_confirm, name="signup-confirm"),
    path(
        "login/", auth_views.LoginView.as_view(authentication_form=EmailAuthenticationForm, redirect_authenticated_user=True), name="login"
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", accounts.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]

urlpatterns = [
    path("", accounts.home, name="home"),
    path("accounts/", include(account_patterns)),
    path("orgs/new/", accounts.create_organization, name="create-organization"),
    path("invitations/<str:token>/", accounts.accept_invitation, name="accept-invitation"),
    path("o/<slug:org_slug>/", include(org_patterns)),
    path("staff/", include("staff.urls")),
    path("billing/stripe/", include("billing.stripe.urls")),
    path("django-admin/", admin.site.urls),
    path("api/v1/admin/", include("staff.api_urls")),
    path("api/v1/", include("config.api_urls")),
]


# Error answers: config/errors.py.
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
