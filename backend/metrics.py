"""Counters for ``/metrics`` in Prometheus' text format: requests and latency by route, frames."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

RATE_WINDOW_S = 60.0


class Metrics:
    """Thread-safe request counts, latency sums and processed frames of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._latency: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self._frames = 0
        self._recent: deque[tuple[float, int]] = deque()  # (time, frames) within the rate window

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        with self._lock:
            self._requests[(route, int(status))] += 1
            entry = self._latency[route]
            entry[0] += seconds
            entry[1] += 1

    def frames(self, n: int) -> None:
        """Count frames processed (frames x objects)."""
        now = time.monotonic()
        with self._lock:
            self._frames += int(n)
            self._recent.append((now, int(n)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def frames_per_second(self) -> float:
        """Object-frames tracked per second over the last minute."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def render(self, jobs: dict[str, int]) -> str:
        """The metrics as Prometheus exposition text."""
        lines = ["# HELP vrshq_requests_total Requests answered, by route and status.",
                 "# TYPE vrshq_requests_total counter"]
        with self._lock:
            for (route, status), n in sorted(self._requests.items()):
                lines.append(f'vrshq_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += ["# HELP vrshq_request_seconds Time spent answering, by route.",
                      "# TYPE vrshq_request_seconds summary"]
            for route, (total, count) in sorted(self._latency.items()):
                lines.append(f'vrshq_request_seconds_sum{{route="{route}"}} {total:.6f}')
                lines.append(f'vrshq_request_seconds_count{{route="{route}"}} {count}')
            lines += ["# HELP vrshq_frames_total Object-frames tracked.",
                      "# TYPE vrshq_frames_total counter", f"vrshq_frames_total {self._frames}"]
        lines += ["# HELP vrshq_frames_per_second Object-frames tracked per second, last minute.",
                  "# TYPE vrshq_frames_per_second gauge",
                  f"vrshq_frames_per_second {self.frames_per_second():.3f}"]
        lines += ["# HELP vrshq_jobs Jobs by state.", "# TYPE vrshq_jobs gauge"]
        for state, n in sorted(jobs.items()):
            lines.append(f'vrshq_jobs{{state="{state}"}} {n}')
        return "\n".join(lines) + "\n"


__all__ = ["Metrics"]
