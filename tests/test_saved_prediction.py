"""A task asked for again gets the backend's saved prediction (with its corrections), unless the
request asks for something else: other prompts, another video, a partial (cancelled) result.
"""

from __future__ import annotations

import numpy as np

from vrshq.plugins.base import Correction
from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from tests.test_backend_corrections import square
from vrshq.masks import decode_brush


def ask(client, task):
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]


def mask_of(pred, region):
    brush = next(x for x in pred["result"] if x["id"] == region + "-mask")
    return decode_brush(brush["value"]["rle"], SPEC.height, SPEC.width) > 0


def test_a_task_asked_again_keeps_its_corrections(client, vrshq_backend, monkeypatch):
    tid = next_task_id()
    first = ask(client, text_task(tid))
    keyframe = vrshq_backend.states.load("1", tid).object(1).keyframe
    fixed = square(50, 80)
    vrshq_backend.correct_task("1", tid, [Correction(1, keyframe, fixed)])
    calls = []
    monkeypatch.setattr(vrshq_backend.plugin, "predict",
                        lambda *a, **k: calls.append(a) or [])  # a model call would show here
    again = ask(client, text_task(tid))
    assert calls == [] and np.array_equal(mask_of(again, f"vrshq-{tid}-1"), fixed)
    assert [x["id"] for x in again["result"]] == [x["id"] for x in first["result"]]
    monkeypatch.undo()
    # Other prompts are another request: predicted anew (the correction is not carried over).
    other = ask(client, text_task(tid, prompt="the car\nthe red disc"))
    assert not np.array_equal(mask_of(other, f"vrshq-{tid}-1"), fixed)


def test_a_partial_result_is_predicted_anew(client, vrshq_backend):
    tid = next_task_id()
    ask(client, text_task(tid))
    state = vrshq_backend.states.load("1", tid)
    state.objects[0].track.remove(state.objects[0].track.frames()[-1])  # as a cancelled job leaves it
    vrshq_backend.states.save(state)
    again = ask(client, text_task(tid))
    track = next(x for x in again["result"] if x["type"] == "videorectangle")
    assert track["value"]["framesCount"] == SPEC.num_frames
    assert len(vrshq_backend.states.load("1", tid).objects[0].track.frames()) == SPEC.num_frames
