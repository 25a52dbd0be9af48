"""The overlay video and thumbnail strips through the backend: /predict writes them beside the
local-file video and puts their URLs into the task data; a re-propagation writes new ones and
removes the old.

Label Studio is a fake writer here (it records the task data the backend sets); the real one is
in test_labelstudio_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import av
import numpy as np
import pytest
from PIL import Image

from vrshq.backend.jobs.overlay_job import queue_overlay
from vrshq.backend.labelstudio.labelconfig import LabelConfigError, parse_label_config, shipped_config
from vrshq.backend.labelstudio.strips import GAP, THUMB_HEIGHT
from vrshq.plugins.base import Correction
from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task

OVERLAY_XML = shipped_config("video_text_prompt_overlay")


class FakeLabelStudio:
    """The two task-data calls the backend makes, on a dict of tasks."""

    url, _api_key, configured = None, None, True

    def __init__(self) -> None:
        self.data: dict[int, dict] = {}
        self.updates = 0

    def get_task_data(self, task: int) -> dict:
        return dict(self.data[int(task)])

    def update_task_data(self, task: int, data: dict) -> None:
        self.data[int(task)] = dict(data)
        self.updates += 1


@pytest.fixture
def ls(vrshq_backend, monkeypatch) -> FakeLabelStudio:
    fake = FakeLabelStudio()
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: fake)
    return fake


def _file(media_root: Path, url: str) -> Path:
    assert url.startswith("/data/local-files/?d=clips/vrshq-overlays/"), url
    return media_root / unquote(url.split("?d=", 1)[1])


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_predict_writes_the_overlay_and_a_correction_replaces_it(client, vrshq_backend, media_root, ls):
    tid = next_task_id()
    task = text_task(tid, "the red disc\nthe car")
    task["data"]["overlay"] = ""
    ls.data[tid] = dict(task["data"])
    r = client.post("/predict", json={"tasks": [task], "project": "1.1700000000", "label_config": OVERLAY_XML})
    assert r.status_code == 200, r.json

    first = ls.data[tid]["overlay"]
    path = _file(media_root, first)
    assert path.is_file() and path.parent.name == f"1-{tid}"
    assert _frames(path) == SPEC.num_frames
    assert ls.data[tid]["prompt"] == task["data"]["prompt"]  # the rest of the data kept
    pages = vrshq_backend.states.load("1", tid).pages  # the extra mask pages follow the keyframes
    assert len(ls.data[tid]["keyframes"]) == 2 + len(pages) + 1  # + the on-demand page
    strips = ls.data[tid]["strips"]  # one strip per object, beside the keyframe images
    assert len(strips) == 2
    for k, url in enumerate(strips, start=1):
        assert url.startswith(f"/data/local-files/?d=clips/vrshq-keyframes/1-{tid}/strip-obj{k}-")
        with Image.open(media_root / unquote(url.split("?d=", 1)[1])) as im:
            assert im.height == THUMB_HEIGHT and im.width == 6 * round(SPEC.width * THUMB_HEIGHT / SPEC.height) + 5 * GAP

    # A re-propagation (a corrected keyframe mask) leaves the overlay to its job (queued after
    # the answer, test_overlay_job.py), which writes a new overlay under a new name; the old goes.
    state = vrshq_backend.states.load("1", tid)
    obj = state.objects[0]
    mask = np.zeros_like(obj.keyframe_mask)
    mask[10:50, 20:70] = True
    info = parse_label_config(OVERLAY_XML)
    fixed = vrshq_backend.correct_task("1", tid, [Correction(obj.obj_id, obj.keyframe, mask)], info=info)
    assert ls.data[tid]["overlay"] == first
    job = queue_overlay(vrshq_backend, fixed, OVERLAY_XML)
    assert vrshq_backend.jobs.wait(job.id, 120).state == "done"
    second = ls.data[tid]["overlay"]
    assert second != first
    assert _file(media_root, second).is_file() and not path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [_file(media_root, second).name]
    # The corrected object's strip is new; its old one is gone.
    new_strip = ls.data[tid]["strips"][0]
    assert new_strip != strips[0]
    folder = media_root / unquote(strips[0].split("?d=", 1)[1]).rsplit("/", 1)[0]
    assert sorted(p.name for p in folder.glob("strip-obj1-*")) == [new_strip.rsplit("/", 1)[1]]


def test_no_overlay_without_the_overlay_tag_or_for_a_remote_video(client, vrshq_backend, ls, caplog):
    tid = next_task_id()
    ls.data[tid] = dict(text_task(tid)["data"])
    assert client.post("/predict", json={"tasks": [text_task(tid)], "project": "1.1700000000",
                                         "label_config": TEXT_XML}).status_code == 200
    assert "overlay" not in ls.data[tid]

    state = vrshq_backend.states.load("1", tid)
    state.video = "https://example.com/a.mp4"  # not a local file: no overlay, a warning
    with vrshq_backend.open_video("1", tid, text_task(tid)["data"]["video"], SPEC.fps) as video:
        vrshq_backend.write_overlay(state, video, parse_label_config(OVERLAY_XML))
    assert "overlay" not in ls.data[tid]
    assert "no overlay video" in caplog.text


@pytest.mark.parametrize("change,words", [
    (('sync="overlay"/>', "/>", 1), 'needs sync="overlay"'),
    (('value="$overlay" frameRate="$fps"', 'value="$overlay" frameRate="25"', 1), "frameRate"),
])
def test_a_half_wired_overlay_tag_is_refused(change, words):
    xml = OVERLAY_XML.replace(*change)
    assert xml != OVERLAY_XML
    with pytest.raises(LabelConfigError, match=words):
        parse_label_config(xml)


def test_the_overlay_config_parses_its_label_colours():
    info = parse_label_config(OVERLAY_XML)
    assert (info.overlay_name, info.overlay_key) == ("overlay", "overlay")
    assert info.label_colors["Car"] == "#3cb44b"
    assert (info.strips_name, info.strips_key) == ("strips", "strips")
    assert parse_label_config(TEXT_XML).overlay_key is None
    assert parse_label_config(TEXT_XML).strips_key is None  # keyframes is bound to BrushLabels
