"""``vrshq serve``: the Label Studio ML backend under gunicorn (models loaded once per worker)."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from vrshq.cli.backend_options import add_backend_options, backend_config
from vrshq.errors import VrshqError, one_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "serve", help="run the Label Studio ML backend",
        description="Serve Label Studio's ML backend protocol (/health /setup /predict /webhook "
        "/metrics, /jobs) under gunicorn. Settings not given as flags come from the environment "
        "(VRSHQ_PLUGIN, VRSHQ_MODEL, MODEL_DIR, LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, "
        "LOCAL_FILES_DOCUMENT_ROOT, BASIC_AUTH_USER/PASS, ...; see the README). Each worker "
        "process loads the model once; keep one worker per GPU and use threads for concurrency.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 inside a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090") or 9090))
    add_backend_options(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand (blocks until gunicorn stops)."""
    from gunicorn.app.base import BaseApplication

    if not 0 < args.port < 65536:
        raise VrshqError(f"--port {args.port}: not a TCP port")
    if args.workers < 1 or args.threads < 1:
        raise VrshqError("--workers and --threads must be >= 1")
    config = backend_config(args)  # an unknown plugin or an incomplete model folder: one line
    check_port_free(args.host, args.port)
    metrics_dir = metrics_folder()
    config = dataclasses.replace(config, metrics_dir=metrics_dir)
    level = str(args.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    class Server(BaseApplication):
        def load_config(self) -> None:
            from vrshq.backend.http.server import worker_class

            # gthread's pool and keep-alive, with requests read whole on the event loop before a
            # thread takes them, and /health and /metrics on threads of their own (backend.server).
            settings = {"bind": f"{args.host}:{args.port}", "workers": args.workers,
                        "threads": args.threads, "worker_class": worker_class(config), "timeout": 0,
                        "graceful_timeout": 30, "loglevel": args.log_level,
                        "control_socket_disable": True,  # several backends on one host
                        "accesslog": "-" if level == "DEBUG" else None}
            for key, value in settings.items():
                self.cfg.set(key, value)
            self.cfg.set("child_exit", _worker_exited)
            # The banner once the first worker has its model: a backend that cannot start never
            # announces an address.
            self.cfg.set("post_worker_init", lambda worker: worker.age == 1 and print(
                f"vrshq backend ({config.plugin}) on http://{args.host}:{args.port}", file=sys.stderr,
                flush=True))
            # A worker that cannot load its model prints its own one-line error and exits 3;
            # the arbiter's account of that ("Worker failed to boot", ...) would only repeat it.
            self.cfg.set("logconfig_dict", _quiet_boot_failures(level))

        def load(self) -> Any:
            from vrshq.backend.http.app import create_app

            try:
                return create_app(config)
            except VrshqError as exc:
                print(f"vrshq: error: {one_line(str(exc))}", file=sys.stderr, flush=True)
                sys.exit(3)  # gunicorn's "worker failed to boot": the arbiter stops too

    if args.workers > 1 and not config.redis_url:
        print("vrshq: warning: --workers > 1 without REDIS_URL: each worker process runs and "
              "knows only its own jobs (GET /jobs/<id> and cancel answer in that process only); "
              "set REDIS_URL to share one queue", file=sys.stderr)
    try:
        Server().run()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return 3  # a worker failed to boot; it said why on its own line
        raise
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def check_port_free(host: str, port: int) -> None:
    """A one-line error when ``host:port`` cannot be bound (in use, or not an address of this host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise VrshqError(f"--host {host}: not an address this machine can bind ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is free and a listening one is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise VrshqError(f"--port {port}: {host}:{port} is already in use (another server "
                                 "listens there); choose another --port or stop that server") from None
            raise VrshqError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


class _DropBootFailure(logging.Filter):
    """Drops the arbiter's lines about a worker that exited at boot (the worker said why)."""

    NOISE = ("Worker failed to boot", "exited with code 3", "Shutting down: Master",
             "Reason: Worker failed to boot")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def _quiet_boot_failures(level: str) -> dict[str, Any]:
    return {"version": 1, "disable_existing_loggers": False,
            "filters": {"boot": {"()": _DropBootFailure}},
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                    "formatter": "plain", "filters": ["boot"]}},
            "root": {"level": level if level in logging._nameToLevel else "INFO", "handlers": ["stderr"]},
            # gunicorn's start-up lines only at debug: the banner says where the backend listens
            "loggers": {"gunicorn.error": {"level": "DEBUG" if level == "DEBUG" else "WARNING",
                                           "handlers": ["stderr"], "propagate": False},
                        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False}}}


def metrics_folder() -> str:
    """A fresh folder for prometheus_client's multiprocess mode, set before any worker starts.

    Every gunicorn worker writes its counters there, so /metrics on any worker reports all of
    them; prometheus_client reads the variable when it is imported, hence before the fork.
    """
    folder = tempfile.mkdtemp(prefix="vrshq-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _worker_exited(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges (frames per second) leave the sum
