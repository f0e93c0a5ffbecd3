"""Whether a route's region policy can be served by its targets: where each target may run
(a deployment's allowed regions, a provider's region) and where it runs now (a
deployment's READY replicas). A route limited to regions none of its targets can reach
answers 503 to every request; the console warns when such a route is saved and on its
page, instead of accepting it silently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployments.models import Replica
from routing.models import RouteTarget
from tenancy.models import Organization


@dataclass(frozen=True)
class TargetReach:
    label: str
    may_run_in: tuple[str, ...]  # where it can serve: a provider's region, a deployment's allowed regions
    runs_in: tuple[str, ...]  # where it serves now: a provider's region, a deployment's READY replicas' regions
    scales_to_zero: bool = False  # a deployment at zero replicas, which a request wakes


def reach_of(org: Organization, targets: Sequence[RouteTarget]) -> list[TargetReach]:
    deployment_ids = [t.deployment_id for t in targets if t.deployment_id]
    ready: dict[str, set[str]] = {}
    rows = Replica.objects.for_org(org).filter(deployment_id__in=deployment_ids, state=Replica.State.READY)
    for deployment_id, region in rows.values_list("deployment_id", "cluster__region"):
        ready.setdefault(deployment_id, set()).add(region)
    reaches = []
    for target in targets:
        if target.deployment is not None:
            revision = target.deployment.current_revision
            allowed = tuple(revision.allowed_regions) if revision else ()
            running = tuple(sorted(ready.get(target.deployment_id or "", ())))
            idle = revision is not None and revision.min_replicas == 0 and not running
            reaches.append(TargetReach(label=target.label, may_run_in=allowed, runs_in=running, scales_to_zero=idle))
        elif target.provider is not None:
            region = (target.provider.region,)
            reaches.append(TargetReach(label=target.label, may_run_in=region, runs_in=region))
    return reaches


def coverage_warning(*, allowed: Sequence[str], reaches: Sequence[TargetReach]) -> str | None:
    """What is wrong with serving a route limited to `allowed` regions, or None. Empty
    `allowed`: any region, always served by some target that runs."""
    if not allowed or not reaches:
        return None
    policy = ", ".join(allowed)
    within = set(allowed)
    never = [r for r in reaches if not within & set(r.may_run_in)]
    if len(never) == len(reaches):
        where = "; ".join(f"{r.label} only in {', '.join(r.may_run_in) or 'no region'}" for r in never)
        return (
            f"No target of this route can serve in {policy} ({where}): every request will be refused with 503. "
            "Allow one of their regions, or add a target there."
        )
    notes = []
    if never:
        notes.append(f"{', '.join(r.label for r in never)} cannot serve in {policy} and will be skipped.")
    possible = [r for r in reaches if within & set(r.may_run_in)]
    # A deployment at zero is woken by a request; its replica lands in one of its own regions.
    if not any(within & set(r.runs_in) or (r.scales_to_zero and set(r.may_run_in) <= within) for r in possible):
        running = "; ".join(f"{r.label} runs in {', '.join(r.runs_in) or 'no region yet'}" for r in possible)
        notes.append(f"Nothing serves in {policy} right now ({running}): requests are refused with 503 until a replica runs there.")
    return " ".join(notes) or None
