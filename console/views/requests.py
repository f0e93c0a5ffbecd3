"""The console's Requests page: the organization's requests one by one, filtered on every
recorded field, and each request's detail (metering.request_log)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_safe

from console.forms import RequestFilterForm
from metering import request_log
from tenancy import selectors as tenancy_selectors
from tenancy.context import OrgContext
from tenancy.decimals import plain
from tenancy.decorators import org_page
from tenancy.errors import ServiceError


def _key_names(ctx: OrgContext) -> dict[str, str]:
    return dict(tenancy_selectors.api_keys(ctx.organization).values_list("id", "name"))


def _filters(data: dict[str, object]) -> request_log.RequestFilters:
    streamed = {"yes": True, "no": False}.get(str(data.get("streamed") or ""))
    return request_log.RequestFilters(
        since=str(data.get("since") or "24h"),
        key_id=str(data.get("key") or ""),
        model=str(data.get("model") or ""),
        route=str(data.get("route") or ""),
        target=str(data.get("target") or ""),
        region=str(data.get("region") or ""),
        status=str(data.get("status") or "").strip().lower(),
        error_code=str(data.get("error_code") or ""),
        min_latency_ms=data.get("min_latency_ms"),  # type: ignore[arg-type]
        streamed=streamed,
    )


@org_page()
@require_safe
def requests_list(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = RequestFilterForm(request.GET or None)
    now = timezone.now()
    page, problem = None, ""
    if form.is_bound and not form.is_valid():
        problem = "Some filters are not valid; fix the fields marked below."
    else:
        data = form.cleaned_data if form.is_bound else {}
        search = str(data.get("q") or "").strip()
        if search:
            # A request id is looked up, not filtered: it is on every answer's x-request-id.
            if request_log.request_detail(ctx.organization, request_id=search) is not None:
                return redirect("request-detail", org_slug=ctx.organization.slug, request_id=search)
            problem = f"No request {search} in this organization."
        else:
            try:
                after = request_log.Cursor.decode(str(data["after"])) if data.get("after") else None
                page = request_log.requests_page(ctx.organization, filters=_filters(data), now=now, after=after)
            except ServiceError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
                problem = error.message
    since = str(form.cleaned_data.get("since") or "24h") if form.is_bound and form.is_valid() else "24h"
    next_query = ""
    if page is not None and page.next_cursor is not None:
        query = request.GET.copy()
        query["after"] = page.next_cursor.encode()
        next_query = query.urlencode()
    key_names = _key_names(ctx)
    seen = request_log.seen_values(ctx.organization, since=since, now=now)
    rows = [(event, key_names.get(event.key_id, event.key_id), request_log.charge_of(event)) for event in page.rows] if page else []
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "problem": problem,
        "next_query": next_query,
        "filtered": bool(request.GET),
        "seen": seen,
        "seen_keys": [(key_id, key_names.get(key_id, key_id)) for key_id in seen["key_id"]],
        "show_money": ctx.role.sees_money,
        "active_nav": "requests",
    }
    return render(request, "metering/requests.html", context, status=400 if problem and page is None and form.errors else 200)


@org_page()
@require_safe
def request_detail(request: HttpRequest, ctx: OrgContext, request_id: str) -> HttpResponse:
    event = request_log.request_detail(ctx.organization, request_id=request_id)
    if event is None:
        raise Http404("No such request in this organization.")
    context = {
        "event": event,
        "key_name": _key_names(ctx).get(event.key_id, ""),
        "charge": plain(request_log.charge_of(event)) if ctx.role.sees_money else None,
        "show_money": ctx.role.sees_money,
        "active_nav": "requests",
    }
    return render(request, "metering/request_detail.html", context)
