"""``vrshq studio``: Label Studio and the backend on this machine, with a sample project, ready to use.

Embedded defaults only: Label Studio with SQLite (its own venv, ``.venv-ls``), the backend with
its SQLite corrections log and in-process jobs, synthetic sample videos served as Label Studio
local files. The weights are ``--model``/``$VRSHQ_MODEL`` when given, else the tiny random
models (their ``model_version`` says "untrained": the tracks are real output of the real
pipeline, not good masks). Everything lives under ``--dir``; running it again reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vrshq.cli.progress import add_progress_option, progress_bar
from vrshq.errors import VrshqError

PROJECT_TITLE = "vrshq sample: text-prompted tracks"
SAMPLES = (  # (file, prompt, SyntheticSpec fields)
    ("street.mp4", "the red disc\nthe green car", {"num_frames": 48, "num_objects": 2, "seed": 1}),
    ("yard.mp4", "the yellow animal\nthe red disc", {"num_frames": 36, "num_objects": 3, "seed": 2}),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "studio", help="run Label Studio + the backend locally with a sample project",
        description="Start Label Studio (from .venv-ls, see scripts/setup_labelstudio.sh) and "
        "`vrshq serve` on this machine, create a sample project with synthetic videos and text "
        "prompts, connect the backend, pre-annotate the tasks, print the URL and the login, and "
        "keep both running until Ctrl-C.")
    p.add_argument("--dir", default="studio", help="working folder (default ./studio)")
    p.add_argument("--port", type=int, default=8080, help="Label Studio's port (default 8080)")
    p.add_argument("--backend-port", type=int, default=9090, help="the backend's port (default 9090)")
    p.add_argument("--model", default=os.environ.get("VRSHQ_MODEL") or None,
                   help="VRS-HQ model folder (default $VRSHQ_MODEL, else the tiny random models)")
    p.add_argument("--label-studio", help="the label-studio executable (default .venv-ls/bin/label-studio)")
    p.add_argument("--check", action="store_true",
                   help="stop once the sample tasks are pre-annotated (exit 0 when every object "
                   "has a track), instead of serving until Ctrl-C")
    add_progress_option(p)
    p.set_defaults(run=run)


def _credentials(folder: Path) -> dict[str, str]:
    path = folder / "login.json"
    if path.is_file():
        return json.loads(path.read_text())
    creds = {"username": "admin@vrshq.local", "password": "pw" + secrets.token_urlsafe(9),
             "token": secrets.token_hex(20)}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    path.chmod(0o600)
    return creds


def _samples(media: Path) -> list[dict[str, Any]]:
    from vrshq.synthetic import SyntheticSpec, write_video

    clips = media / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name, prompt, fields in SAMPLES:
        spec = SyntheticSpec(width=320, height=240, fps=10.0, **fields)
        if not (clips / name).is_file():
            write_video(spec, clips / name)
        tasks.append({"data": {"video": f"/data/local-files/?d=clips/{name}", "fps": spec.fps,
                               "prompt": prompt}})
    return tasks


def _start_backend(args: argparse.Namespace, folder: Path, model: str, ls_url: str, token: str,
                   media: Path) -> subprocess.Popen:
    import requests

    env = {**os.environ, "VRSHQ_PLUGIN": "vrshq", "VRSHQ_MODEL": model,
           "MODEL_DIR": str(folder / "backend"), "LABEL_STUDIO_URL": ls_url,
           "LABEL_STUDIO_API_KEY": token, "LOCAL_FILES_DOCUMENT_ROOT": str(media)}
    log = (folder / "backend.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "vrshq.cli", "serve", "--port", str(args.backend_port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{args.backend_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "backend.log").read_text(errors="replace")[-2000:]
            raise VrshqError(f"the backend exited ({proc.returncode}); {folder / 'backend.log'}:\n{tail}")
        try:
            if requests.get(url + "/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    _stop(proc)
    raise VrshqError(f"the backend did not answer {url}/health within 300 s ({folder / 'backend.log'})")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _project(api: Any, media: Path, backend_url: str) -> tuple[int, list[int]]:
    from vrshq.backend.labelstudio.labelconfig import shipped_config

    found = [p for p in api.get("/api/projects/", params={"page_size": 1000}).get("results", [])
             if p.get("title") == PROJECT_TITLE]
    if found:
        pid = int(found[0]["id"])
        return pid, [int(t["id"]) for t in api.list_tasks(pid)]
    pid = api.create_project(PROJECT_TITLE, shipped_config("video_text_prompt"))
    api.add_local_storage(pid, media / "clips", title="sample clips")
    task_ids = api.import_tasks(pid, _samples(media))
    api.connect_ml_backend(pid, backend_url, is_interactive=True, title="vrshq")
    return pid, task_ids


def _wait_predictions(args: argparse.Namespace, api: Any, pid: int, task_ids: list[int],
                      timeout: float = 600) -> list[dict]:
    api.retrieve_predictions(pid, task_ids)
    deadline = time.monotonic() + timeout
    done: dict[int, dict] = {}
    with progress_bar(args, "pre-annotating", "task", len(task_ids)) as bar:
        while len(done) < len(task_ids):
            for tid in task_ids:
                if tid not in done:
                    preds = api.list_predictions(tid)
                    if preds:
                        done[tid] = preds[-1]
                        bar.update(1)
            if len(done) < len(task_ids):
                if time.monotonic() > deadline:
                    raise VrshqError(f"no prediction for tasks {sorted(set(task_ids) - set(done))} "
                                     f"after {timeout:.0f} s")
                time.sleep(1)
    return [done[t] for t in task_ids]


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from vrshq.backend.labelstudio.local import LabelStudioServer, find_label_studio
    from vrshq.model.tiny import write_tiny_vrshq

    folder = Path(args.dir).resolve()
    if folder.exists() and not folder.is_dir():
        raise VrshqError(f"--dir {folder}: exists and is not a folder")
    executable = find_label_studio(args.label_studio)
    model = args.model
    if model is None:
        model = str(folder / "models")
        if not (Path(model) / "vrshq" / "config.json").is_file():
            print("writing the tiny random models (untrained) ...", file=sys.stderr)
            write_tiny_vrshq(Path(model))
    elif not Path(model).is_dir():
        raise VrshqError(f"--model {model}: not a folder")
    media = folder / "media"
    _samples(media)
    creds = _credentials(folder)
    server = LabelStudioServer(doc_root=media, data_dir=folder / "label-studio", port=args.port,
                               username=creds["username"], password=creds["password"],
                               token=creds["token"], log_path=folder / "label-studio.log",
                               executable=executable, fixed_port=True)
    backend_proc = None
    print(f"starting Label Studio on {server.url} (first start: about a minute) ...", file=sys.stderr)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # run the finally below: both servers stop with us

    signal.signal(signal.SIGTERM, terminate)
    try:
        server.start()
        server.wait_ready(timeout=300)
        backend_proc = _start_backend(args, folder, model, server.url, creds["token"], media)
        backend_url = f"http://127.0.0.1:{args.backend_port}"
        api = server.api()
        pid, task_ids = _project(api, media, backend_url)
        preds = _wait_predictions(args, api, pid, task_ids)
        objects = sum(1 for p in preds for r in p["result"] if r["type"] == "videorectangle")
        version = preds[0].get("model_version", "?") if preds else "?"
        print(f"\nLabel Studio: {server.url}/projects/{pid}/data\n"
              f"  login:      {creds['username']}  password: {creds['password']}\n"
              f"  backend:    {backend_url} (model_version: {version})\n"
              f"  {len(task_ids)} sample tasks pre-annotated, {objects} object tracks; open a task, "
              "fix a keyframe mask with the brush and submit: the track is re-propagated.\n"
              f"  logs:       {folder / 'label-studio.log'}, {folder / 'backend.log'}")
        if args.check:
            empty = [p["task"] for p in preds if not p["result"]]
            if empty:
                raise VrshqError(f"tasks {empty} got empty predictions")
            return 0
        print("Ctrl-C stops both.", file=sys.stderr)
        while server.proc.poll() is None and backend_proc.poll() is None:
            time.sleep(1)
        raise VrshqError("Label Studio or the backend stopped; see the logs above")
    finally:
        _stop(backend_proc)
        server.stop()
