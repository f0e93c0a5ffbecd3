"""The soak (benchmarks/soak.py) in CI: `up`'s whole embedded stack under mixed gateway,
console and API load for two minutes, with zero 5xx, zero child-process deaths and every
served request's usage event stored exactly once. `manage.py bench soak --minutes N` runs
it longer. It starts its own embedded `up`, so it runs in the embedded pass of CI only."""

from __future__ import annotations

import os

import pytest

from benchmarks import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="the soak runs the embedded stack; once per CI run is enough")
def test_two_minutes_of_mixed_load_on_up() -> None:
    figures = soak.run(seconds=120, log=print)
    print(soak.table(figures))
    assert figures.server_errors == []
    assert figures.deaths == []
    assert figures.served > 50 and figures.stored_once == figures.served
    assert figures.requests > 300
    assert figures.up_exit == 0
