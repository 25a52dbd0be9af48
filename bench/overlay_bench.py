"""What the overlay video, thumbnail strips and keyframe pages add to a prediction's wall time.

Issue 14's target: the media add at most 10% to a prediction. One process, one task (a synthetic
video, ``--frames`` at ``--size``, two text prompts), the tiny VRS-HQ on the CPU:

* ``predict``: the plugin's prediction of every object on every frame (what /predict runs
  without any media);
* ``media``: ``Backend.write_keyframes`` with the overlay config: each object's keyframe image,
  its strip (``VRSHQ_STRIP_FRAMES``) and the overlay video, written beside the local-file video,
  the task data handed to a recorder instead of Label Studio (its one PATCH is there with or
  without the media);
* ``overlay``: the overlay encoding alone (part of ``media``).

Prints the ratios media/predict and overlay/predict (each the best of ``--repeat`` runs). The
tiny model is far cheaper per frame than the released one, so its ratio is an upper bound of
the real model's at the same video size.

    python -m bench.overlay_bench --frames 300 --size 320x240
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import common
from vrshq.backend.config import BackendConfig
from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.backend.labelstudio.overlay import encode_overlay, label_color
from vrshq.backend.service import Backend
from vrshq.backend.tasks.state import TaskState
from vrshq.model.tiny import write_tiny_vrshq
from vrshq.plugins.base import ObjectPrompt
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video

PROMPTS = [ObjectPrompt(obj_id=1, label="Car", text="the red disc"),
           ObjectPrompt(obj_id=2, label="Person", text="the green car")]


class Recorder:
    """Stands in for Label Studio's task-data calls: keeps the data the backend sets."""

    configured = True

    def __init__(self) -> None:
        self.data: dict[int, dict] = {}

    def get_task_data(self, task: int) -> dict:
        """The task's data as last set."""
        return dict(self.data.get(int(task), {}))

    def update_task_data(self, task: int, data: dict) -> None:
        """Set the task's data."""
        self.data[int(task)] = dict(data)


def best(fn, repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(frames: int, width: int, height: int, repeat: int, work: Path) -> dict:
    """Time prediction, media and overlay on one synthetic task; the row with the ratios."""
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=30.0, num_objects=2, seed=3)
    root = work / "media"
    (root / "clips").mkdir(parents=True)
    write_video(spec, root / "clips" / "a.mp4")
    write_tiny_vrshq(work / "models", seed=0)
    config = BackendConfig(model_dir=str(work / "models"), device="cpu", data_dir=str(work / "data"),
                           local_roots=(str(root),))
    backend = Backend(config)
    recorder = Recorder()
    backend.writer = lambda project: recorder  # type: ignore[method-assign]
    info = parse_label_config(shipped_config("video_text_prompt_overlay"))
    try:
        with open_video(root / "clips" / "a.mp4", fps=spec.fps) as video:
            objects: list = []

            def predict() -> None:
                objects[:] = backend.plugin.predict(video, PROMPTS)

            t_predict = best(predict, repeat)
            state = TaskState(project="1", task="1", plugin=backend.plugin.name, model_version="bench",
                              video="/data/local-files/?d=clips/a.mp4", fps=spec.fps, frames_count=len(video))
            state.replace_objects(list(objects))
            t_media = best(lambda: backend.write_keyframes(state, video, info, {}), repeat)
            colors = [label_color(o.label, o.obj_id, info.label_colors) for o in state.objects]
            t_overlay = best(lambda: encode_overlay(video, state.objects, colors, spec.fps,
                                                    work / "overlay.mp4"), repeat)
        written = recorder.data[1]
        assert written.get("overlay") and len(written.get("strips", [])) == len(PROMPTS), written
    finally:
        backend.close()
    return {"frames": frames, "size": f"{width}x{height}", "objects": len(PROMPTS),
            "predict_s": t_predict, "media_s": t_media, "overlay_s": t_overlay,
            "media_ratio": t_media / t_predict, "overlay_ratio": t_overlay / t_predict}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="320x240", help="video frame size WxH")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each part; the best counts")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="vrshq-overlay-bench-") as tmp:
        row = run(args.frames, width, height, args.repeat, Path(tmp))
    common.print_table(f"overlay + strips + keyframe pages vs the prediction (tiny VRS-HQ, CPU, "
                       f"{args.frames} frames of {args.size})", [row])
    print(f"\nmedia/predict = {row['media_ratio']:.3f} (target <= 0.10)")
    print(f"wrote {common.write_json('overlay', {'overlay': row})}")


if __name__ == "__main__":
    main()
