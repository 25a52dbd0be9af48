"""``vrshq serve``: the Label Studio ML backend under gunicorn (models loaded once per worker)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from vrshq.cli.common import add_precision_option
from vrshq.errors import VrshqError


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
    p.add_argument("--plugin", help="model plugin (default $VRSHQ_PLUGIN or vrshq)")
    p.add_argument("--model", help="model folder of the plugin (default $VRSHQ_MODEL)")
    p.add_argument("--data-dir", help="the backend's data folder (default $MODEL_DIR or ./vrshq-data)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default $VRSHQ_DEVICE or auto)")
    add_precision_option(p, default=None)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    p.set_defaults(run=run)


def backend_config(args: argparse.Namespace) -> Any:
    """The BackendConfig from the environment with the command line's overrides."""
    from backend.config import BackendConfig

    return BackendConfig.from_env(plugin=args.plugin, model_dir=args.model, data_dir=args.data_dir,
                                  device=args.device, precision=args.precision)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand (blocks until gunicorn stops)."""
    from gunicorn.app.base import BaseApplication

    from plugins.registry import plugin_class

    if not 0 < args.port < 65536:
        raise VrshqError(f"--port {args.port}: not a TCP port")
    if args.workers < 1 or args.threads < 1:
        raise VrshqError("--workers and --threads must be >= 1")
    config = backend_config(args)
    metrics_dir = metrics_folder()
    config = dataclasses.replace(config, metrics_dir=metrics_dir)
    # An unknown plugin or an incomplete model folder fails here, before any worker starts.
    plugin = plugin_class(config.plugin)
    if config.model_dir:
        if not os.path.isdir(config.model_dir):
            raise VrshqError(f"model folder {config.model_dir}: not found")
        plugin.check_model(config.model_dir)
    level = str(args.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    class Server(BaseApplication):
        def load_config(self) -> None:
            from backend.server import worker_class

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

        def load(self) -> Any:
            from backend.app import create_app

            try:
                return create_app(config)
            except VrshqError as exc:
                print(f"vrshq: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(3)  # gunicorn's "worker failed to boot": the arbiter stops too

    print(f"vrshq backend ({config.plugin}) on http://{args.host}:{args.port}", file=sys.stderr)
    if args.workers > 1 and not config.redis_url:
        print("vrshq: warning: --workers > 1 without REDIS_URL: each worker process runs and "
              "knows only its own jobs (GET /jobs/<id> and cancel answer in that process only); "
              "set REDIS_URL to share one queue", file=sys.stderr)
    try:
        Server().run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


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
