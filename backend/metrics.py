"""``/metrics`` in Prometheus' text format (prometheus_client): requests and latency by route,
frames tracked and frames per second, jobs by state and queue depth.

Several processes serve one backend: ``vrshq serve`` runs gunicorn workers, and with
``REDIS_URL`` the heavy work runs in ``vrshq worker`` processes, maybe on other machines. So a
scrape that reaches any one worker must report them all:

* requests and latency use prometheus_client's multiprocess mode when ``vrshq serve`` gives a
  metrics folder (``metrics_dir``), summed over the live and past workers;
* frames are counted per process, and with Redis also in Redis (``vrshq_cluster_frames*``: the
  backend and every queue worker add to the same counters, in one-second buckets for the rate).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
REFRESH_S = 5.0  # how often a busy process refreshes its frames-per-second gauge


class RedisFrames:
    """Frames counted in Redis by every process of a deployment (one-second buckets for the rate)."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def add(self, n: int) -> None:
        """Count ``n`` frames now."""
        bucket = f"{self.prefix}:s:{int(time.time())}"
        with self.redis.pipeline() as pipe:
            pipe.incrby(f"{self.prefix}:total", n)
            pipe.incrby(bucket, n)
            pipe.expire(bucket, 2 * RATE_WINDOW_S)
            pipe.execute()

    def total(self) -> int:
        """Frames counted since the counter began."""
        return int(self.redis.get(f"{self.prefix}:total") or 0)

    def rate(self) -> float:
        """Frames per second over the last minute."""
        now = int(time.time())
        keys = [f"{self.prefix}:s:{t}" for t in range(now - RATE_WINDOW_S + 1, now + 1)]
        return sum(int(v) for v in self.redis.mget(keys) if v is not None) / RATE_WINDOW_S


class Metrics:
    """The metrics of one backend process, rendered for every process of the deployment."""

    def __init__(self, metrics_dir: str | None = None, redis_frames: RedisFrames | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created samples only add noise to every counter
        self._multiprocess = bool(metrics_dir)
        # In multiprocess mode values live in files of the folder, read back at render time; a
        # registry of our own keeps the single-process metrics of several backends apart (tests).
        own = None if self._multiprocess else CollectorRegistry()
        self._registry = own
        self._requests = Counter("vrshq_requests", "Requests answered, by route and status.",
                                 ["route", "status"], registry=own)
        self._latency = Histogram("vrshq_request_seconds", "Time spent answering, by route.",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=own)
        self._redis_frames = redis_frames
        self._frames = Counter("vrshq_frames", "Object-frames tracked.", registry=own)
        self._fps = Gauge("vrshq_frames_per_second", "Object-frames tracked per second, last minute.",
                          registry=own, multiprocess_mode="livesum")
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()
        self._refresher: threading.Thread | None = None

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self._requests.labels(route=route, status=str(int(status))).inc()
        self._latency.labels(route=route).observe(max(0.0, float(seconds)))

    def frames(self, n: int) -> None:
        """Count frames processed (frames x objects)."""
        n = int(n)
        if self._redis_frames is not None:
            try:
                self._redis_frames.add(n)
            except Exception as exc:  # noqa: BLE001 - a metric never fails the work it counts
                log.warning("frames not counted in Redis: %s", exc)
        self._frames.inc(n)
        with self._lock:
            self._recent.append((time.monotonic(), n))
            if self._multiprocess and (self._refresher is None or not self._refresher.is_alive()):
                self._refresher = threading.Thread(target=self._refresh_while_busy,
                                                   name="vrshq-fps", daemon=True)
                self._refresher.start()
        self._fps.set(self._local_rate())

    def _local_rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def _refresh_while_busy(self) -> None:
        # Another worker may render this process's gauge: keep it true until the window empties.
        while True:
            time.sleep(REFRESH_S)
            rate = self._local_rate()
            self._fps.set(rate)
            if rate == 0.0:
                return

    def render(self, jobs: dict[str, int]) -> str:
        """Every metric as Prometheus exposition text; ``jobs`` counts jobs by state."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._multiprocess:
            from prometheus_client import multiprocess

            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)
        else:
            source = self._registry
            self._fps.set(self._local_rate())
        text = generate_latest(source).decode()

        extra: list[Any] = []
        if self._redis_frames is not None:
            try:
                total, rate = self._redis_frames.total(), self._redis_frames.rate()
                extra += [CounterMetricFamily("vrshq_cluster_frames", "Object-frames tracked by the "
                                              "backend and its queue workers.", value=total),
                          GaugeMetricFamily("vrshq_cluster_frames_per_second", "Object-frames per "
                                            "second, backend and queue workers, last minute.", value=rate)]
            except Exception as exc:  # noqa: BLE001 - the rest of the metrics still render
                log.warning("frames not read from Redis: %s", exc)
        by_state = GaugeMetricFamily("vrshq_jobs", "Jobs by state.", labels=["state"])
        for state, n in sorted(jobs.items()):
            by_state.add_metric([state], n)
        extra += [by_state, GaugeMetricFamily("vrshq_queue_depth", "Jobs waiting for a worker.",
                                              value=jobs.get("queued", 0))]
        return text + generate_latest(_Fixed(extra)).decode()


class _Fixed:
    """A collector of metric families computed at render time."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


__all__ = ["Metrics", "RedisFrames"]
