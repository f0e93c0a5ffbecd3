"""Sign-up, the landing redirect, creating an organization, accepting an invitation."""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from billing import accounts as billing_accounts
from console.forms import OrganizationForm, SignupForm
from tenancy import access, selectors, services, throttle
from tenancy import signup as signup_service
from tenancy.errors import ServiceError
from tenancy.models import User


def signed_in(request: HttpRequest) -> User:
    """The user of a view behind login_required."""
    return cast(User, request.user)


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    slug = request.session.get(access.ACTIVE_ORG_SESSION_KEY)
    if slug and selectors.membership_in(request.user, slug):  # type: ignore[arg-type]
        return redirect("overview", org_slug=slug)
    first = selectors.memberships_of(request.user).first()  # type: ignore[arg-type]
    if first is None:
        return redirect("create-organization")
    return redirect("overview", org_slug=first.organization.slug)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        target = request.GET.get("next", "")
        local = target.startswith("/") and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        data = form.cleaned_data
        signup_service.sign_up(
            signup_service.SignupRequest(
                email=data["email"], full_name=data["full_name"], password=data["password1"], next_path=target if local else ""
            )
        )
        return redirect("signup-sent")  # the same answer whether or not the address had an account
    return render(request, "console/signup.html", {"form": form}, status=400 if form.errors else 200)


def signup_sent(request: HttpRequest) -> HttpResponse:
    return render(request, "console/signup_sent.html")


def signup_confirm(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = signup_service.confirm(token)
    except signup_service.InvalidConfirmation:
        return render(request, "console/signup_invalid.html", status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    target = request.GET.get("next", "")
    local = target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    if local:
        return HttpResponseRedirect(target)  # e.g. back to an invitation link
    return redirect("create-organization")


@login_required
@require_http_methods(["GET", "POST"])
def create_organization(request: HttpRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = billing_accounts.create_organization(
                signed_in(request),
                form.cleaned_data["name"],  # type: ignore[arg-type]
                ip_address=access.client_ip(request),
                request_id=access.request_id(request),
            )
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            messages.success(request, f"{org.name} is ready.")
            return redirect("overview", org_slug=org.slug)
    return render(request, "console/create_organization.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.find_pending_invitation(token)
    if request.method == "POST" and invitation is not None:
        try:
            membership = services.accept_invitation(
                signed_in(request),
                token,
                ip_address=access.client_ip(request),
                request_id=access.request_id(request),  # type: ignore[arg-type]
            )
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"You joined {membership.organization.name}.")
            return redirect("overview", org_slug=membership.organization.slug)
    status = 200 if invitation is not None else 404
    return render(request, "console/accept_invitation.html", {"invitation": invitation}, status=status)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset view with a limit on the emails it sends: per address, and per client
    address, an hour. Past it, the answer is the same "sent" page and nothing is sent, so
    neither a mailbox can be flooded nor anything learned about which accounts exist."""

    def form_valid(self, form: Form) -> HttpResponse:
        email = form.cleaned_data["email"].strip().lower()
        client = self.request.META.get("REMOTE_ADDR", "")
        within = throttle.allow(
            key=f"password-reset:email:{email}", limit=settings.PASSWORD_RESETS_PER_EMAIL_PER_HOUR, window_s=3600
        ) and throttle.allow(key=f"password-reset:client:{client}", limit=settings.PASSWORD_RESETS_PER_CLIENT_PER_HOUR, window_s=3600)
        if within:
            return super().form_valid(form)
        return HttpResponseRedirect(self.get_success_url())
