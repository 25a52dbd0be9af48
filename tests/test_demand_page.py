"""The on-demand page (backend/labelstudio/demand_page.py): the mask pager's last page, which
``frame N`` fills in place so that an editor that is already open shows frame N.

Driven through the backend's HTTP app on the tiny models and the real ffmpeg-encoded synthetic
video, Label Studio's task-data calls recorded by the stand-in of test_mask_pages.py. What the
pictures must be is read from the video with PyAV (not vrshq's reader). The real editor showing
the page without a reload is tests/test_whole_loop_browser.py (step 3).
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote

import av
import numpy as np
import pytest
from PIL import Image

from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from tests.test_mask_pages import RecordingLabelStudio, _brush, _predict, _typed

NAME = re.compile(r"demand-[0-9a-f]{32}\.jpg")


@pytest.fixture
def ls(vrshq_backend, monkeypatch) -> RecordingLabelStudio:
    """Label Studio's task-data calls, recorded (as in test_mask_pages.py)."""
    fake = RecordingLabelStudio()
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: fake)
    return fake


def _file(media_root, url: str):
    return media_root / unquote(url.split("?d=", 1)[1])


def _frame(media_root, index: int) -> np.ndarray:
    with av.open(str(media_root / "clips" / "a.mp4")) as c:
        return next(f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i == index)


def _picture(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _shows(path, frame: np.ndarray) -> bool:
    """The picture is ``frame`` (JPEG-close), its caption corner left out."""
    diff = np.abs(_picture(path) - frame.astype(int))[20:, :]
    return diff.mean() < 6


def _placeholder(path) -> bool:
    img = _picture(path)
    return img.shape[:2] == (SPEC.height, SPEC.width) and abs(np.median(img) - 96) <= 3 and img.max() > 200


def test_the_page_list_ends_with_a_placeholder_no_frame_no_object(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    _predict(client, ls, tid)
    data = ls.data[tid]
    assert NAME.fullmatch(data["keyframes"][-1].rsplit("/", 1)[1]), data["keyframes"][-1]
    assert (data["keyframe_frames"][-1], data["keyframe_objects"][-1]) == (0, 0)
    # grey at the video's size, with the gesture written on it in white
    assert _placeholder(_file(media_root, data["keyframes"][-1]))


def test_frame_n_fills_the_page_in_place_and_a_fresh_one_follows(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    _predict(client, ls, tid)
    first = dict(ls.data[tid])
    slot = len(first["keyframes"]) - 1
    state = vrshq_backend.states.load(1, tid)
    paged = {f for o in state.objects for f in [o.keyframe]} | {p.frame for p in state.pages}
    frame = next(f for f in range(SPEC.num_frames) if f not in paged)
    r = _typed(client, tid, f"frame {frame + 1} #1")
    assert r.status_code == 200, r.json
    # The editor that asked has the placeholder's URL at `slot`: that file is now frame N, and
    # the new page's mask is answered on that page.
    filled = _file(media_root, first["keyframes"][slot])
    assert filled.is_file() and _shows(filled, _frame(media_root, frame))
    got = _brush(r.json["results"][0]["result"], f"vrshq-{tid}-1-mask-f{frame + 1}")
    assert got["item_index"] == slot
    # Label Studio's list: the page in its place (the editor's index), a new placeholder last.
    data = ls.data[tid]
    assert (data["keyframe_frames"][slot], data["keyframe_objects"][slot]) == (frame + 1, 1)
    assert _shows(_file(media_root, data["keyframes"][slot]), _frame(media_root, frame))
    assert len(data["keyframes"]) == slot + 2 and data["keyframes"][-1] != first["keyframes"][slot]
    assert _placeholder(_file(media_root, data["keyframes"][-1]))
    # A frame that has its page already: answered there, the placeholder stays as it is.
    r = _typed(client, tid, f"frame {frame + 1} #1")
    assert r.status_code == 200 and ls.data[tid]["keyframes"] == data["keyframes"]
    # The next fill: the first filled file goes (the editor that asked has reloaded since),
    # the one just filled stays.
    second = next(f for f in range(frame + 1, SPEC.num_frames) if f not in paged)
    r = _typed(client, tid, f"frame {second + 1} #1")
    assert r.status_code == 200, r.json
    assert not filled.exists()
    assert _shows(_file(media_root, data["keyframes"][-1]), _frame(media_root, second))
    folder = filled.parent
    assert len(list(folder.glob("demand-*.jpg"))) == 2


def test_frame_n_for_every_object_shows_them_all_on_the_one_page(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    _predict(client, ls, tid)
    first = dict(ls.data[tid])
    slot = len(first["keyframes"]) - 1
    state = vrshq_backend.states.load(1, tid)
    paged = {o.keyframe for o in state.objects} | {p.frame for p in state.pages}
    frame = next(f for f in range(SPEC.num_frames) if f not in paged)
    r = _typed(client, tid, f"frame {frame + 1}")
    assert r.status_code == 200, r.json
    out = r.json["results"][0]["result"]
    assert {_brush(out, f"vrshq-{tid}-{o.obj_id}-mask-f{frame + 1}")["item_index"] for o in state.objects} == {slot}
    data = ls.data[tid]  # one page per object in the list, from the editor's index on
    assert data["keyframe_objects"][slot:slot + len(state.objects)] == [o.obj_id for o in state.objects]
    assert len(data["keyframes"]) == slot + len(state.objects) + 1


def test_no_on_demand_page_when_switched_off_or_without_a_prompt_box(client, vrshq_backend, ls, monkeypatch):
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(vrshq_backend.config, demand_page=False))
    tid = next_task_id()
    _predict(client, ls, tid)
    assert not any("demand-" in u for u in ls.data[tid]["keyframes"])
    assert 0 not in ls.data[tid]["keyframe_frames"]
    monkeypatch.undo()
    tid = next_task_id()  # a config without the prompt box: nowhere to type `frame N`
    task = text_task(tid)
    ls.data[tid] = dict(task["data"])
    xml = re.sub(r"<TextArea[^>]*/>", "", TEXT_XML)
    assert xml != TEXT_XML
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": xml})
    assert r.status_code == 200, r.json
    assert not any("demand-" in u for u in ls.data[tid].get("keyframes", []))


@pytest.mark.parametrize("value", ["yes", "1"])
def test_the_variable_switches_it(value):
    from vrshq.backend.config import BackendConfig

    assert BackendConfig.from_env({"VRSHQ_DEMAND_PAGE": value}).demand_page is True
    assert BackendConfig.from_env({"VRSHQ_DEMAND_PAGE": "0"}).demand_page is False
