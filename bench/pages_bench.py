"""Mask pages (issue 14 §2): the cost of pages, of "frame N", and of a fix on a non-keyframe page.

    python -m bench.pages_bench [--frames 300] [--size 320x240] [--sam2 tiny] [--pages 2]
                                [--device auto] [--precision auto] [--feature-cache-mb 2048]
                                [--compare-uncached] [--overlay]

The backend runs as shipped (``vrshq.backend.http.app`` served over HTTP on 127.0.0.1, the vrshq
plugin on a tiny random model folder written here, as ``bench.roundtrip_bench`` does), with
Label Studio replaced by the in-process stand-in of ``bench.ls_standin`` (the output says so).
In one run, on one machine, against a from-scratch ``/predict`` of a two-object text task:

* ``pages_ratio``: the wall time of writing every mask page (choosing the extra pages, the page
  images with their captions, the task data) over the prediction's; target <= 0.10;
* ``frame_n_ratio``: ``frame N`` typed into the prompt box (``/predict`` with a context) until
  the answer with the new pages; over the prediction's;
* ``fix_ratio``: a brush fix on an object's extra (non-keyframe) page, sent as Label Studio's
  auto-annotation does (``/predict`` with the brush in the context), until the answer with the
  re-propagated object; over the prediction's; target <= 0.4. ``keyframe_fix_ratio``: the same
  on the other object's keyframe page (the correction path as it was before extra pages).
* with ``--overlay``, ``fix_overlay_ratio``: from the same fix's request until its ``overlay``
  job (queued after the answer: the open editor reads the overlay URL only on its next load)
  has written the overlay video and strips into the task data; over the prediction's.
  ``overlay_lag_s`` is how long the overlay follows the answer.

``--compare-uncached`` runs everything a second time in the same process with the feature cache
off (``VRSHQ_FEATURE_CACHE_MB=0``: the correction runs the image encoder again), the run before
stored features, and reports its ``fix_ratio`` as ``uncached_fix_ratio``. ``--overlay`` uses the
overlay config (``video_text_prompt_overlay.xml``): the prediction also writes the overlay video
and the thumbnail strips, as for a project that shows them, and every fix queues a job that does. ``--sam2 release``
puts the release's SAM-2 (hiera-L at 1024 px, random weights) under the tiny MLLM and CLIP, so
the prediction's image encoder costs what it costs users; on a CPU run it at a few dozen frames.

Label Studio's SDK is imported before the timed prediction: a server pays that import (about a
second) once, on its first write, not on every prediction.

Checks (exit 1 when one fails): the answer to ``frame N`` carries each object's mask on frame N,
and the fix comes back bit-equal on its page and in the stored track. Writes
bench/results/pages.json.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PRECISIONS, print_table, timed, write_json
from bench.ls_standin import NOTE, LabelStudioStandIn
from bench.roundtrip_bench import CONFIG_XML, PROMPTS, TOKEN, _post, _serve

OVERLAY_XML = CONFIG_XML.with_name("video_text_prompt_overlay.xml")

PROJECT, TASK = 1, 11
PAGES_TARGET, FIX_TARGET = 0.10, 0.4


def _pages_s(backend: Any, info: Any, repeats: int = 3) -> float:
    """The fastest of ``repeats`` writes of every page of the task (ranking, images, task data)."""
    from vrshq.backend.labelstudio.pages import refresh_pages

    best = float("inf")
    for _ in range(repeats):
        state = backend.states.load(PROJECT, TASK)
        start = time.perf_counter()
        video = backend.open_video(str(PROJECT), TASK, state.video, state.fps)
        try:
            refresh_pages(state, backend.config.mask_pages, reset=True)
            backend.write_pages(state, video, info)
        finally:
            video.close()
        best = min(best, time.perf_counter() - start)
    return best


def _count_encoder_calls(backend: Any) -> list[int]:
    """A counter of the SAM-2 image-encoder runs from now on (the real encoder still runs)."""
    sam2 = backend.plugin.model.sam2
    calls, real = [0], sam2.forward_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    sam2.forward_image = counted
    return calls


def _overlay_done(backend: Any, timeout: float) -> list:
    """Wait for the task's overlay jobs (queued by a fix after its answer); their records."""
    jobs = [j for j in backend.all_jobs() if j.kind == "overlay" and j.info.get("task") == TASK]
    return [backend.jobs.wait(j.id, timeout) for j in jobs]


def run(frames: int, width: int, height: int, sam2: str, pages: int, device: str, precision: str,
        work: Path, timeout: float = 600.0, feature_cache_mb: int = 2048,
        overlay: bool = False) -> dict:
    """The measurements and checks of one run."""
    # A server imports the SDK's client once, on its first write: not a prediction's cost.
    importlib.import_module("label_studio_sdk.client")
    from vrshq.backend.config import BackendConfig
    from vrshq.backend.http.app import create_app
    from vrshq.backend.labelstudio.labelconfig import parse_label_config
    from vrshq.backend.labelstudio.predictions import parse_annotation
    from vrshq.backend.service import Backend
    from vrshq.masks import decode_brush, encode_brush
    from vrshq.model.tiny import write_tiny_vrshq
    from vrshq.synthetic import SyntheticSpec, write_video

    t: dict[str, float] = {}
    label_config = (OVERLAY_XML if overlay else CONFIG_XML).read_text()
    info = parse_label_config(label_config)
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0, num_objects=2, seed=5)
    media = work / "media"
    with timed(t, "video_write_s"):
        write_video(spec, media / "clips" / "pages.mp4")
    with timed(t, "model_write_s"):
        write_tiny_vrshq(work / "models", seed=0, sam2=sam2)
    config = BackendConfig(plugin="vrshq", model_dir=str(work / "models"), device=device,
                           precision=precision, data_dir=str(work / "backend"),
                           local_roots=(str(media),), sync_frame_budget=max(600, frames),
                           mask_pages=pages, feature_cache_mb=feature_cache_mb)
    backend = Backend(config)
    data = {"video": "/data/local-files/?d=clips/pages.mp4", "fps": spec.fps, "prompt": PROMPTS}
    out: dict[str, Any] = {"label_studio": NOTE, "frames": frames, "size": f"{width}x{height}",
                           "sam2": sam2, "mask_pages": pages, "device": device, "precision": precision,
                           "overlay": overlay}
    standin = LabelStudioStandIn(TOKEN, {TASK: data}, project=PROJECT).start()
    server, url = _serve(create_app(backend=backend))
    try:
        _post(f"{url}/setup", {"project": str(PROJECT), "schema": label_config,
                               "hostname": standin.url, "access_token": TOKEN}, 60)
        task = {"id": TASK, "project": PROJECT, "data": data}
        out["predict_s"], body = _post(f"{url}/predict", {"tasks": [task], "project": str(PROJECT),
                                                          "label_config": label_config}, timeout)
        (predicted,) = body["results"]
        out["pages_s"] = _pages_s(backend, info)
        state = backend.states.load(PROJECT, TASK)
        paged = {p.frame for p in state.pages} | {o.keyframe for o in state.objects}
        n = next(f for f in range(frames // 2, frames) if f not in paged)
        typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
                 "value": {"text": [f"frame {n + 1}"]}}
        task = {"id": TASK, "project": PROJECT, "data": standin.tasks[TASK]["data"]}
        out["frame_n_s"], body = _post(f"{url}/predict", {
            "tasks": [task], "project": str(PROJECT), "label_config": label_config,
            "params": {"context": {"result": [typed]}}}, timeout)
        shown = parse_annotation(body["results"][0]["result"], info)
        state = backend.states.load(PROJECT, TASK)
        frame_ok = all(np.array_equal(shown[f"vrshq-{TASK}-{o.obj_id}"].pages[n], o.track.mask(n))
                       for o in state.objects)
        page = next(p for p in state.pages if p.obj_id == 1 and p.why == "ranked")
        fix = np.zeros((height, width), bool)
        fix[height // 4: height // 2, width // 4: width // 2] = True
        brush = copy.deepcopy(next(r for r in predicted["result"]
                                   if r["id"] == f"vrshq-{TASK}-1-mask-f{page.frame + 1}"))
        brush["value"]["rle"] = encode_brush(fix)
        overlay_before = standin.tasks[TASK]["data"].get("overlay")
        calls = _count_encoder_calls(backend)
        start = time.perf_counter()
        out["fix_s"], body = _post(f"{url}/predict", {
            "tasks": [task], "project": str(PROJECT), "label_config": label_config,
            "params": {"context": {"result": [brush]}}}, timeout)
        overlay_jobs = _overlay_done(backend, timeout)
        if overlay:
            out["fix_overlay_s"] = time.perf_counter() - start
            out["overlay_lag_s"] = out["fix_overlay_s"] - out["fix_s"]
        out["fix_encoder_calls"] = calls[0]
        overlay_after = standin.tasks[TASK]["data"].get("overlay")
        answer = next(r for r in body["results"][0]["result"] if r["id"] == brush["id"])
        stored = backend.states.load(PROJECT, TASK).object(1)
        # The same path on the other object's keyframe page: the correction as it was before pages.
        key = copy.deepcopy(next(r for r in predicted["result"] if r["id"] == f"vrshq-{TASK}-2-mask"))
        key["value"]["rle"] = encode_brush(fix)
        out["keyframe_fix_s"], _ = _post(f"{url}/predict", {
            "tasks": [task], "project": str(PROJECT), "label_config": label_config,
            "params": {"context": {"result": [key]}}}, timeout)
        _overlay_done(backend, timeout)  # not timed: the next run starts on an idle backend
        out["checks"] = {
            "frame_n_pages_carry_the_current_masks": bool(frame_ok),
            "fix_answered_exactly": bool(np.array_equal(
                decode_brush(answer["value"]["rle"], height, width), fix)),
            "fix_stored_exactly": bool(np.array_equal(stored.track.mask(page.frame), fix)),
            "fix_on_a_non_keyframe_page": page.frame != stored.keyframe,
        }
        if overlay:  # the fix's overlay job wrote a new overlay video (a new content hash, a new URL)
            out["checks"]["fix_wrote_a_new_overlay"] = \
                overlay_before is not None and overlay_after not in (None, overlay_before)
            out["checks"]["fix_overlay_job_done"] = \
                len(overlay_jobs) == 1 and overlay_jobs[0].state == "done" \
                and overlay_jobs[0].result.get("overlay") == overlay_after
        out["label_studio_calls"] = standin.call_counts()
    finally:
        server.shutdown()
        backend.close()
        standin.close()
    for key in ("pages", "frame_n", "fix", "keyframe_fix", "fix_overlay"):
        if f"{key}_s" in out:
            out[f"{key}_ratio"] = out[f"{key}_s"] / out["predict_s"]
    out["targets"] = {"pages_ratio": PAGES_TARGET, "fix_ratio": FIX_TARGET}
    out["within_targets"] = out["pages_ratio"] <= PAGES_TARGET and out["fix_ratio"] <= FIX_TARGET
    out.update(t)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="320x240", help="video frame size WxH")
    parser.add_argument("--sam2", choices=("release", "tiny"), default="tiny")
    parser.add_argument("--pages", type=int, default=2, help="VRSHQ_MASK_PAGES")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--feature-cache-mb", type=int, default=2048, help="VRSHQ_FEATURE_CACHE_MB")
    parser.add_argument("--compare-uncached", action="store_true",
                        help="also run with the feature cache off, in the same process")
    parser.add_argument("--overlay", action="store_true",
                        help="the overlay config: the prediction writes the overlay video and strips, a fix's job does")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="vrshq-pages-"))
    atexit.register(shutil.rmtree, work, True)
    results = run(args.frames, width, height, args.sam2, args.pages, args.device, args.precision,
                  work / "cached", args.timeout, args.feature_cache_mb, args.overlay)
    results["feature_cache_mb"] = args.feature_cache_mb
    ok = all(results["checks"].values())
    if args.compare_uncached:
        uncached = run(args.frames, width, height, args.sam2, args.pages, args.device,
                       args.precision, work / "uncached", args.timeout, 0, args.overlay)
        results["uncached_fix_ratio"] = uncached["fix_ratio"]
        results["uncached_keyframe_fix_ratio"] = uncached["keyframe_fix_ratio"]
        ok = ok and all(uncached["checks"].values())
    results["passed"] = ok
    print(f"\n{NOTE}")
    print_table(f"mask pages ({args.frames} frames of {args.size}, SAM-2 {args.sam2}, "
                f"{args.pages} pages per object, {args.device}"
                f"{', overlay video and strips' if args.overlay else ''})",
                [{k: results[k] for k in ("predict_s", "pages_s", "pages_ratio", "frame_n_s",
                                          "frame_n_ratio", "fix_s", "fix_ratio",
                                          "keyframe_fix_ratio", "fix_overlay_s",
                                          "fix_overlay_ratio", "overlay_lag_s", "uncached_fix_ratio")
                  if k in results}])
    print_table("checks", [results["checks"]])
    print(f"within targets (pages <= {PAGES_TARGET}, fix <= {FIX_TARGET}): {results['within_targets']}")
    print(f"\nwrote {write_json('pages', results)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
