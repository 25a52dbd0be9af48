"""Load test of a real `vrshq serve` on loopback: concurrent /predict latency, throughput, correctness.

    python -m bench.load_bench [--requests 48] [--concurrency 8] [--workers 1] [--threads 8]

Writes tiny random models and synthetic videos (each its own length, size, fps and object
count), starts `vrshq serve` (gunicorn) on a free 127.0.0.1 port and sends N /predict requests
one at a time (the reference, in the same process), N others with ``--concurrency`` threads, and
those N again (answered from the backend's saved predictions). Each task has its own id, video
and prompts, so every response can be checked against
its task: region ids, object count, labels, frame count, fps, mask size. Any mismatch, error
or a run past ``--timeout`` exits non-zero. Prints a table and writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import requests
from tqdm import tqdm

from bench.common import machine, print_table, write_json
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video

TEXT_XML = (Path(__file__).resolve().parents[1] / "backend/configs/video_text_prompt.xml").read_text()
PROJECT = "7.1700000000"
# Each prompt names one label of TEXT_XML, so the expected label of every object is known.
PROMPTS = (("the person", "Person"), ("the car", "Car"), ("the animal", "Animal"),
           ("the object", "Object"))
# Per video: frames, width, height, fps, objects drawn. All below VRSHQ_SYNC_FRAMES: sync path.
VIDEOS = ((8, 96, 64, 10.0, 1), (12, 128, 96, 25.0, 2), (16, 112, 80, 12.0, 3), (10, 64, 64, 15.0, 2),
          (14, 80, 48, 20.0, 1), (9, 120, 88, 8.0, 3), (11, 72, 56, 30.0, 2), (13, 104, 72, 5.0, 1))


@dataclass(frozen=True)
class Task:
    """One /predict task and what its correct answer must look like."""

    id: int
    video: str  # path under the local-files root
    frames: int
    width: int
    height: int
    fps: float
    prompts: tuple[str, ...]
    labels: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        """The /predict body Label Studio would send for this task alone."""
        return {"project": PROJECT, "label_config": TEXT_XML, "tasks": [{
            "id": self.id, "project": int(PROJECT.split(".")[0]),
            "data": {"video": f"/data/local-files/?d={self.video}", "fps": self.fps,
                     "prompt": "\n".join(self.prompts)}}]}


@dataclass
class Outcome:
    """One sent request: its task, latency, HTTP status (0: no answer) and body (None: not JSON)."""

    task: Task
    latency_s: float
    status: int
    body: Any
    error: str | None = None
    worker: str | None = None  # the serving process's pid (X-Vrshq-Worker)


class CliError(Exception):
    """A bad command line or an unusable setting, reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like the vrshq CLI
        raise CliError(message)


def make_data(work: Path, n_videos: int, n_tasks: int, first_id: int = 5000) -> tuple[Path, Path, list[Task]]:
    """Tiny models, ``n_videos`` synthetic videos and ``n_tasks`` tasks over them, under ``work``."""
    from vrshq.model.tiny import write_tiny_vrshq

    models, media = work / "models", work / "media"
    if not (models / "vrshq" / "config.json").is_file():
        write_tiny_vrshq(models, seed=0)
    (media / "clips").mkdir(parents=True, exist_ok=True)
    specs = []
    for k in range(n_videos):
        frames, width, height, fps, objects = VIDEOS[k]
        spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=fps,
                             num_objects=objects, seed=10 + k)
        path = media / "clips" / f"v{k}.mp4"
        if not path.is_file():
            write_video(spec, path)
        # The exact ground truth fixes the shape every response must have for this video.
        gt = ground_truth(spec)
        specs.append((f"clips/v{k}.mp4", gt.shape[0], gt.shape[2], gt.shape[1], fps))
    tasks = []
    for i in range(n_tasks):
        video, frames, width, height, fps = specs[i % n_videos]
        n = 1 + (i // n_videos) % 3  # 1-3 objects, varying independently of the video
        chosen = [PROMPTS[(i + j) % len(PROMPTS)] for j in range(n)]
        tasks.append(Task(first_id + i, video, frames, width, height, fps,
                          tuple(p for p, _ in chosen), tuple(lb for _, lb in chosen)))
    return models, media, tasks


def check_response(task: Task, status: int, body: Any) -> list[str]:
    """What is wrong with ``body`` as the answer to ``task`` (empty: it is that task's answer)."""
    from vrshq.backend.labelstudio.predictions import page_frame, track_region_id
    from vrshq.masks import decode_brush

    where = f"task {task.id}"
    if status != 200:
        return [f"{where}: HTTP {status}: {str(body)[:200]}"]
    try:
        (pred,) = body["results"]
        results = pred["result"]
    except (TypeError, KeyError, ValueError):
        return [f"{where}: not one prediction: {str(body)[:200]}"]
    problems = [f"{where}: errors {body['errors']}"] if body.get("errors") else []
    tracks = [r for r in results if r.get("type") == "videorectangle"]
    brushes = [r for r in results if r.get("type") == "brushlabels"]
    masks = [r for r in brushes if page_frame(str(r.get("id"))) is None]  # keyframe pages
    pages = [r for r in brushes if page_frame(str(r.get("id"))) is not None]  # VRSHQ_MASK_PAGES
    ids = [f"vrshq-{task.id}-{k}" for k in range(1, len(task.prompts) + 1)]
    label_of = dict(zip(ids, task.labels))
    for r in pages:
        owner = track_region_id(str(r.get("id")))
        if owner not in label_of:
            problems.append(f"{where}: mask page {r.get('id')} belongs to no object of the task")
        elif tuple(r.get("value", {}).get("brushlabels", ())) != (label_of[owner],):
            problems.append(f"{where}: mask page {r.get('id')} is not labelled {label_of[owner]}")
    if [t.get("id") for t in tracks] != ids:
        problems.append(f"{where}: track ids {[t.get('id') for t in tracks]} != {ids}")
    if [m.get("id") for m in masks] != [i + "-mask" for i in ids]:
        problems.append(f"{where}: mask ids {[m.get('id') for m in masks]} != {ids} + -mask")
    labels = [tuple(t.get("value", {}).get("labels", ())) for t in tracks]
    labels += [tuple(m.get("value", {}).get("brushlabels", ())) for m in masks]
    if labels != [(lb,) for lb in task.labels] * 2:
        problems.append(f"{where}: labels {labels} != {list(task.labels)} (tracks, then masks)")
    for t in tracks:
        value = t.get("value", {})
        seq = value.get("sequence") or []
        if value.get("framesCount") != task.frames:
            problems.append(f"{where}: {t.get('id')} framesCount {value.get('framesCount')} != {task.frames}")
        if not seq or any(not 1 <= k.get("frame", 0) <= task.frames for k in seq):
            problems.append(f"{where}: {t.get('id')} sequence frames outside 1..{task.frames}")
        elif any(abs(k.get("time", -1) - k["frame"] / task.fps) > 1e-6 for k in seq):
            problems.append(f"{where}: {t.get('id')} keyframe times are not frame / {task.fps}")
    for m in masks:
        size = (m.get("original_width"), m.get("original_height"))
        if size != (task.width, task.height):
            problems.append(f"{where}: {m.get('id')} mask {size} != {(task.width, task.height)}")
            continue
        try:  # the RLE itself must hold a mask of that size, not just say so
            decode_brush(m["value"]["rle"], task.height, task.width)
        except Exception as exc:  # noqa: BLE001 - any failure to decode is a mismatch
            problems.append(f"{where}: {m.get('id')} brush RLE: {exc}")
    return problems


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: Path, media: Path, work: Path, workers: int, threads: int,
                 torch_threads: int, deadline: float) -> tuple[subprocess.Popen, str, Path]:
    """Start `vrshq serve` and wait for /health; returns the process, its URL and its log."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()  # self-contained: no Label Studio, Redis or auth
           if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "REDIS_URL", "BASIC_AUTH_USER",
                        "BASIC_AUTH_PASS", "VRSHQ_MEDIA_ROOTS", "VRSHQ_PLUGIN")}
    env.update({"VRSHQ_MODEL": str(models), "MODEL_DIR": str(work / "data"),
                "LOCAL_FILES_DOCUMENT_ROOT": str(media), "VRSHQ_DEVICE": "cpu",
                "VRSHQ_SYNC_FRAMES": "600", "OMP_NUM_THREADS": str(torch_threads)})
    log = work / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "vrshq.cli", "serve", "--port", str(port),
                             "--workers", str(workers), "--threads", str(threads)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vrshq serve exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise TimeoutError(f"vrshq serve not up before the deadline:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> int:
    """SIGTERM the server's process group; SIGKILL it if it has not stopped within 30 s."""
    if proc.poll() is not None:
        return proc.returncode
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def run_phase(url: str, tasks: list[Task], concurrency: int, deadline: float,
              desc: str) -> tuple[list[Outcome], float, bool]:
    """Send one /predict per task with ``concurrency`` threads; (outcomes, wall seconds, timed out)."""
    local = threading.local()  # one keep-alive session per client thread

    def send(task: Task) -> Outcome:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        start = time.perf_counter()
        try:
            r = local.session.post(url + "/predict", json=task.payload(),
                                   timeout=max(0.1, deadline - time.monotonic()))
        except requests.RequestException as exc:
            return Outcome(task, time.perf_counter() - start, 0, None, f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - start
        try:
            body = r.json()
        except ValueError:
            body = r.text[:200]
        return Outcome(task, latency, r.status_code, body, worker=r.headers.get("X-Vrshq-Worker"))

    outcomes: list[Outcome] = []
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=concurrency)
    pending = {pool.submit(send, t) for t in tasks}
    with tqdm(total=len(tasks), desc=desc, unit="req", file=sys.stderr, leave=False) as bar:
        while pending and time.monotonic() < deadline:
            done, pending = wait(pending, timeout=deadline - time.monotonic(), return_when=FIRST_COMPLETED)
            for f in done:
                outcomes.append(f.result())
                bar.update()
    wall = time.perf_counter() - start
    for f in pending:
        f.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
    return outcomes, wall, bool(pending)


def frames_tracked(url: str) -> float | None:
    """The server's vrshq_frames_total (object-frames tracked by the model, all workers); None when
    /metrics does not answer."""
    try:
        text = requests.get(url + "/metrics", timeout=10).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith("vrshq_frames_total "):
            return float(line.split()[1])
    return None


def summarize(name: str, outcomes: list[Outcome], wall: float, requested: int, concurrency: int,
              timed_out: bool) -> tuple[dict[str, Any], list[str]]:
    """Latency percentiles, throughput and correctness of one phase, plus its problems."""
    problems: list[str] = []
    bad = 0
    for o in outcomes:
        found = [f"task {o.task.id}: {o.error}"] if o.error else check_response(o.task, o.status, o.body)
        problems += found
        bad += bool(found)
    lat = np.array([o.latency_s for o in outcomes]) if outcomes else np.zeros(1)
    p50, p95, p99 = (float(v) for v in np.percentile(lat, [50, 95, 99]))
    # gunicorn hands keep-alive connections to whichever worker accepts first: show the spread.
    per_worker = sorted(Counter(o.worker for o in outcomes if o.worker).values(), reverse=True)
    return {"phase": name, "requests": requested, "completed": len(outcomes), "concurrency": concurrency,
            "ok": len(outcomes) - bad, "mismatches": bad, "timed_out": timed_out,
            "wall_s": wall, "throughput_rps": len(outcomes) / wall if wall > 0 else 0.0,
            "p50_s": p50, "p95_s": p95, "p99_s": p99, "mean_s": float(lat.mean()),
            "requests_per_worker": per_worker}, problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked (CliError names a bad value)."""
    p = _Parser(prog="python -m bench.load_bench", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=48, help="requests per phase (default 48)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--videos", type=int, default=4, help=f"synthetic videos, 1..{len(VIDEOS)} (default 4)")
    p.add_argument("--workers", type=int, default=1, help="vrshq serve --workers (default 1)")
    p.add_argument("--threads", type=int, default=8, help="vrshq serve --threads (default 8)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="OMP_NUM_THREADS of each worker (default: CPUs / workers)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="overall deadline in seconds, server start included (default 600)")
    p.add_argument("--work", help="folder for models, videos and the server's data (default: a temp dir)")
    p.add_argument("--out", help="JSON output (default bench/results/load.json)")
    args = p.parse_args(argv)
    for name in ("requests", "concurrency", "workers", "threads"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 1 <= args.videos <= len(VIDEOS):
        raise CliError(f"--videos must be in 1..{len(VIDEOS)}, got {args.videos}")
    if args.torch_threads < 0 or not args.timeout > 0:
        raise CliError("--torch-threads must be >= 0 and --timeout > 0")
    args.torch_threads = args.torch_threads or max(1, (os.cpu_count() or 1) // args.workers)
    return args


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Outcome]]:
    """The whole bench: data, server, warm-up, then sequential, concurrent and again; (payload, outcomes)."""
    deadline = time.monotonic() + args.timeout
    load_start = os.getloadavg()  # other work on the machine skews the numbers: record it
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vrshq-load-"))
    if not args.work:
        atexit.register(shutil.rmtree, work, True)
    work.mkdir(parents=True, exist_ok=True)
    models, media, tasks = make_data(work, args.videos, args.requests)
    proc, url, log = start_server(models, media, work, args.workers, args.threads,
                                  args.torch_threads, deadline)
    try:
        # Warm-up (ids of their own): the first calls of a worker pay one-off costs.
        warm = [replace(t, id=t.id + 100_000) for t in tasks[: 2 * args.workers]]
        run_phase(url, warm, args.workers, deadline, "warm-up")
        phases, problems, all_outcomes = [], [], []
        # The concurrent phase asks for tasks of its own: the backend answers a task asked again
        # from its saved prediction, which the third phase ("again") measures.
        fresh = [replace(t, id=t.id + 200_000) for t in tasks]
        for name, conc, batch in (("sequential", 1, tasks), ("concurrent", args.concurrency, fresh),
                                  ("again", args.concurrency, fresh)):
            before = frames_tracked(url)
            outcomes, wall, timed_out = run_phase(url, batch, conc, deadline, name)
            after = frames_tracked(url)
            row, found = summarize(name, outcomes, wall, len(tasks), conc, timed_out)
            # What the model tracked in the phase (none when answered from saved predictions).
            row["frames_tracked"] = after - before if before is not None and after is not None else None
            phases.append(row)
            problems += [f"{name}: {p}" for p in found]
            all_outcomes += outcomes
            if timed_out:
                break
    finally:
        code = stop_server(proc)
    seq = phases[0]
    con = phases[1] if len(phases) > 1 else None
    again = phases[2] if len(phases) > 2 else None
    payload = {
        "nproc": os.cpu_count(),
        "loadavg_1m_start_end": [load_start[0], os.getloadavg()[0]],
        "server": {"workers": args.workers, "threads": args.threads, "torch_threads": args.torch_threads,
                   "exit_code": code},
        "videos": [{"path": v, "frames": f, "width": w, "height": h, "fps": fps} for v, f, w, h, fps in
                   sorted({(t.video, t.frames, t.width, t.height, t.fps) for t in tasks})],
        "phases": phases,
        "throughput_ratio_concurrent_vs_sequential":
            con["throughput_rps"] / seq["throughput_rps"] if con and seq["throughput_rps"] else None,
        "p50_ratio_concurrent_vs_sequential": con["p50_s"] / seq["p50_s"] if con and seq["p50_s"] else None,
        "throughput_ratio_again_vs_concurrent":
            again["throughput_rps"] / con["throughput_rps"] if again and con and con["throughput_rps"] else None,
        "mismatches": sum(p["mismatches"] for p in phases),
        "timed_out": any(p["timed_out"] for p in phases) or again is None,
        "problems": problems[:20],
        "serve_log": str(log),
    }
    return payload, all_outcomes


def report(payload: dict[str, Any], out: str | None) -> Path:
    """Print the table and ratios; write the JSON (``out`` or bench/results/load.json)."""
    cols = ("phase", "requests", "completed", "concurrency", "ok", "mismatches", "wall_s",
            "throughput_rps", "p50_s", "p95_s", "p99_s", "requests_per_worker")
    s = payload["server"]
    print_table(f"/predict load on vrshq serve ({s['workers']} worker(s) x {s['threads']} threads, "
                f"{s['torch_threads']} torch threads each; {payload['nproc']} CPUs)",
                [{c: p[c] for c in cols} for p in payload["phases"]])
    ratio = payload["throughput_ratio_concurrent_vs_sequential"]
    if ratio is not None:
        print(f"\nthroughput concurrent / sequential: {ratio:.3g}x; "
              f"p50 latency concurrent / sequential: {payload['p50_ratio_concurrent_vs_sequential']:.3g}x")
    again = payload.get("throughput_ratio_again_vs_concurrent")
    if again is not None:
        print(f"throughput of the same tasks asked again (saved predictions) / concurrent: {again:.3g}x")
    for p in payload["problems"]:
        print(f"MISMATCH {p}")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    else:
        path = write_json("load", payload)
    print(f"\nwrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every response was right and the deadline held, else 1 (2: bad args)."""
    try:
        args = parse_args(argv)
    except CliError as exc:
        print(f"load_bench: error: {exc}", file=sys.stderr)
        return 2
    try:
        payload, _ = run(args)
    except (RuntimeError, TimeoutError, OSError) as exc:
        first, _, rest = str(exc).partition("\n")
        print(f"load_bench: error: {first}", file=sys.stderr)
        if rest:  # the server log's tail, to see why
            print(rest, file=sys.stderr)
        return 1
    report(payload, args.out)
    if payload["timed_out"]:
        print(f"load_bench: error: deadline of {args.timeout:g} s exceeded", file=sys.stderr)
    return 1 if payload["mismatches"] or payload["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main())
