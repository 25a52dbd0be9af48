"""Correction round trip: webhook with a corrected keyframe mask -> re-propagation -> stored prediction.

    python -m bench.roundtrip_bench [--frames 300] [--size 1280x720] [--sam2 release]
                                    [--device auto] [--precision official]

The backend runs as shipped (``vrshq.backend.http.app`` served over HTTP on 127.0.0.1, its in-process job
runner, the vrshq plugin) on a model folder made here: a tiny random MLLM and CLIP with SAM-2
either tiny or ``release`` (the release's 2.0 hiera-L at 1024 px, random weights, under
``model.visual_model.*`` as in the release checkpoint). Label Studio is replaced by an
in-process STAND-IN for its REST API (``bench.ls_standin``; the output says so), because the
machines this runs on have no Label Studio; the backend's own client (label-studio-sdk) talks to
it over HTTP. The real round trip is ``tests/test_labelstudio_e2e.py``.

Steps, as Label Studio drives them: ``/setup`` (the project's config, URL and token),
``/predict`` of a text-prompt task (two objects; the answer stored as Label Studio stores it),
then an annotation whose object-1 keyframe mask is corrected to the ground truth, sent as an
``ANNOTATION_CREATED`` webhook; timed until the re-propagated prediction is stored. Reported:
predict time, webhook answer time, webhook-to-stored-prediction time, peak GPU memory of each
(CUDA), the stand-in's calls, and checks of what was stored (same regions, the correction kept
exactly, the other object untouched, every frame tracked). Exits 1 when a check fails. Writes
bench/results/roundtrip.json.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import logging
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench.common import (
    PRECISIONS,
    engine_config,
    gpu_peak_mib,
    print_table,
    reset_gpu_peak,
    timed,
    write_json,
)
from bench.ls_standin import NOTE, LabelStudioStandIn

PROJECT = 1
TASK = 7
TOKEN = "standin-token-0123456789abcdef"
PROMPTS = "the red disc\nthe car"
CONFIG_XML = Path(__file__).resolve().parents[1] / "backend" / "configs" / "video_text_prompt.xml"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _serve(app) -> tuple[Any, str]:
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="backend").start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _post(url: str, payload: dict, timeout: float) -> tuple[float, dict]:
    start = time.perf_counter()
    r = requests.post(url, json=payload, timeout=timeout)
    seconds = time.perf_counter() - start
    if r.status_code >= 300:
        raise RuntimeError(f"POST {url} -> {r.status_code}: {r.text[:2000]}")
    return seconds, r.json()


def run(frames: int, width: int, height: int, sam2: str, device: str, precision: str,
        work: Path, timeout: float = 600.0) -> dict:
    """The round trip; its measurements and checks."""
    import torch

    from vrshq.backend.http.app import create_app
    from vrshq.backend.config import BackendConfig
    from vrshq.backend.labelstudio.labelconfig import parse_label_config
    from vrshq.backend.service import Backend
    from vrshq.masks import encode_brush
    from vrshq.model.tiny import write_tiny_vrshq
    from vrshq.synthetic import SyntheticSpec, ground_truth, write_video

    t: dict[str, float] = {}
    label_config = CONFIG_XML.read_text()
    info = parse_label_config(label_config)
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0, num_objects=2,
                         seed=5)
    media = work / "media"
    with timed(t, "video_write_s"):
        write_video(spec, media / "clips" / "roundtrip.mp4")
    gt = ground_truth(spec)
    with timed(t, "model_write_s"):
        write_tiny_vrshq(work / "models", seed=0, sam2=sam2)
    dev = engine_config(device, precision).resolved_device()
    config = BackendConfig(plugin="vrshq", model_dir=str(work / "models"), device=device,
                           precision=precision, data_dir=str(work / "backend"),
                           local_roots=(str(media),), sync_frame_budget=max(600, frames))
    with timed(t, "model_load_s"):
        backend = Backend(config)  # loads the plugin's models, as `vrshq serve` does
    data = {"video": "/data/local-files/?d=clips/roundtrip.mp4", "fps": spec.fps, "prompt": PROMPTS}
    out: dict[str, Any] = {
        "label_studio": NOTE, "frames": frames, "size": f"{width}x{height}", "sam2": sam2,
        "sam2_image_size": int(backend.plugin.model.sam2.image_size), "device": str(dev),
        "precision": precision,
        "sam2_dtype": str(next(backend.plugin.model.sam2.parameters()).dtype).removeprefix("torch.")}
    standin = LabelStudioStandIn(TOKEN, {TASK: data}, project=PROJECT).start()
    server, url = _serve(create_app(backend=backend))
    try:
        # Label Studio's "Connect model": /setup with the project's config, its URL and a token.
        _post(f"{url}/setup", {"project": str(PROJECT), "schema": label_config,
                               "hostname": standin.url, "access_token": TOKEN}, 60)
        reset_gpu_peak(dev)
        predict_s, body = _post(f"{url}/predict", {
            "tasks": [{"id": TASK, "project": PROJECT, "data": data}], "project": str(PROJECT),
            "label_config": label_config}, timeout)
        out["predict_s"] = predict_s
        out["predict_gpu_peak_mib"] = gpu_peak_mib(dev)
        (predicted,) = body["results"]
        # Label Studio stores a /predict answer as the task's prediction itself.
        standin._create_prediction({"task": TASK, **predicted})
        state = backend.states.load(PROJECT, TASK)
        keyframe = state.object(1).keyframe
        fixed = gt[keyframe] == 1
        if not fixed.any() or np.array_equal(fixed, state.object(1).keyframe_mask):
            fixed = np.zeros_like(fixed)
            fixed[height // 4: height // 2, width // 4: width // 2] = True
        result = copy.deepcopy(predicted["result"])
        brush = next(r for r in result if r["id"] == f"vrshq-{TASK}-1-mask")
        brush["value"]["rle"] = encode_brush(fixed)
        webhook = {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT},
                   "task": {"id": TASK, "project": PROJECT, "data": standin.tasks[TASK]["data"]},
                   "annotation": {"id": 1, "task": TASK, "completed_by": 1, "result": result,
                                  "was_cancelled": False,
                                  "updated_at": datetime.now(timezone.utc).isoformat()}}
        reset_gpu_peak(dev)
        start = time.perf_counter()
        webhook_s, answer = _post(f"{url}/webhook", webhook, 60)
        stored = None
        while time.perf_counter() - start < timeout:
            preds = standin.task_predictions(TASK)
            if len(preds) > 1:
                stored = preds[-1]
                break
            time.sleep(0.02)
        out["webhook_to_stored_prediction_s"] = time.perf_counter() - start
        out["webhook_answer_s"] = webhook_s
        out["correction_gpu_peak_mib"] = gpu_peak_mib(dev)
        job_id = answer["result"]["job"]
        job = _finished_job(url, job_id, start + timeout) if job_id else None
        if stored is None:
            raise RuntimeError(f"no re-propagated prediction within {timeout} s (job: {job})")
        out["job"] = {k: job.get(k) for k in ("kind", "state", "done", "total")} if job else None
        out["checks"] = _checks(stored, predicted, info, fixed, backend, answer, frames)
        out["label_studio_calls"] = standin.call_counts()
    finally:
        server.shutdown()
        backend.close()
        standin.close()
    out.update(t)
    out["gpu"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return out


def _finished_job(url: str, job_id: str, deadline: float) -> dict:
    """The job's record once it has finished (or as it stands at ``deadline``): the job posts
    its prediction before it ends (it queues the overlay job after), so the stored prediction
    alone does not mean the job is done."""
    while True:
        job = requests.get(f"{url}/jobs/{job_id}", timeout=30).json()
        if job.get("state") not in ("queued", "running") or time.perf_counter() > deadline:
            return job
        time.sleep(0.02)


def _checks(stored: dict, predicted: dict, info, fixed: np.ndarray, backend, answer: dict,
            frames: int) -> dict[str, bool | float]:
    from vrshq.backend.labelstudio.predictions import parse_annotation

    new = parse_annotation(stored["result"], info)
    old = parse_annotation(predicted["result"], info)
    state = backend.states.load(PROJECT, TASK)
    obj = state.object(1)
    tracked = obj.track.mask(obj.keyframe)
    tracks = [r for r in stored["result"] if r["type"] == "videorectangle"]
    return {
        "webhook_logged_one_correction": answer["result"]["corrections"] == 1
        and len(backend.corrections.list(project=PROJECT, task=TASK)) == 1,
        "same_region_ids": {r["id"] for r in stored["result"]} == {r["id"] for r in predicted["result"]},
        "corrected_mask_stored_exactly": bool(np.array_equal(new[f"vrshq-{TASK}-1"].mask, fixed)),
        "other_object_unchanged": new[f"vrshq-{TASK}-2"].boxes == old[f"vrshq-{TASK}-2"].boxes,
        "every_frame_tracked": len(obj.track.frames()) == frames
        and all(r["value"].get("framesCount") == frames for r in tracks),
        "keyframe_iou_with_correction": round(_iou(tracked, fixed), 4),
    }


def passed(checks: dict) -> bool:
    """Whether every check holds (the keyframe track follows the correction: IoU > 0.9)."""
    return all(v for k, v in checks.items() if isinstance(v, bool)) \
        and checks["keyframe_iou_with_correction"] > 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="1280x720", help="video frame size WxH")
    parser.add_argument("--sam2", choices=("release", "tiny"), default="release",
                        help="release: 2.0 hiera-L at 1024 px (random weights); tiny: 128 px")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="official",
                        help="the precision plan (VRSHQ_PRECISION): official (the release's "
                             "bf16 weights), fp32, auto (official on CUDA, fp32 on a CPU)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the prediction and the re-propagation")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="vrshq-roundtrip-"))
    atexit.register(shutil.rmtree, work, True)
    results = run(args.frames, width, height, args.sam2, args.device, args.precision, work,
                  args.timeout)
    ok = passed(results["checks"])
    results["passed"] = ok
    print(f"\n{NOTE}")
    print_table(f"correction round trip ({args.frames} frames of {args.size}, SAM-2 {args.sam2}, "
                f"{results['device']}, {args.precision})",
                [{k: results[k] for k in ("predict_s", "webhook_answer_s",
                                          "webhook_to_stored_prediction_s", "predict_gpu_peak_mib",
                                          "correction_gpu_peak_mib")}])
    print_table("checks", [results["checks"]])
    print(f"\nwrote {write_json('roundtrip', results)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
