"""The bench's arithmetic: percentiles, rates, ratios, and quantiles of Prometheus
histograms. Pure functions over values; no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from traitstream.exposition import parse_samples


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0 to 1) of ``values``, interpolating linearly between
    the two nearest ranks (numpy's default); None for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside 0..1")
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate(count: float, seconds: float) -> float | None:
    """``count`` per second; None when no time passed."""
    return count / seconds if seconds > 0 else None


def ratio(value: float | None, limit: float | None) -> float | None:
    """``value`` as a fraction of ``limit``; None when either is unknown or the limit is 0."""
    if value is None or limit is None or limit <= 0:
        return None
    return value / limit


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram: ``buckets`` are (upper bound, cumulative count) in
    increasing bound order, the last bound ``inf``."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0


def parse_histogram(text: str, name: str) -> Histogram:
    """The histogram ``name`` (its ``_bucket`` samples, summed over every other label)."""
    counts: dict[float, float] = {}
    for labels, value in parse_samples(text, f"{name}_bucket"):
        bound = float(labels["le"])  # "+Inf" parses as inf
        counts[bound] = counts.get(bound, 0.0) + value
    return Histogram(tuple(sorted(counts.items())))


def merge_histograms(histograms: Iterable[Histogram]) -> Histogram:
    """Several processes' histograms of the same metric (same bounds) as one."""
    counts: dict[float, float] = {}
    for histogram in histograms:
        for bound, count in histogram.buckets:
            counts[bound] = counts.get(bound, 0.0) + count
    return Histogram(tuple(sorted(counts.items())))


def histogram_delta(after: Histogram, before: Histogram) -> Histogram:
    """What was observed between two scrapes of one histogram."""
    earlier = dict(before.buckets)
    return Histogram(tuple((b, c - earlier.get(b, 0.0)) for b, c in after.buckets))


def share_within(bound: float, histogram: Histogram) -> float | None:
    """The share of observations at or below ``bound``, which must be one of the
    histogram's bucket bounds: exact, unlike a quantile read inside a bucket (the
    p99 so read is at most ``bound`` exactly when this is at least 0.99). None when
    nothing was observed."""
    if histogram.count <= 0:
        return None
    for upper, count in histogram.buckets:
        if upper == bound:
            return count / histogram.count
    raise ValueError(f"{bound} is not a bucket bound of the histogram")


@dataclass(slots=True)
class Windows:
    """A phase's scrapes of one histogram, cut into windows: what was observed
    between one kept scrape and the next (``cut``: seconds and histogram). A scrape
    less than ``min_s`` after the last kept one is skipped, such as one taken as the
    load starts, unless it closes the phase."""

    first: Histogram
    at: float
    min_s: float = 1.0
    latest: Histogram = field(init=False)
    cut: list[tuple[float, Histogram]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.latest = self.first

    def scrape(self, now: float, histogram: Histogram, closing: bool = False) -> None:
        if closing or now - self.at >= self.min_s:
            self.cut.append((now - self.at, histogram_delta(histogram, self.latest)))
            self.at, self.latest = now, histogram

    def whole(self) -> Histogram:
        """Everything observed from the first scrape to the last kept one."""
        return histogram_delta(self.latest, self.first)


def histogram_quantile(q: float, histogram: Histogram) -> float | None:
    """Prometheus' ``histogram_quantile``: find the bucket holding rank ``q * count``
    and interpolate linearly inside it (the first bucket starts at 0). A rank in the
    ``+Inf`` bucket answers the highest finite bound. None when nothing was observed."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside 0..1")
    buckets = histogram.buckets
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > previous_count:
            if math.isinf(bound):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


@dataclass(slots=True)
class AppliedWatch:
    """Whether the workers are done with the current topic, from the offsets they
    commit (``applied``: the sum of their next offsets, which counts every record).

    Done means every identify the edge acknowledged is applied. A request that failed
    may still have written some of its records, which count too without being
    expected, so after any failure the count must also have stopped moving for
    ``settle_s``."""

    acked: int = 0
    failed_requests: int = 0
    settle_s: float = 2.0
    _seen: int = -1
    _changed_at: float = 0.0

    def expect(self, acked: int, failed_requests: int) -> None:
        """Count a load's acknowledged identifies and failed requests. The next look
        starts the clock again, so a finish is never dated before the load."""
        self.acked += acked
        self.failed_requests += failed_requests
        self._seen = -1

    def reset(self) -> None:
        """A fresh topic: nothing expected yet."""
        self.acked = self.failed_requests = 0
        self._seen = -1

    def done_at(self, applied: int, now: float) -> float | None:
        """When the workers finished (the time ``applied`` last changed), or None."""
        if applied != self._seen:
            self._seen, self._changed_at = applied, now
        if applied < self.acked:
            return None
        if self.failed_requests and now - self._changed_at < self.settle_s:
            return None
        return self._changed_at
