from __future__ import annotations

import httpx


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics, summed over series matching the labels."""
    return metric_in(httpx.get(base_url + "/metrics").text, name, **labels)


def metric_in(text: str, name: str, **labels: str) -> float:
    """The same, from a scrape already taken."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{key}="{val}"' in series for key, val in labels.items()):
            total += float(value)
    return total
