"""The rule that makes a moved box a box correction (vrshq.backend.labelstudio.box_fixes).

Sequences are Label Studio ``videorectangle`` keyframes (1-based frames, percent boxes); the
expected pixel boxes are worked out by hand here on a 200x100 video.
"""

from __future__ import annotations

import pytest

from vrshq.backend.labelstudio.box_fixes import box_fixes, carried
from vrshq.plugins.base import Correction

FRAMES, SIZE = 20, (100, 200)  # 20 frames, height 100, width 200


def key(frame, x, y, w, h, enabled=True):
    return {"frame": frame, "x": x, "y": y, "width": w, "height": h, "enabled": enabled, "rotation": 0}


PREDICTED = [key(1, 10, 10, 20, 20), key(20, 10, 10, 20, 20)]  # a still box on every frame


def fixes(annotated, predicted=PREDICTED, tracks=(), masked=()):
    """(frame, box) per correction, the box rounded to 1e-9 px (float sums of percentages)."""
    return [(c.frame, tuple(round(v, 9) for v in c.box))
            for c in box_fixes(3, annotated, predicted, list(tracks), FRAMES, SIZE, masked)]


def test_a_new_keyframe_with_a_moved_box_is_a_box_correction_in_pixels():
    got = box_fixes(3, [*PREDICTED, key(6, 30, 40, 25, 50)], PREDICTED, [], FRAMES, SIZE)
    assert [(c.obj_id, c.frame, c.kind) for c in got] == [(3, 5, "box")]  # LS frame 6 = frame 5
    # x: 30% .. 55% of 200 px; y: 40% .. 90% of 100 px
    assert got[0].box == (60.0, 40.0, 110.0, 90.0)


def test_more_than_one_percent_of_the_frame_moves_a_box_and_exactly_one_percent_does_not():
    assert fixes([*PREDICTED, key(6, 11, 10, 20, 20)]) == []  # x0 and x1 moved by 1.0: the tie
    assert fixes([*PREDICTED, key(6, 10, 10, 21, 20)]) == []  # x1 by 1.0
    assert fixes([*PREDICTED, key(6, 10, 10, 20, 20.5)]) == []
    assert fixes([*PREDICTED, key(6, 10, 10, 20, 21.25)]) == [(5, (20.0, 10.0, 60.0, 31.25))]
    assert fixes([*PREDICTED, key(6, 8.75, 10, 20, 20)]) == [(5, (17.5, 10.0, 57.5, 30.0))]


def test_the_backends_own_keyframes_are_not_edits():
    earlier = [key(1, 60, 60, 20, 20), key(9, 70, 70, 10, 10)]
    # a keyframe of an earlier prediction the editor still has (far from the current box)
    assert fixes([*PREDICTED, key(9, 70, 70, 10, 10)], tracks=[earlier]) == []
    assert fixes([*PREDICTED, key(9, 70, 70, 10, 10)]) == [(8, (140.0, 70.0, 160.0, 80.0))]
    # every keyframe of the prediction itself, changed: a correction on its frame
    assert fixes([key(1, 10, 10, 20, 20), key(20, 40, 10, 20, 20)]) == [(19, (80.0, 10.0, 120.0, 30.0))]


def test_a_frame_whose_mask_was_edited_keeps_the_mask_correction():
    moved = [*PREDICTED, key(6, 30, 40, 25, 50), key(12, 50, 40, 25, 50)]
    assert [f for f, _ in fixes(moved, masked=[5])] == [11]


def test_disabled_keyframes_count_by_their_box_and_a_toggle_alone_is_not_a_correction():
    # enabled toggled off on the prediction's keyframe, box untouched: logged only, no correction
    assert fixes([key(1, 10, 10, 20, 20, enabled=False), key(20, 10, 10, 20, 20)]) == []
    # a disabled keyframe whose box moved: its box is shown on its frame, a correction there
    assert fixes([*PREDICTED[:1], key(6, 30, 40, 25, 50, enabled=False), PREDICTED[1]]) == \
        [(5, (60.0, 40.0, 110.0, 90.0))]
    # where the prediction showed no box (after a disabled keyframe), any box is a correction
    hidden = [key(1, 10, 10, 20, 20, enabled=False), key(20, 10, 10, 20, 20)]
    assert fixes([*hidden[:1], key(6, 10, 10, 20, 20), hidden[1]], predicted=hidden) == \
        [(5, (20.0, 10.0, 60.0, 30.0))]


def test_boxes_are_clipped_to_the_frame_and_a_box_without_area_is_dropped():
    assert fixes([*PREDICTED, key(6, 90, 95, 20, 10)]) == [(5, (180.0, 95.0, 200.0, 100.0))]
    assert fixes([*PREDICTED, key(6, 100, 50, 20, 10)]) == []  # wholly right of the frame
    assert fixes([*PREDICTED, key(25, 30, 40, 25, 50), {"frame": 7, "x": "a"}]) == []  # off the video; malformed


def test_a_carried_fix_is_found_by_its_frame_and_values():
    fix = Correction(1, 5, box=(60.0, 40.0, 110.0, 90.0))
    assert carried([Correction(1, 5, box=(60.0, 40.0, 110.0, 90.0 + 1e-9))], fix)
    assert not carried([Correction(1, 5, box=(60.0, 40.0, 110.0, 91.0))], fix)
    assert not carried([Correction(1, 6, box=fix.box)], fix)
    import numpy as np
    assert not carried([Correction(1, 5, np.ones((100, 200), bool))], fix)


@pytest.mark.parametrize("annotated", [None, [], PREDICTED])
def test_nothing_moved_nothing_to_correct(annotated):
    assert fixes(annotated) == []
