"""Where new replicas go: active clusters in the allowed regions with free GPUs of the
right type, spread across regions when a deployment has several, and within a region to
the cluster with the most free GPUs. A GPU costs the same on every cluster (one price book,
deployments.prices), so price does not choose between them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    cluster: str
    region: str
    free: int  # free GPUs of the wanted type


def place(count: int, capacities: list[Capacity], allowed_regions: list[str], existing_by_region: dict[str, int]) -> list[str]:
    """Cluster names for up to `count` new replicas; fewer when capacity runs out.
    Each replica goes to the allowed region holding the fewest replicas so far, and there
    to the cluster with the most free GPUs left; ties go by cluster name."""
    allowed = set(allowed_regions)
    free = {capacity.cluster: capacity.free for capacity in capacities if capacity.region in allowed and capacity.free > 0}
    usable = sorted((capacity for capacity in capacities if capacity.cluster in free), key=lambda c: c.cluster)
    per_region = Counter({region: existing_by_region.get(region, 0) for region in allowed})
    chosen: list[str] = []
    for _ in range(count):
        options = [capacity for capacity in usable if free[capacity.cluster] > 0]
        if not options:
            break
        best = min(options, key=lambda c: (per_region[c.region], -free[c.cluster], c.cluster))
        free[best.cluster] -= 1
        per_region[best.region] += 1
        chosen.append(best.cluster)
    return chosen
