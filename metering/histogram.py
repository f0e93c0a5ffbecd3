"""Mergeable latency histograms: log-spaced buckets, so percentiles of any merge of them
(minutes into hours, regions into a total) are as accurate as those of the raw values.

Bucket i holds values in [GROWTH^i, GROWTH^(i+1)) milliseconds (bucket 0 also holds
anything below 1 ms). A percentile is reported as its bucket's geometric middle, within
about 2.5% of the true value, at any scale, from any number of merged histograms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GROWTH = 1.05
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(value_ms: float) -> int:
    if value_ms < 1.0:
        return 0
    return int(math.log(value_ms) / _LOG_GROWTH)


def add(histogram: dict[str, int], value_ms: float, count: int = 1) -> None:
    key = str(bucket_of(value_ms))
    histogram[key] = histogram.get(key, 0) + count


def merge(histograms: Iterable[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for histogram in histograms:
        merge_into(merged, histogram)
    return merged


def merge_into(target: dict[str, int], source: Mapping[str, int]) -> None:
    for key, count in source.items():
        target[key] = target.get(key, 0) + count


def percentile(histogram: Mapping[str, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for key in sorted(histogram, key=int):
        seen += histogram[key]
        if seen >= rank:
            index = int(key)
            return GROWTH ** (index + 0.5) if index > 0 else 1.0
    raise AssertionError("unreachable: the ranks add up to the total")
