"""What replicas actually serve: tokens per busy second, per model and GPU type.

Each scrape of a READY replica's /metrics (deployments.scaling) yields its counters:
tokens processed (prompt plus generation) and busy seconds (time with work in flight),
with the server's start time. Between a replica's baseline and a later scrape that holds at
least MIN_TOKENS tokens, tokens / busy seconds is one sample; samples fold into the
(model, GPU type) estimate in the Throughput table as an exponentially weighted average.
Below the threshold the baseline stays put, so a quiet replica's tokens add up over
several scrapes instead of being lost. Baselines live in the cache entry that holds the
autoscaler's state of the replica's deployment (deployments.scaling): one read and one
write per deployment for both, one `get_many` and one `set_many` for a fleet pass. A restarted replica (a new start time, or a
counter that went down) starts a new baseline and gives no sample.

Routing's cost order divides a deployment's GPU price by `figure_for()`: the measured
estimate when there is one, else the catalog's benchmark figure
(`modelserver.catalog.ModelSpec.benchmark_tokens_per_second`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction

from deployments.exposition import sample_values
from deployments.models import DeploymentRevision, Throughput
from modelserver.catalog import CATALOG

MIN_TOKENS = 200  # an interval with fewer tokens says little about throughput
MAX_TOKENS_PER_SECOND = Decimal(10**9)  # past any one replica: broken counters, not a sample
SMOOTHING = Decimal("0.2")  # a new sample's weight in the average
BASELINE_SECONDS = 3600.0  # a replica not scraped for this long starts a new baseline
DEFAULT_BENCHMARK_TOKENS_PER_SECOND = Decimal(100)  # a model the catalog does not know
MEASURED = "measured on replicas"
BENCHMARK = "benchmark figure, until replicas report"

_TOKEN_SERIES = frozenset({"switchboard:prompt_tokens_total", "switchboard:generation_tokens_total"})
_BUSY_SERIES = "switchboard:busy_seconds_total"
_START_SERIES = "switchboard:start_time_seconds"
COUNTER_SERIES = (*sorted(_TOKEN_SERIES), _BUSY_SERIES, _START_SERIES)
_PLACES = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class Counters:
    """One replica's throughput counters at one scrape."""

    tokens: Decimal
    busy_seconds: Decimal
    started_at: Decimal | None  # the server's start time; None if it does not say


@dataclass(frozen=True, slots=True)
class Interval:
    rate: Decimal | None  # tokens per busy second, when the interval is a sample
    baseline: Counters  # what the replica's next scrape is measured from


@dataclass(frozen=True, slots=True)
class Figure:
    """The throughput routing's cost order assumes for a deployment, and where it is from."""

    tokens_per_second: Decimal
    source: str  # MEASURED or BENCHMARK


def counters_in(metrics_text: str) -> Counters | None:
    """The counters in one replica's Prometheus exposition, summed over label sets; None
    for text that does not parse or a server that does not count busy seconds."""
    try:
        return counters_of(sample_values(metrics_text, COUNTER_SERIES))
    except ValueError:
        return None


def counters_of(samples: Iterable[tuple[str, float]]) -> Counters | None:
    """The counters from an exposition's samples (deployments.exposition); None for a
    server that does not count busy seconds, or counters that are not finite."""
    tokens = busy = Decimal(0)
    started: Decimal | None = None
    seen_busy = False
    try:
        for name, number in samples:
            value = Decimal(repr(number))
            if name in _TOKEN_SERIES:
                tokens += value
            elif name == _BUSY_SERIES:
                busy, seen_busy = busy + value, True
            elif name == _START_SERIES:
                started = value
    except InvalidOperation:
        return None
    if not seen_busy or not tokens.is_finite() or not busy.is_finite():
        return None
    return Counters(tokens=tokens, busy_seconds=busy, started_at=started)


def interval(*, baseline: Counters | None, current: Counters, min_tokens: int = MIN_TOKENS) -> Interval:
    """The sample between a replica's baseline and its latest counters, if any, and the
    baseline to keep. A restart (new start time, or a counter lower than before) gives no
    sample and a fresh baseline, never a negative or made-up rate."""
    if baseline is None or baseline.started_at != current.started_at:
        return Interval(rate=None, baseline=current)
    tokens = current.tokens - baseline.tokens
    busy = current.busy_seconds - baseline.busy_seconds
    if tokens < 0 or busy < 0:
        return Interval(rate=None, baseline=current)  # counters began again
    if tokens < min_tokens:
        return Interval(rate=None, baseline=baseline)  # let tokens add up
    if busy == 0 or tokens / busy > MAX_TOKENS_PER_SECOND:
        return Interval(rate=None, baseline=current)  # not a rate any replica serves
    return Interval(rate=tokens / busy, baseline=current)


def smoothed(*, estimate: Decimal | None, sample: Decimal, weight: Decimal = SMOOTHING) -> Decimal:
    """The exponentially weighted average after one more sample; the first sample is the
    estimate."""
    if estimate is None:
        return sample.quantize(_PLACES)
    return (estimate + weight * (sample - estimate)).quantize(_PLACES)


def figure_for(*, model: str, gpu_type: str, measured: Mapping[tuple[str, str], Decimal]) -> Figure:
    """Measured throughput for this model on this GPU type, else the catalog's benchmark."""
    tokens_per_second = measured.get((model, gpu_type))
    if tokens_per_second is not None and tokens_per_second > 0:
        return Figure(tokens_per_second=tokens_per_second, source=MEASURED)
    spec = CATALOG.get(model)
    benchmark = Decimal(spec.benchmark_tokens_per_second) if spec else DEFAULT_BENCHMARK_TOKENS_PER_SECOND
    return Figure(tokens_per_second=benchmark, source=BENCHMARK)


# --- reading and keeping -----------------------------------------------------------------


def measured() -> dict[tuple[str, str], Decimal]:
    """Every estimate, by (model, GPU type): a handful of rows, platform-wide."""
    return {(model, gpu_type): tps for model, gpu_type, tps in Throughput.objects.values_list("model", "gpu_type_id", "tokens_per_second")}


# A replica's baseline as kept between scrapes: tokens, busy seconds and start time (exact
# decimal strings; None for no start time), and when the replica was last scraped (time.time()).
Baseline = tuple[str, str, str | None, float]


@dataclass(frozen=True, slots=True)
class Stepped:
    """One scrape's counters taken against the replicas' baselines."""

    baselines: dict[str, Baseline]  # by replica id: what each replica's next scrape is measured from
    samples: dict[str, Decimal]  # by replica id: tokens per busy second, where the interval was a sample


def step(*, counters: Mapping[str, Counters], baselines: Mapping[str, object], replica_ids: Iterable[str], now: float) -> Stepped:
    """Takes one scrape's counters (by replica id) against the baselines kept for these
    replicas (those of one deployment, kept with its autoscaler's state): moves each scraped
    replica's baseline on and gives its sample, if any. A replica not scraped keeps its
    baseline; one not scraped for BASELINE_SECONDS starts afresh; replicas not named are
    forgotten. No I/O: a whole fleet is stepped in one go."""
    kept: dict[str, Baseline] = {}
    samples: dict[str, Decimal] = {}
    for replica_id in dict.fromkeys([*replica_ids, *counters]):
        stored = _stored(baselines.get(replica_id), now)
        current = counters.get(replica_id)
        if current is None:
            if stored is not None:
                kept[replica_id] = _baseline(stored[0], stored[1])
            continue
        moved = interval(baseline=stored[0] if stored is not None else None, current=current)
        if moved.rate is not None:
            samples[replica_id] = moved.rate
        kept[replica_id] = _baseline(moved.baseline, now)
    return Stepped(baselines=kept, samples=samples)


def _baseline(counters: Counters, scraped_at: float) -> Baseline:
    started = str(counters.started_at) if counters.started_at is not None else None
    return (str(counters.tokens), str(counters.busy_seconds), started, scraped_at)


def _stored(value: object, now: float) -> tuple[Counters, float] | None:
    """A kept baseline and when its replica was last scraped; None when there is none, it
    is not one, or the replica has not been scraped for BASELINE_SECONDS."""
    if not isinstance(value, tuple) or len(value) != 4:
        return None
    tokens, busy, started, scraped_at = value
    if not isinstance(scraped_at, int | float) or now - scraped_at >= BASELINE_SECONDS:
        return None
    counters = Counters(tokens=Decimal(tokens), busy_seconds=Decimal(busy), started_at=Decimal(started) if started is not None else None)
    return counters, scraped_at


def fold(*, samples: Mapping[str, Decimal], revisions: Mapping[str, str], now: datetime) -> int:
    """Folds samples (by replica id) of replicas of the given revisions (by replica id) into
    the estimates of their model and GPU type. Returns how many samples were folded."""
    rates: dict[str, list[Decimal]] = {}  # revision id -> samples
    for replica_id, rate in samples.items():
        if replica_id in revisions:
            rates.setdefault(revisions[replica_id], []).append(rate)
    if not rates:
        return 0
    by_pair: dict[tuple[str, str], list[Decimal]] = {}
    for revision_id, model, gpu_type in (
        DeploymentRevision.objects.unscoped_across_tenants().filter(pk__in=list(rates)).values_list("pk", "model", "gpu_type_id")
    ):
        by_pair.setdefault((model, gpu_type), []).extend(rates[revision_id])
    for (model, gpu_type), pair_samples in by_pair.items():
        _fold(model=model, gpu_type=gpu_type, samples=pair_samples, now=now)
    return sum(len(pair_samples) for pair_samples in by_pair.values())


def _fold(*, model: str, gpu_type: str, samples: list[Decimal], now: datetime) -> None:
    with transaction.atomic():
        # get_or_create survives another worker creating the row at the same moment.
        row, created = Throughput.objects.get_or_create(
            model=model,
            gpu_type_id=gpu_type,
            defaults={"tokens_per_second": smoothed(estimate=None, sample=samples[0]), "samples": 1, "updated_at": now},
        )
        rest = samples[1:] if created else samples
        if not rest:
            return
        row = Throughput.objects.select_for_update().get(pk=row.pk)
        estimate = row.tokens_per_second
        for sample in rest:
            estimate = smoothed(estimate=estimate, sample=sample)
        row.tokens_per_second, row.samples, row.updated_at = estimate, row.samples + len(rest), now
        row.save(update_fields=["tokens_per_second", "samples", "updated_at"])
