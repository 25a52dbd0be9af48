"""Work on one task is serialised across processes, and re-propagation jobs that run out of order
never let an older correction overwrite a newer one.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np

from vrshq.backend.tasks.state import TaskStateStore
from vrshq.plugins.base import Correction
from tests.backend_fixtures import next_task_id
from tests.test_backend_corrections import predicted, square, webhook, with_mask

HOLD = """
import sys
from vrshq.backend.tasks.state import TaskStateStore
with TaskStateStore(sys.argv[1]).lock("3", "7"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_task_lock_held_by_another_process_blocks_until_it_is_released(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        store = TaskStateStore(tmp_path)
        got = threading.Event()

        def take() -> None:
            with store.lock("3", "7"), store.lock(3, 7):  # re-entrant within a thread
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert not got.wait(1.0)  # the other process still holds it
        other.stdin.write("\n")
        other.stdin.flush()
        assert got.wait(30)
        taker.join(10)
        with store.lock("3", "7"):  # and it was released again
            pass
    finally:
        other.kill()
        other.wait()


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    other.kill()
    other.wait()
    with TaskStateStore(tmp_path).lock("3", "7"):
        pass


def test_an_older_correction_run_after_a_newer_one_is_skipped(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    region = f"vrshq-{tid}-1"
    older, newer = square(10, 10), square(50, 80)
    for k, mask in enumerate((older, newer)):
        r = webhook(client, "ANNOTATION_UPDATED", tid, with_mask(pred["result"], region, mask),
                    annotation_id=700 + k)
        assert r.status_code == 201 and r.json["result"]["corrections"] == 1
    keyframe = vrshq_backend.states.load("1", tid).object(1).keyframe
    # The newer job runs first, then the older one (a re-run after its worker was killed).
    state = vrshq_backend.correct_task("1", tid, [Correction(1, keyframe, newer)], latest_only=True)
    assert state is not None
    shown = state.object(1).corrections[-1].mask
    assert vrshq_backend.correct_task("1", tid, [Correction(1, keyframe, older)], latest_only=True) is None
    after = vrshq_backend.states.load("1", tid).object(1)
    assert np.array_equal(after.corrections[-1].mask, shown) and np.array_equal(shown, newer)
    # A request (not a queued job) applies what it is given.
    assert vrshq_backend.correct_task("1", tid, [Correction(1, keyframe, older)]) is not None


def test_boxes_of_an_earlier_prediction_sent_back_are_not_a_box_correction(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    region = f"vrshq-{tid}-1"
    fixed = square(50, 80)
    annotation = with_mask(pred["result"], region, fixed)  # the editor shows the first prediction
    r = webhook(client, "ANNOTATION_CREATED", tid, annotation, annotation_id=800)
    assert r.json["result"]["corrections"] == 1
    before = vrshq_backend.states.load("1", tid).object(1)
    # The re-propagation (a job, run here directly) gives the object a new box track.
    state = vrshq_backend.correct_task("1", tid, [Correction(1, before.keyframe, fixed)])
    assert state.object(1).track != before.track and "1" in state.earlier_tracks
    assert vrshq_backend.states.load("1", tid).earlier_tracks == state.earlier_tracks
    # Submitted again from the same editor: the old boxes are not an edit, the mask is as logged.
    count = vrshq_backend.corrections.count()
    r = webhook(client, "ANNOTATION_UPDATED", tid, annotation, annotation_id=800)
    assert r.json["result"]["corrections"] == 0 and vrshq_backend.corrections.count() == count
    # A box the annotator really moved is one.
    moved = [dict(x) for x in annotation]
    track = next(x for x in moved if x["type"] == "videorectangle" and x["id"] == region)
    track["value"] = {**track["value"], "sequence": [dict(k) for k in track["value"]["sequence"]]}
    track["value"]["sequence"][0]["x"] += 5
    r = webhook(client, "ANNOTATION_UPDATED", tid, moved, annotation_id=800)
    assert r.json["result"]["corrections"] == 1
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)[-1:]
    assert row.corrected_boxes is not None and row.corrected_boxes[0]["x"] == track["value"]["sequence"][0]["x"]
