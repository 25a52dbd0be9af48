"""`vrshq serve` started for real next to the session's Label Studio, for the end-to-end tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
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


def connected_task(label_studio: Any, ls_api: Any, backend: Mapping[str, Any], spec: Any, name: str,
                   xml: str, prompt: str = "the red disc\nthe green car") -> tuple[int, int, int]:
    """A project ``vrshq <name>`` with one task: ``spec``'s synthetic video encoded into the media
    root's folder ``name``, its ``prompt``; connected to the served ``backend`` and its prediction
    asked for (not waited on). ``(project id, task id, ML backend id)``."""
    from vrshq.synthetic import write_video

    clips = label_studio.doc_root / name
    clips.mkdir(parents=True, exist_ok=True)
    write_video(spec, clips / "v.mp4")
    pid = ls_api.create_project(f"vrshq {name}", xml)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": f"/data/local-files/?d={name}/v.mp4",
                                                 "fps": spec.fps, "prompt": prompt}}])
    ml = ls_api.connect_ml_backend(pid, backend["url"], is_interactive=True)
    ls_api.retrieve_predictions(pid, [tid])
    return pid, tid, ml


def first_extra_page(state: Any, obj_id: int = 1) -> tuple[int, int]:
    """(page index in the pager, 0-based frame) of object ``obj_id``'s first extra mask page."""
    page = next(i for i, p in enumerate(state.pages, start=len(state.objects)) if p.obj_id == obj_id)
    return page, state.pages[page - len(state.objects)].frame
