"""Background jobs of one backend process: long predictions and webhook re-propagations.

The embedded default runs jobs on a small thread pool inside the backend process (one model
in memory, shared); jobs report progress as (stage, done, total) and are deduplicated by key,
so Label Studio asking again for a task that is already being predicted does not start a
second run. Job records stay in memory for ``keep`` finished jobs.

A job can be cancelled: a queued one never runs; a running one stops at its next progress
report (:class:`vrshq.errors.Cancelled`), and what it finished by then is kept: propagation
returns the frames done, and the job writes them back as it would a full result.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vrshq.errors import Cancelled

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)

# A job body: called with a progress reporter, returns a JSON-ready result.
Report = Callable[[str, int, int], None]
JobFn = Callable[[Report], Any]


@dataclass
class Job:
    """One job's record, as the job-status route reports it."""

    id: str
    kind: str
    key: str
    state: str = QUEUED
    stage: str = ""
    done: int = 0
    total: int = 0
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in (QUEUED, RUNNING)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, with progress as a fraction."""
        if self.state == DONE:
            progress = 1.0
        else:
            progress = (self.done / self.total) if self.total else 0.0
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage,
            "done": self.done, "total": self.total, "progress": round(min(progress, 1.0), 4),
            "error": self.error, "result": self.result, "created": self.created,
            "started": self.started, "finished": self.finished,
            "cancel_requested": self.cancel_requested, **self.info,
        }


class JobRunner:
    """A thread pool with job records, progress and key-based deduplication."""

    def __init__(self, workers: int = 1, keep: int = 1000) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vrshq-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._active_by_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def submit(self, kind: str, key: str, fn: JobFn, **info: Any) -> tuple[Job, bool]:
        """Queue ``fn`` unless a job with ``key`` is queued or running; returns (job, created)."""
        with self._lock:
            existing = self._active_by_key.get(key)
            if existing is not None:
                return self._jobs[existing], False
            job = Job(id=uuid.uuid4().hex[:16], kind=kind, key=key, info=dict(info))
            self._jobs[job.id] = job
            self._active_by_key[key] = job.id
            self._trim()
        self._pool.submit(self._run, job, fn)
        return job, True

    def get(self, job_id: str) -> Job | None:
        """A job by id."""
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        """Every kept job, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def counts(self) -> dict[str, int]:
        """Jobs by state."""
        out = dict.fromkeys(STATES, 0)
        for job in self.list():
            out[job.state] += 1
        return out

    def cancel(self, job_id: str) -> Job | None:
        """Ask a queued or running job to stop (a finished one is left as it is); the job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return job
            job.cancel_requested = True
            if job.state == QUEUED:  # never started: it ends here, _run will skip it
                job.state, job.finished = CANCELLED, time.time()
                self._release(job)
        return job

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job finished (tests and the CLI); raises TimeoutError."""
        return wait_for(self.get, job_id, timeout, interval=0.05)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let the running ones finish."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _run(self, job: Job, fn: JobFn) -> None:
        def report(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, int(done), int(total)
            if job.cancel_requested:
                raise Cancelled(f"job {job.id} was cancelled")

        with self._lock:
            if job.state == CANCELLED:
                return
            job.state, job.started = RUNNING, time.time()
        try:
            job.result = fn(report)
            job.state = CANCELLED if job.cancel_requested else DONE
        except Cancelled:
            job.state = CANCELLED
        except Exception as exc:  # noqa: BLE001 - a job's failure is its record, not a crash
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error, job.state = f"{type(exc).__name__}: {exc}", FAILED
        finally:
            job.finished = time.time()
            with self._lock:
                self._release(job)

    def _release(self, job: Job) -> None:
        if self._active_by_key.get(job.key) == job.id:
            del self._active_by_key[job.key]

    def _trim(self) -> None:
        finished = [j.id for j in self._jobs.values() if not j.active]
        for job_id in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job_id]


def wait_for(get: Callable[[str], Job | None], job_id: str, timeout: float, interval: float) -> Job:
    """Poll ``get(job_id)`` until the job is no longer queued or running; TimeoutError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        job = get(job_id)
        if job is None:
            raise KeyError(job_id)
        if not job.active:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
        time.sleep(interval)


__all__ = ["DONE", "FAILED", "QUEUED", "RUNNING", "Job", "JobRunner", "Report", "wait_for"]
