from __future__ import annotations

from deployments.placement import Capacity, place

CLUSTERS = [
    Capacity("us-east-a", "us-east", free=2),
    Capacity("us-east-b", "us-east", free=4),
    Capacity("eu-west-a", "eu-west", free=3),
    Capacity("ap-south-a", "ap-south", free=8),
]


def test_a_single_replica_goes_to_the_allowed_cluster_with_the_most_free_gpus() -> None:
    assert place(1, CLUSTERS, ["us-east", "eu-west"], {}) == ["us-east-b"]


def test_replicas_spread_across_allowed_regions() -> None:
    chosen = place(4, CLUSTERS, ["us-east", "eu-west"], {})
    assert sorted(chosen) == ["eu-west-a", "eu-west-a", "us-east-b", "us-east-b"]


def test_existing_replicas_count_towards_the_spread() -> None:
    assert place(1, CLUSTERS, ["us-east", "eu-west"], {"us-east": 2}) == ["eu-west-a"]


def test_regions_outside_the_allow_list_are_never_used() -> None:
    chosen = place(10, CLUSTERS, ["eu-west"], {})
    assert chosen == ["eu-west-a"] * 3  # capacity runs out; the roomy ap-south cluster is not allowed


def test_no_capacity_places_nothing() -> None:
    full = [Capacity("x", "us-east", free=0)]
    assert place(2, full, ["us-east"], {}) == []
