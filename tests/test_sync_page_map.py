"""Which page a region drawn anew belongs to when an annotation is compared with the prediction it
started from (``corrections sync``, backend/labelstudio/annotations.py): a page beyond that
prediction's (one ``frame N`` added) is read from the task's page list as the webhook reads it,
but only while that list still extends the prediction's; a list that no longer does (reordered
by a new prediction, or moved by an object added since) is not read at all.

In process on the tiny models, Label Studio's task-data calls recorded by the stand-in of
test_mask_pages.py; the real Label Studio round trip is test_corrections_sync_pages.py.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from vrshq.backend.labelstudio.annotations import diff_annotation
from vrshq.backend.labelstudio.pages import REQUESTED
from vrshq.backend.labelstudio.predictions import page_frame
from vrshq.masks import encode_brush
from tests.backend_fixtures import SPEC, next_task_id
from tests.test_mask_pages import INFO, RecordingLabelStudio, _brush, _predict, _typed, square


@pytest.fixture
def ls(vrshq_backend, monkeypatch) -> RecordingLabelStudio:
    """Label Studio's task-data calls, recorded (as in test_mask_pages.py)."""
    fake = RecordingLabelStudio()
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: fake)
    return fake


def _drawn(results: list[dict], like: dict, index: int, mask: np.ndarray) -> list[dict]:
    """``results`` and a brush region drawn anew on page ``index``."""
    region = copy.deepcopy(like)
    region.update(id="drawn-anew", item_index=index)
    region["value"]["rle"] = encode_brush(mask)
    return copy.deepcopy(results) + [region]


def _changes(state, annotation, parent=None) -> dict:
    return {(c.obj.obj_id, int(c.frame)): c.mask for c in diff_annotation(state, INFO, annotation, parent)
            if c.changed}


def test_a_region_on_a_requested_page_maps_as_the_webhook_maps_it_while_the_pages_extend(client, vrshq_backend, ls):
    tid = next_task_id()
    parent = _predict(client, ls, tid)
    first = vrshq_backend.states.load(1, tid)
    paged = {p.frame for p in first.pages} | {o.keyframe for o in first.objects}
    frame = next(f for f in range(SPEC.num_frames) if f not in paged)
    slot = len(first.objects) + len(first.pages)  # the on-demand page
    assert _typed(client, tid, f"frame {frame + 1}").status_code == 200
    state = vrshq_backend.states.load(1, tid)
    drawn = square(70, 100, 20)
    like = _brush(parent, f"vrshq-{tid}-1-mask")
    annotation = _drawn(parent, like, slot, drawn)
    # the page's own result is not in this annotation: the drawn region is the page's mask
    expected = {(1, frame): drawn}
    webhook = _changes(state, annotation)
    assert webhook.keys() == expected.keys() and np.array_equal(webhook[(1, frame)], expected[(1, frame)])
    synced = _changes(state, annotation, parent)
    assert synced.keys() == expected.keys() and np.array_equal(synced[(1, frame)], expected[(1, frame)])

    # The page list reordered (a new prediction ranked other frames): the slot's page is unknown.
    reordered = copy.deepcopy(state)
    reordered.pages = reordered.pages[1:] + reordered.pages[:1]
    assert _changes(reordered, annotation, parent) == {}

    # A prediction without extra pages, and the frame N pages after it: object 2's page is read ...
    bare = [r for r in parent if page_frame(str(r["id"])) is None]
    requested = copy.deepcopy(state)
    requested.pages = [p for p in requested.pages if p.why == REQUESTED]
    n = len(requested.objects)
    on_two = _drawn(bare, like, n + 1, drawn)
    got = _changes(requested, on_two, bare)
    assert got.keys() == {(2, frame)}
    assert np.array_equal(got[(2, frame)], drawn)
    # ... but not once an object was added since (every extra page one further: index n + 1
    # would read as object 1's page).
    added = copy.deepcopy(requested)
    added.objects.append(dataclasses.replace(copy.deepcopy(added.objects[-1]), obj_id=3))
    assert (added.objects[-1].obj_id, len(added.objects)) == (3, n + 1)
    assert _changes(added, on_two, bare) == {}
