"""`vrshq serve` started for real next to the session's Label Studio, for the end-to-end tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.test_serve import free_port, start, stop, wait_up


def poll(what: str, check: Callable[[], Any], timeout: float = 240, every: float = 0.5) -> Any:
    """``check()``'s first truthy value, or AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@contextmanager
def served_backend(label_studio: Any, model: Path | str, data: Path, **env: str) -> Iterator[dict[str, Any]]:
    """`vrshq serve` on the CPU with ``model``, its data folder under ``data``, wired to
    ``label_studio`` (URL, token, local-files root); ``env``: more variables. Yields
    ``{"url", "env", "model_dir", "log"}`` and stops the server after."""
    full = {**os.environ, "VRSHQ_MODEL": str(model), "MODEL_DIR": str(data / "model-dir"),
            "VRSHQ_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.doc_root), **env}
    port = free_port()
    log = data / "serve.log"
    proc = start(["--port", str(port), "--threads", "4"], full, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log)
        yield {"url": url, "env": full, "model_dir": Path(full["MODEL_DIR"]), "log": log}
    finally:
        stop(proc)
