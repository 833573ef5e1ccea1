"""Per-request HTTP numbers, summed in plain Python and written to the Prometheus values in batches.

Why batch: in multiprocess mode every counter increment and histogram observation is a locked write
to a memory-mapped file (~3 µs); a request would make nine of them, about a third of the CPU a
cached manifest GET costs. Here a request costs a few dictionary updates on the event loop thread
(the only thread that touches these dictionaries, so there is no lock), and `flush()` moves the sums
into the registry every FLUSH_SECONDS, before this process answers a scrape, and at shutdown. A
scrape therefore sees other workers' requests at most FLUSH_SECONDS late.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.observability.metrics import Metrics

FLUSH_SECONDS = 1.0


class _Sums:
    """A histogram's pending observations: counts per bucket (prometheus_client's layout: one per
    upper bound, +Inf last, not cumulative) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value, as observe() picks
        self.total += value

    def apply_to(self, child) -> None:
        child._sum.inc(self.total)  # noqa: SLF001 - prometheus_client's own value objects
        for i, n in enumerate(self.counts):
            if n:
                child._buckets[i].inc(n)  # noqa: SLF001


class HttpStats:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._durations = tuple(float(b) for b in metrics.http_duration._upper_bounds[:-1])  # noqa: SLF001
        self._sizes = tuple(float(b) for b in metrics.http_request_size._upper_bounds[:-1])  # noqa: SLF001
        self.in_flight: dict[str, int] = {}
        self._reset()

    def _reset(self) -> None:
        self._requests: dict[tuple[str, str, str], int] = {}
        self._by_route: dict[tuple[str, str], tuple[_Sums, _Sums, _Sums]] = {}
        self._pulled: dict[str, int] = {}

    def started(self, handler: str) -> None:
        self.in_flight[handler] = self.in_flight.get(handler, 0) + 1

    def finished(self, handler: str, method: str, code: str, seconds: float, received: int, sent: int) -> None:
        self.in_flight[handler] -= 1
        key = (handler, code, method)
        self._requests[key] = self._requests.get(key, 0) + 1
        sums = self._by_route.get((handler, method))
        if sums is None:
            sums = self._by_route[(handler, method)] = (_Sums(self._durations), _Sums(self._sizes), _Sums(self._sizes))
        sums[0].observe(seconds)
        sums[1].observe(received)
        sums[2].observe(sent)

    def pulled(self, project: str, size: int) -> None:
        self._pulled[project] = self._pulled.get(project, 0) + size

    def flush(self) -> None:
        """Move the pending sums into the registry (call on the event loop thread)."""
        requests, by_route, pulled = self._requests, self._by_route, self._pulled
        self._reset()
        m = self.metrics
        for (handler, code, method), n in requests.items():
            m.http_requests.labels(handler, code, method).inc(n)
        for (handler, method), (duration, received, sent) in by_route.items():
            duration.apply_to(m.http_duration.labels(handler, method))
            received.apply_to(m.http_request_size.labels(handler, method))
            sent.apply_to(m.http_response_size.labels(handler, method))
        for project, size in pulled.items():
            m.pulled_bytes.labels(project).inc(size)
        for handler, n in self.in_flight.items():
            m.http_in_flight.labels(handler).set(n)
