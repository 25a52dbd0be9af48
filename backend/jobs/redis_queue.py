"""Jobs on Redis with RQ: the backend enqueues, ``vrshq worker`` processes (one per GPU) run them.

Used when ``REDIS_URL`` is set; the same job code as the embedded runner
(:func:`vrshq.backend.jobs.execute.execute`) runs in the worker, on the worker's own Backend (its
model loaded once per worker process). Jobs carry JSON payloads, report progress into their
meta, are retried with backoff when they fail or their worker dies (RQ re-queues abandoned
jobs that have retries left), and are deduplicated by key while queued or running. A bounded
queue makes ``/predict`` answer "busy, retry later" instead of timing out.

Cancel: a queued job is cancelled in RQ (it never runs); a running one gets a flag in Redis
that its worker reads at each progress report, so it stops there and keeps what it finished
(see :mod:`vrshq.backend.jobs.runner`); it ends as RQ "finished" with ``cancelled`` in its meta.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from vrshq.backend.jobs.execute import execute
from vrshq.backend.jobs.runner import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, Report, wait_for
from vrshq.errors import Cancelled, VrshqError

log = logging.getLogger(__name__)

RETRY_INTERVALS = [2, 10, 30]  # seconds between attempts
JOB_TIMEOUT = 6 * 3600  # a fine-tuning run may take hours
_STATES = {"queued": QUEUED, "deferred": QUEUED, "scheduled": QUEUED, "started": RUNNING,
           "finished": DONE, "failed": FAILED, "stopped": FAILED, "canceled": CANCELLED}


def cancel_key(job_id: str) -> str:
    """The Redis key that asks a running job to stop."""
    return f"vrshq:cancel:{job_id}"


class BusyError(VrshqError):
    """The queue is at its bound: retry later (HTTP 503)."""


class RQJobRunner:
    """The job runner on a Redis queue (same interface as :class:`vrshq.backend.jobs.runner.JobRunner`)."""

    def __init__(self, redis_url: str, queue: str = "vrshq", max_queued: int = 100,
                 retries: int = 3) -> None:
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(redis_url)
        self.queue = Queue(queue, connection=self.redis)
        self.max_queued = max_queued
        self.retries = retries

    def _key(self, key: str) -> str:
        return f"vrshq:active:{self.queue.name}:{key}"

    def submit(self, kind: str, key: str, payload: dict[str, Any], **info: Any) -> tuple[Job, bool]:
        """Enqueue ``(kind, payload)`` unless a job with ``key`` is queued or running."""
        from rq import Retry

        if not isinstance(payload, dict):
            raise TypeError("jobs on Redis take a JSON payload, not a function")
        existing = self.redis.get(self._key(key))
        if existing is not None:
            job = self.get(existing.decode())
            if job is not None and job.active:
                return job, False
        if self.queue.count >= self.max_queued:
            raise BusyError(f"busy: {self.queue.count} jobs are queued (VRSHQ_MAX_QUEUED="
                            f"{self.max_queued}); retry later")
        job_id = uuid.uuid4().hex[:16]
        self.queue.enqueue("vrshq.backend.jobs.redis_queue.run_job", kind, payload, job_id=job_id,
                           retry=Retry(max=self.retries, interval=RETRY_INTERVALS),
                           job_timeout=JOB_TIMEOUT, result_ttl=7 * 86400, failure_ttl=7 * 86400,
                           meta={"kind": kind, "key": key, "info": info})
        self.redis.set(self._key(key), job_id, ex=JOB_TIMEOUT)
        return self.get(job_id), True

    def get(self, job_id: str) -> Job | None:
        """The job's record, from Redis."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job as RQJob

        try:
            rq_job = RQJob.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None
        meta = rq_job.get_meta(refresh=True) or {}
        state = _STATES.get(str(rq_job.get_status(refresh=True)).split(".")[-1].lower(), QUEUED)
        record = Job(id=rq_job.id, kind=str(meta.get("kind", "")), key=str(meta.get("key", "")),
                     state=state, stage=str(meta.get("stage", "")), done=int(meta.get("done", 0)),
                     total=int(meta.get("total", 0)), info=dict(meta.get("info") or {}))
        record.created = rq_job.enqueued_at.timestamp() if rq_job.enqueued_at else record.created
        record.started = rq_job.started_at.timestamp() if rq_job.started_at else None
        record.finished = rq_job.ended_at.timestamp() if rq_job.ended_at else None
        record.cancel_requested = bool(meta.get("cancelled")) or self.redis.exists(cancel_key(job_id)) > 0
        if state == DONE and meta.get("cancelled"):
            state = record.state = CANCELLED
        if state in (DONE, CANCELLED):
            record.result = rq_job.return_value()
        elif state == FAILED:
            record.error = (rq_job.latest_result().exc_string.strip().splitlines()[-1]
                            if rq_job.latest_result() is not None else "failed")
        return record

    def list(self) -> list[Job]:
        """Queued (or waiting to retry), running, finished, failed and cancelled jobs (oldest first)."""
        ids = list(self.queue.job_ids)
        for registry in (self.queue.scheduled_job_registry, self.queue.started_job_registry,
                         self.queue.finished_job_registry, self.queue.failed_job_registry,
                         self.queue.canceled_job_registry):
            ids += registry.get_job_ids()
        jobs = [j for j in (self.get(i) for i in dict.fromkeys(ids)) if j is not None]
        return sorted(jobs, key=lambda j: j.created)

    def counts(self) -> dict[str, int]:
        """Jobs by state."""
        return {QUEUED: self.queue.count, RUNNING: self.queue.started_job_registry.count,
                DONE: self.queue.finished_job_registry.count, FAILED: self.queue.failed_job_registry.count,
                CANCELLED: self.queue.canceled_job_registry.count}

    def cancel(self, job_id: str) -> Job | None:
        """Ask a queued or running job to stop (a finished one is left as it is); the job."""
        from rq.job import Job as RQJob

        job = self.get(job_id)
        if job is None or not job.active:
            return job
        self.redis.set(cancel_key(job_id), 1, ex=JOB_TIMEOUT)
        if job.state == QUEUED:
            try:
                RQJob.fetch(job_id, connection=self.redis).cancel()
            except Exception as exc:  # noqa: BLE001 - it started meanwhile: the flag stops it
                log.info("job %s started before its cancel reached the queue: %s", job_id, exc)
            if self.redis.get(self._key(job.key)) == job_id.encode():
                self.redis.delete(self._key(job.key))
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job finished; raises TimeoutError."""
        return wait_for(self.get, job_id, timeout, interval=0.2)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop: the workers are other processes."""
        self.redis.close()


# ---------------------------------------------------------------------- in the worker
_backend: Any = None


def _leased_worker_class() -> type:
    from rq import SimpleWorker
    from rq.worker import WorkerStatus

    class LeasedWorker(SimpleWorker):
        """Runs jobs in its own process, claiming each for ``lease`` seconds at a time.

        RQ's SimpleWorker claims a running job for its whole timeout (hours for fine-tuning),
        so a worker killed mid-job would hold it that long. Here a heartbeat thread renews a
        short lease while the job runs; when the worker dies, the lease runs out and another
        worker's maintenance re-queues the job (it has retries left).
        """

        def __init__(self, *args: Any, lease: int = 60, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lease = int(lease)

        def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
            return self.lease

        def execute_job(self, job: Any, queue: Any) -> None:
            import threading

            execution = self.prepare_execution(job)
            stop = threading.Event()

            def renew() -> None:
                while not stop.wait(max(1.0, self.lease / 4)):
                    try:
                        with self.connection.pipeline() as pipe:
                            execution.heartbeat(job.started_job_registry, self.lease, pipe)
                            self.heartbeat(self.lease, pipeline=pipe)
                            pipe.execute()
                    except Exception:  # noqa: BLE001 - a missed beat is retried next time
                        continue

            beat = threading.Thread(target=renew, name="vrshq-lease", daemon=True)
            beat.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                stop.set()
                beat.join(timeout=5)
            self.set_state(WorkerStatus.IDLE)

    return LeasedWorker


def __getattr__(name: str) -> Any:  # LeasedWorker imports rq only when a worker needs it
    if name == "LeasedWorker":
        return _leased_worker_class()
    raise AttributeError(name)


def set_worker_backend(backend: Any) -> None:
    """The Backend the jobs of this worker process run on (set once by ``vrshq worker``)."""
    global _backend
    _backend = backend


def run_job(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """RQ's entry point: run one job on this worker's Backend, reporting progress into its meta."""
    from rq import get_current_job

    if _backend is None:
        raise VrshqError("no backend in this process: jobs run in `vrshq worker`")
    job = get_current_job()

    def cancelled() -> bool:
        return job is not None and job.connection.exists(cancel_key(job.id)) > 0

    def report(stage: str, done: int, total: int) -> None:
        if job is not None:
            job.meta.update({"stage": stage, "done": int(done), "total": int(total)})
            job.save_meta()
        if cancelled():
            raise Cancelled(f"job {job.id if job else ''} was cancelled")

    report_fn: Report = report
    try:
        result = execute(_backend, kind, payload, report_fn, key=job.id if job is not None else None)
    except Cancelled:  # not a failure: no retry, nothing finished to keep
        result = {}
    if cancelled():
        job.meta["cancelled"] = True
        job.save_meta()
        result = {**result, "cancelled": True}
    return result


__all__ = ["BusyError", "RQJobRunner", "run_job", "set_worker_backend"]
