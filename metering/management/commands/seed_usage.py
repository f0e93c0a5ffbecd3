"""`manage.py seed_usage`: a few days of varied, made-up usage for one organization, so
the usage dashboards can be seen (and looked at) without sending thousands of requests.

It writes events the way the ingester does (metering.ingest.write_batch, rollups
included), with request ids that say `seed_`: several models, regions and keys, a daily
rhythm, a few client errors and one short incident of server errors. Each run adds more.
Requests to deployments cost and are charged nothing per token (their GPU time is billed);
those to external providers are charged their cost, as the default price book (no markup,
no price for these names) charges them.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from deployments.models import Deployment
from metering import ingest
from metering.records import UsageRecord
from tenancy import services
from tenancy.context import OrgContext
from tenancy.models import ApiKey, Organization, Role

# (model asked for, route, deployment name or "", region, share, median latency ms,
#  input price, output price per million tokens, typical output tokens)
TRAFFIC = [
    ("chat-default", "chat-default", "chat", "us-east", 0.38, 180.0, "0.20", "0.60", 120),
    ("chat-default", "chat-default", "chat", "eu-west", 0.17, 210.0, "0.20", "0.60", 120),
    ("gpt-4o-mini", "gpt-4o-mini", "", "us-east", 0.22, 420.0, "0.15", "0.60", 180),
    ("embed", "", "embed", "us-east", 0.15, 22.0, "0.02", "0", 0),
    ("llama-70b", "llama-70b", "", "eu-west", 0.08, 900.0, "0.90", "0.90", 260),
]
KEY_NAMES = ["backend-prod", "batch-jobs", "notebook"]


class Command(BaseCommand):
    help = "Add a few days of made-up usage to an organization (for looking at the usage dashboards)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--org", default="demo-org", help="Organization slug (default: demo-org, from seed_demo).")
        parser.add_argument("--days", type=int, default=8)
        parser.add_argument("--per-hour", type=int, default=90, help="Average requests per hour.")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args: object, **options: object) -> None:
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organization {options['org']!r}; run `manage.py seed_demo` or pass --org.")
        records = seed_records(org, days=int(options["days"]), per_hour=int(options["per_hour"]), rng=random.Random(int(options["seed"])))  # type: ignore[call-overload]
        for start in range(0, len(records), 2000):
            ingest.write_batch(records[start : start + 2000])
        self.stdout.write(f"Added {len(records)} usage events to {org.name} over the last {options['days']} days.")


def _keys(org: Organization) -> list[str]:
    keys = list(ApiKey.objects.for_org(org).filter(revoked_at=None, name__in=KEY_NAMES).values_list("id", flat=True))
    if not keys:
        owner = org.memberships.filter(role=Role.OWNER).select_related("user").first()
        ctx = OrgContext(organization=org, role=Role.OWNER, user=owner.user if owner else None)
        keys = [services.create_api_key(ctx, name=name, scopes=["inference"]).api_key.id for name in KEY_NAMES]
    return keys


def seed_records(org: Organization, *, days: int, per_hour: int, rng: random.Random) -> list[UsageRecord]:
    deployments = dict(Deployment.objects.for_org(org).filter(deleted_at=None).values_list("name", "id"))
    keys = _keys(org)
    key_weights = [0.6, 0.3, 0.1][: len(keys)]
    now = timezone.now()
    incident = now - timedelta(hours=30)  # half an hour of 5xx from one provider
    records: list[UsageRecord] = []
    hour = now - timedelta(days=days)
    while hour < now:
        local_hour = (hour.hour + 1) % 24
        rhythm = 1.0 + 0.65 * math.sin((local_hour - 8) / 24 * 2 * math.pi) + (0.25 if hour.weekday() < 5 else -0.2)
        # The last two hours are busier, so the one-hour view has something to show.
        busy = 4.0 if now - hour < timedelta(hours=2) else 1.0
        count = max(0, int(rng.gauss(per_hour * rhythm * busy, per_hour * 0.08)))
        for _ in range(count):
            at = hour + timedelta(seconds=rng.uniform(0, 3600))
            if at >= now:
                continue
            model, route, deployment, region, _, median, in_price, out_price, out_tokens = rng.choices(
                TRAFFIC, weights=[t[4] for t in TRAFFIC]
            )[0]
            status, error_code = 200, ""
            roll = rng.random()
            if abs((at - incident).total_seconds()) < 1800 and model == "gpt-4o-mini" and roll < 0.35:
                status, error_code = 502, "upstream_error"
            elif roll < 0.012:
                status, error_code = 429, "rate_limited"
            elif roll < 0.02:
                status, error_code = 400, "invalid_request"
            input_tokens = int(rng.lognormvariate(math.log(300), 0.6)) if status == 200 else 0
            output_tokens = int(rng.lognormvariate(math.log(out_tokens), 0.5)) if status == 200 and out_tokens else 0
            cost = (Decimal(input_tokens) * Decimal(in_price) + Decimal(output_tokens) * Decimal(out_price)) / Decimal(1_000_000)
            if deployment:
                cost = Decimal(0)
            latency = rng.lognormvariate(math.log(median), 0.35) if status < 500 else rng.uniform(2000, 8000)
            records.append(
                UsageRecord(
                    request_id=f"seed_{uuid.UUID(int=rng.getrandbits(128)).hex}",
                    organization_id=org.pk,
                    at=at,
                    key_id=rng.choices(keys, weights=key_weights)[0] if rng.random() > 0.04 else "",
                    endpoint="embeddings" if model == "embed" else "chat/completions",
                    model=model,
                    route=route,
                    target=f"deployment:{deployment}" if deployment else f"provider:{model}",
                    deployment_id=deployments.get(deployment, "") if deployment else "",
                    region=region,
                    status=status,
                    error_code=error_code,
                    streamed=model != "embed" and rng.random() < 0.5,
                    attempts=1,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    latency_ms=round(latency, 3),
                    ttft_ms=None,
                    cost=cost.quantize(Decimal("1e-12")),
                    charge=cost.quantize(Decimal("1e-12")),
                    served_model=model,
                )
            )
        hour += timedelta(hours=1)
    records.sort(key=lambda r: r.at)
    return records
