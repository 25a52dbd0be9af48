"""``vrshq worker``: run the backend's jobs from Redis (one worker per GPU, on any machine)."""

from __future__ import annotations

import argparse
import logging
import os

from vrshq.cli.backend_options import add_backend_options, backend_config
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "worker", help="run queued jobs (predictions, re-propagations, fine-tuning) from Redis",
        description="Take jobs from the RQ queue at $REDIS_URL and run them with the same settings "
        "as `vrshq serve` (VRSHQ_MODEL, MODEL_DIR shared with the backend, LABEL_STUDIO_URL/"
        "API_KEY for write-back, ...). The model loads once; jobs run in this process, so "
        "start one worker per GPU (CUDA_VISIBLE_DEVICES). A worker killed mid-job leaves the "
        "job to be retried by another worker.")
    add_backend_options(p)  # the same model, data folder, device and precision options as serve
    p.add_argument("--queue", help="queue name (default $VRSHQ_QUEUE or vrshq)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--maintenance-interval", type=int, default=30,
                   help="seconds between re-queueing jobs of dead workers (default 30)")
    p.add_argument("--lease", type=int, default=60,
                   help="seconds a running job stays claimed without a heartbeat: a worker killed "
                   "mid-job frees it this long after its last heartbeat (default 60)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    config = backend_config(args, queue=args.queue)
    if not config.redis_url:
        raise VrshqError("vrshq worker needs REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rq import Queue

    from vrshq.backend.jobs.redis_queue import LeasedWorker, set_worker_backend
    from vrshq.backend.service import Backend

    redis = Redis.from_url(config.redis_url)
    try:
        redis.ping()
    except RedisConnectionError as exc:
        raise VrshqError(f"cannot reach Redis at {config.redis_url.split('@')[-1]}: {exc}") from None
    backend = Backend(config)  # loads the model once for every job of this process
    set_worker_backend(backend)
    if args.lease < 3:
        raise VrshqError(f"--lease {args.lease}: at least 3 seconds")
    # Jobs run in this process: the model stays loaded (no fork, CUDA-safe).
    interval = max(1, args.maintenance_interval)
    # An idle worker waits on the queue for worker_ttl - 15 s before it does maintenance; RQ's
    # 405 s would leave retries of a killed worker's jobs (scheduled for their backoff) waiting
    # that long for a live worker to take over the scheduler. Wake at the maintenance interval.
    worker = LeasedWorker([Queue(config.queue, connection=redis)], connection=redis, lease=args.lease,
                          worker_ttl=interval + 15)
    worker.maintenance_interval = interval
    try:
        # with_scheduler: retries wait their backoff in RQ's scheduled registry
        worker.work(burst=args.burst, logging_level=str(args.log_level).upper(), with_scheduler=True)
    finally:
        backend.close()
    return 0
