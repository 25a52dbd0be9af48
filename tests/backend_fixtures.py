"""Shared fixtures of the backend tests: tiny models, a media root with synthetic videos, apps."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.config import BackendConfig
from vrshq.backend.service import Backend
from vrshq.model.tiny import write_tiny_vrshq
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video

CONFIGS = Path(__file__).resolve().parents[1] / "backend" / "configs"
TEXT_XML = (CONFIGS / "video_text_prompt.xml").read_text()
BOX_XML = (CONFIGS / "video_box_prompt.xml").read_text()
SPEC = SyntheticSpec(num_frames=12, width=160, height=120, fps=10.0, num_objects=2, seed=5)
_task_ids = itertools.count(100)


def next_task_id() -> int:
    """A task id no other test of the session uses (task states are per id)."""
    return next(_task_ids)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A tiny models folder (vrshq/, sam2/, clip/) written once per session."""
    root = tmp_path_factory.mktemp("backend_models")
    write_tiny_vrshq(root, seed=0)
    return root


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    """A local-files root with ``clips/a.mp4`` (SPEC) in it."""
    root = tmp_path_factory.mktemp("media_root")
    (root / "clips").mkdir()
    write_video(SPEC, root / "clips" / "a.mp4")
    return root


@pytest.fixture(scope="session")
def truth() -> np.ndarray:
    """Ground-truth labels of SPEC, [T, H, W]."""
    return ground_truth(SPEC)


def make_backend(tiny_models: Path, media_root: Path, data_dir: Path, plugin: str = "vrshq",
                 **overrides) -> Backend:
    """A Backend on the tiny models, reading media from ``media_root``."""
    config = BackendConfig(plugin=plugin, model_dir=str(tiny_models), device="cpu",
                           data_dir=str(data_dir), local_roots=(str(media_root),), **overrides)
    return Backend(config)


@pytest.fixture(scope="module")
def vrshq_backend(tiny_models, media_root, tmp_path_factory) -> Backend:
    """A vrshq-plugin backend (module scope: the model loads once)."""
    backend = make_backend(tiny_models, media_root, tmp_path_factory.mktemp("backend_data"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def client(vrshq_backend):
    """A Flask test client of the vrshq backend."""
    return create_app(backend=vrshq_backend).test_client()


def text_task(task_id: int, prompt: str = "the red disc\nthe car", video: str = "clips/a.mp4") -> dict:
    """A text-prompt task as Label Studio sends it."""
    return {"id": task_id, "project": 1,
            "data": {"video": f"/data/local-files/?d={video}", "fps": SPEC.fps, "prompt": prompt}}


def seed_corrections(data_dir: Path, media: Path, specs: list[SyntheticSpec], name: str = "v") -> None:
    """What annotators leave in a backend: per synthetic video (object 1, "the red disc"), a
    corrected keyframe mask in the corrections log and the re-propagated track in the task state
    (both from the exact ground truth), the videos written under ``media/clips``. The state
    records every frame as reviewed (an annotator checked them all), so evaluation scores every
    frame of these exact tracks as ground truth."""
    import numpy as np

    from vrshq.backend.corrections import Correction, CorrectionsLog
    from vrshq.backend.tasks.provenance import REVIEWED, Review
    from vrshq.backend.tasks.state import TaskState, TaskStateStore
    from vrshq.plugins.base import ObjectTrack
    from vrshq.masks import Track, encode_rle

    with CorrectionsLog.for_model_dir(data_dir) as log:
        for t, spec in enumerate(specs):
            write_video(spec, media / "clips" / f"{name}{t}.mp4")
            gt = ground_truth(spec)
            url = f"/data/local-files/?d=clips/{name}{t}.mp4"
            log.append(Correction(
                project=1, task=t, annotation=1, annotator=2, video_path=url, video_sha256=None,
                fps=spec.fps, prompt="the red disc", obj_id=1, label="Object", frame=0,
                predicted_mask=encode_rle(np.zeros_like(gt[0], bool)), corrected_mask=encode_rle(gt[0] == 1),
                predicted_boxes=None, corrected_boxes=None, model_version="tiny", plugin="vrshq",
                event="ANNOTATION_UPDATED"))
            track = Track(1, spec.height, spec.width)
            for f in range(spec.num_frames):
                track.set(f, gt[f] == 1, score=1.0)
            TaskStateStore(data_dir).save(TaskState(
                project="1", task=str(t), plugin="vrshq", model_version="tiny", video=url, fps=spec.fps,
                frames_count=spec.num_frames,
                objects=[ObjectTrack(1, "Object", track, 0, gt[0] == 1, 1.0, {"prompt": "the red disc"})],
                submissions=["1"], reviews=[Review(1, f, REVIEWED, gt[f] == 1, 1, "the red disc")
                                            for f in range(spec.num_frames)]))


def predicted_with(backend: Backend, fps: float, label_config: str) -> tuple[object, dict, object, list]:
    """A new task on ``clips/a.mp4`` predicted through ``backend``'s HTTP app (no prompt: a
    sam3 backend takes the config's labels as concepts): ``(test client, task, state, results)``."""
    client = create_app(backend=backend).test_client()
    tid = next_task_id()
    task = {"id": tid, "project": 1, "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": fps}}
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": label_config})
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return client, task, backend.states.load("1", tid), r.json["results"][0]["result"]


def assert_as_plugin_corrects(backend: Backend, video_path: Path, before: list, correction, after) -> None:
    """``after`` (the object's saved track) equals the plugin's own ``correct`` of ``before``
    with ``correction`` on every frame, and differs from the object's track before."""
    from vrshq.video.reader import open_video

    video = open_video(video_path)
    try:
        (ref,) = [t for t in backend.plugin.correct(video, before, [correction])
                  if t.obj_id == correction.obj_id]
    finally:
        video.close()
    assert after.track.frames() == ref.track.frames()
    for f in ref.track.frames():
        assert np.array_equal(after.track.mask(f), ref.track.mask(f)), f"frame {f}"
    assert after.track != next(o for o in before if o.obj_id == correction.obj_id).track
