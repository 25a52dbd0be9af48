"""Prompts: clicks, boxes, corrections against sam2's own predictor; errors; objects; VRS-HQ.

Every parity test compares, on the same frames and in the same order, our result with sam2's
``SAM2VideoPredictor`` driven call for call (tests/sam2_reference.py) on the same tiny random
weights and JPEG frames, both without hole filling (tests.engine_fixtures.PARITY): video-size
logits, low-res logits and object-score logit, bit for bit (``assert_same_frame``: the
measured difference is 0.0 on every frame, so no tolerance is allowed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine_fixtures import PARITY
from tests.sam2_reference import (
    RefFrame,
    assert_same_frame,
    corrections_as_cond,
    drop_non_cond_outputs,
    reference_prompt,
    reference_propagate,
)
from vrshq.engine.session import ObjectFrame, TrackingSession
from vrshq.errors import PromptError
from vrshq.synthetic import SyntheticSpec, ground_truth
from vrshq.video.reader import open_video
from vrshq.video.transforms import ResizeMode

# A background pixel (x, y) of the jpeg_clip scene on every frame: above both objects.
BACKGROUND_XY = (150.0, 8.0)


def _centroid(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    assert len(xs), "empty ground-truth mask"
    return [float(xs.mean()), float(ys.mean())]


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


def _collect(session: TrackingSession, direction: str = "both", obj_ids=None,
             ) -> list[tuple[int, int, ObjectFrame]]:
    """(frame, obj, result) in the order propagate yields them; each pair once."""
    out = []
    seen = set()
    for result in session.propagate(direction, obj_ids=obj_ids):
        for obj_id, of in result.objects.items():
            assert of.obj_id == obj_id and of.frame_idx == result.frame_idx
            assert (obj_id, result.frame_idx) not in seen, "an (object, frame) was yielded twice"
            seen.add((obj_id, result.frame_idx))
            out.append((result.frame_idx, obj_id, of))
    return out


def _single(results: list[tuple[int, int, ObjectFrame]], obj_id: int = 1,
            ) -> list[tuple[int, ObjectFrame]]:
    return [(f, x) for f, o, x in results if o == obj_id]


def _logits(results: list[tuple[int, ObjectFrame]]) -> list[tuple[int, torch.Tensor]]:
    return [(f, of.logits()) for f, of in results]


def assert_parity(ours: list[tuple[int, ObjectFrame]], ref: list[tuple[int, RefFrame]]) -> None:
    """Same frames in the same order, each equal to sam2's, and never an empty mask."""
    assert [f for f, _ in ours] == [f for f, _ in ref]
    for (frame_idx, mine), (_, theirs) in zip(ours, ref):
        assert_same(mine, theirs, f"frame {frame_idx}")


def assert_same(mine: ObjectFrame, theirs: RefFrame, what: str) -> None:
    assert_same_frame(mine, theirs, what)
    # object 1 (the disc) is fully in view on every frame of the clip
    assert (mine.logits() > 0).any(), f"{what}: empty mask"


def _prompt(gt: np.ndarray, frame_idx: int, kind: str) -> dict:
    """Keyword arguments of add_points / add_new_points_or_box for object 1 on a frame."""
    disc = gt[frame_idx] == 1
    bx, by = BACKGROUND_XY
    assert gt[frame_idx][int(by), int(bx)] == 0
    if kind == "points":
        return {"points": [_centroid(disc), [bx, by]], "labels": [1, 0]}
    box = _box(disc)
    if kind == "box":
        return {"box": box}
    # a negative click in the box's corner, which is outside the disc
    corner = [box[0] + 2.0, box[1] + 2.0]
    assert not disc[int(corner[1]), int(corner[0])]
    return {"box": box, "points": [corner], "labels": [0]}


# ---------------------------------------------------------------- clicks and boxes


@pytest.mark.parametrize("kind", ["points", "box", "box+click"])
def test_point_and_box_prompts_match_sam2(tiny_sam2_predictor, jpeg_clip, kind):
    folder, gt = jpeg_clip
    a = len(gt) // 2
    kwargs = _prompt(gt, a, kind)
    pred = tiny_sam2_predictor
    state = pred.init_state(str(folder))
    ref_prompt = reference_prompt(pred, state, a, **kwargs)
    ref = reference_propagate(pred, state, "both")
    with TrackingSession(pred, open_video(folder), config=PARITY) as session:
        of = session.add_points(1, a, **kwargs)
        ours = _single(_collect(session))
    assert_same(of, ref_prompt, f"{kind} on frame {a}")
    assert len(ours) == len(gt)
    assert_parity(ours, ref)
    # the prompted frame keeps the prompt's output
    assert torch.equal(dict(ours)[a].logits(), of.logits())


def test_clicks_added_before_propagating_match_sam2(tiny_sam2_predictor, jpeg_clip):
    # Two rounds of clicks on an untracked frame: the second is still an initial conditioning
    # frame, fed the first round's logits as a mask prompt (sam2's prev_sam_mask_logits).
    folder, gt = jpeg_clip
    a = 4
    first = _prompt(gt, a, "points")
    extra = {"points": [[_centroid(gt[a] == 1)[0] + 6.0, _centroid(gt[a] == 1)[1]]], "labels": [1]}
    pred = tiny_sam2_predictor
    state = pred.init_state(str(folder))
    reference_prompt(pred, state, a, **first)
    ref_second = reference_prompt(pred, state, a, **extra, clear_old=False)
    ref = reference_propagate(pred, state, "both")
    with TrackingSession(pred, open_video(folder), config=PARITY) as session:
        of_first = session.add_points(1, a, **first)
        of_second = session.add_points(1, a, **extra, clear_old=False)
        ours = _single(_collect(session))
    assert_same(of_second, ref_second, "second round of clicks")
    assert not torch.equal(of_first.logits(), of_second.logits())
    assert_parity(ours, ref)


# ---------------------------------------------------------------- corrections
#
# Our session makes every prompted frame a conditioning frame, so sam2 runs with
# add_all_frames_to_correct_as_cond=True. A click on an already tracked frame is then the same
# in both (memory-conditioned, fed the old logits, tracked direction kept), and after it both
# re-track the object from its earliest conditioning frame, forward then backward.
#
# They differ by design in one point. sam2 re-propagates over its old outputs: while
# re-tracking forward from the earliest conditioning frame s > 0, its memory attention still
# reads the memories and object pointers that the *previous* backward pass left on frames
# s-1, s-2, ... (stale: computed before the correction). Our session drops an object's tracked
# outputs and re-tracks it from scratch, so a correction gives the same masks however often
# the user has propagated before. The reference that matches our semantics is therefore sam2
# with its non-conditioning outputs dropped after the correction click (drop_non_cond_outputs).
# From a = 0 nothing precedes the start frame, so there the plain sam2 flow must match as is
# ("from-0-same-frame" also checks that frame 0 counts as tracked forward: sam2 runs no
# backward pass from frame 0, so a click there is conditioned like a forward frame).

CORRECTIONS = [
    # (first prompted frame a, corrected frame k)
    pytest.param(12, 18, id="later-frame"),
    pytest.param(12, 12, id="same-frame"),
    pytest.param(12, 5, id="earlier-frame"),
    pytest.param(0, 10, id="from-0-later-frame"),
    pytest.param(0, 0, id="from-0-same-frame"),
]


@pytest.mark.parametrize("a,k", CORRECTIONS)
def test_click_correction_matches_sam2(tiny_sam2_predictor, jpeg_clip, a, k):
    folder, gt = jpeg_clip
    first = _prompt(gt, a, "points")
    cx, cy = _centroid(gt[k] == 1)
    correction = {"points": [[cx + 9.0, cy]], "labels": [0]}
    pred = tiny_sam2_predictor

    def reference(drop_stale: bool):
        with corrections_as_cond(pred):
            state = pred.init_state(str(folder))
            reference_prompt(pred, state, a, **first)
            reference_propagate(pred, state, "both")
            corrected = reference_prompt(pred, state, k, **correction, clear_old=False)
            if drop_stale:
                drop_non_cond_outputs(state)
            return corrected, reference_propagate(pred, state, "both")

    ref_corrected, ref = reference(drop_stale=a > 0)
    assert pred.add_all_frames_to_correct_as_cond is False  # restored for the other tests
    with TrackingSession(pred, open_video(folder), config=PARITY) as session:
        session.add_points(1, a, **first)
        before = dict(_single(_collect(session)))
        calls = session.features.stats.encoder_calls
        of = session.add_points(1, k, **correction, clear_old=False)
        assert session.prompted_frames(1) == sorted({a, k})
        after = _single(_collect(session))
        # the features of every frame were cached by the first pass
        assert session.features.stats.encoder_calls == calls
    assert_same(of, ref_corrected, f"correction on frame {k}")
    assert_parity(after, ref)
    # the correction is kept on its frame (a conditioning frame) and changes its mask
    assert torch.equal(dict(after)[k].logits(), of.logits())
    assert (before[k].logits() - of.logits()).abs().max().item() > 1e-3
    if a > 0:
        # the documented difference: plain sam2 reads stale memories before its start frame
        _, plain = reference(drop_stale=False)
        # (parity is exact, so any difference at all is the stale memories' doing)
        worst = max((x.logits - y.logits).abs().max().item() for (_, x), (_, y) in zip(plain, ref))
        assert worst > 0.0, "sam2 no longer reuses its old outputs: drop the state surgery"


# ---------------------------------------------------------------- VRS-HQ's SAM-2 settings


# vrshq.model.sam2_vrshq.OFFICIAL_OVERRIDES as attributes of the shared predictor: the tiny
# sam2 keeps sam2's defaults, under which a prompted frame's memory is the same whether or not
# it counts as "from points" (is_mask_from_pts), and multimask is on.
VRSHQ_SETTINGS = {"binarize_mask_from_pts_for_mem_enc": True, "multimask_output_in_sam": False,
                  "multimask_output_for_tracking": False}


@pytest.mark.parametrize("kind", ["points", "mask"])
def test_vrshq_sam2_settings_match_sam2(tiny_sam2_predictor, jpeg_clip, monkeypatch, kind):
    folder, gt = jpeg_clip
    a = len(gt) // 2
    pred = tiny_sam2_predictor
    for name, value in VRSHQ_SETTINGS.items():
        assert getattr(pred, name) != value  # else this test adds nothing to the others
        monkeypatch.setattr(pred, name, value)
    kwargs = _prompt(gt, a, "points") if kind == "points" else {"mask": gt[a] == 1}
    state = pred.init_state(str(folder))
    ref_prompt = reference_prompt(pred, state, a, **kwargs)
    ref = reference_propagate(pred, state, "both")
    with TrackingSession(pred, open_video(folder), config=PARITY) as session:
        if kind == "points":
            of = session.add_points(1, a, **kwargs)
        else:
            of = session.add_mask(1, a, kwargs["mask"])
        ours = _single(_collect(session))
    assert_same(of, ref_prompt, f"{kind} on frame {a}")
    assert_parity(ours, ref)


# ---------------------------------------------------------------- one-way passes


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_one_direction_matches_sam2(tiny_sam2_predictor, jpeg_clip, direction):
    folder, gt = jpeg_clip
    early, late = 6, 16
    pred = tiny_sam2_predictor
    state = pred.init_state(str(folder))
    for frame_idx in (early, late):
        reference_prompt(pred, state, frame_idx, **_prompt(gt, frame_idx, "points"))
    # forward: from the earliest prompt (sam2's default start); backward: from the latest
    ref = reference_propagate(pred, state, direction, start=late)
    with TrackingSession(pred, open_video(folder), config=PARITY) as session:
        for frame_idx in (early, late):
            session.add_points(1, frame_idx, **_prompt(gt, frame_idx, "points"))
        ours = _single(_collect(session, direction))
    want = list(range(early, len(gt))) if direction == "forward" else list(range(late, -1, -1))
    assert [f for f, _ in ours] == want
    assert_parity(ours, ref)


# ---------------------------------------------------------------- frame sources


def test_png_folder_runs_like_the_jpeg_folder(tiny_sam2_predictor, jpeg_clip, make_video):
    # sam2 reads only JPEG folders; our reader takes PNG too. Same scene, lossless frames.
    folder, gt = jpeg_clip
    png = make_video("png", num_frames=24, width=160, height=120, fps=10.0, num_objects=2, seed=3)
    assert sorted(p.suffix for p in png.iterdir()) == [".png"] * len(gt)
    results = {}
    for source in (folder, png):
        with TrackingSession(tiny_sam2_predictor, open_video(source)) as session:
            session.add_mask(1, 0, gt[0] == 1)
            results[source] = {f: x.logits() > 0 for f, _, x in _collect(session, "forward")}
    jpg_masks, png_masks = results[folder], results[png]
    assert sorted(png_masks) == list(range(len(gt)))
    for frame_idx, mask in png_masks.items():
        assert mask.shape == gt[frame_idx].shape
        assert mask.any(), f"frame {frame_idx}: empty mask"
    # a mask prompt is used as the output whatever the pixels
    assert torch.equal(png_masks[0], jpg_masks[0])
    # JPEG artefacts move the random model's masks a little, not a lot
    ious = [_iou(png_masks[f].numpy(), jpg_masks[f].numpy()) for f in png_masks]
    assert np.mean(ious) > 0.8, ious


# ---------------------------------------------------------------- errors


def _error_cases(n: int, h: int, w: int):
    ok_points = {"points": [[10.0, 10.0]], "labels": [1]}
    return [
        ("mask-width", lambda s: s.add_mask(1, 0, np.zeros((h, w - 1), bool)), rf"{w}x{h}"),
        ("mask-height", lambda s: s.add_mask(1, 0, np.zeros((h + 1, w), bool)), rf"{w}x{h}"),
        ("mask-3d", lambda s: s.add_mask(1, 0, np.zeros((h, w, 1), bool)), rf"{w}x{h}"),
        ("mask-frame-negative", lambda s: s.add_mask(1, -1, np.zeros((h, w), bool)),
         rf"frame -1 .*outside.*0\.\.{n - 1}"),
        ("mask-frame-past-end", lambda s: s.add_mask(1, n, np.zeros((h, w), bool)),
         rf"frame {n} .*outside.*0\.\.{n - 1}"),
        ("points-frame-past-end", lambda s: s.add_points(1, n + 5, **ok_points), "outside"),
        ("points-frame-float", lambda s: s.add_points(1, 1.5, **ok_points), "outside"),
        ("obj-negative", lambda s: s.add_points(-3, 0, **ok_points), "positive integers.*-3"),
        ("obj-zero", lambda s: s.add_mask(0, 0, np.zeros((h, w), bool)), "positive integers.*0"),
        ("obj-bool", lambda s: s.add_points(True, 0, **ok_points), "positive integers.*True"),
        ("obj-float", lambda s: s.add_points(2.0, 0, **ok_points), "positive integers"),
        ("obj-str", lambda s: s.add_points("1", 0, **ok_points), "positive integers"),
        ("points-without-labels", lambda s: s.add_points(1, 0, points=[[1.0, 2.0]]),
         "points and labels"),
        ("labels-without-points", lambda s: s.add_points(1, 0, labels=[1]), "points and labels"),
        ("no-prompt", lambda s: s.add_points(1, 0), "points with labels, a box"),
        ("label-2", lambda s: s.add_points(1, 0, points=[[1.0, 2.0]], labels=[2]),
         r"1 \(positive\) or 0 \(negative\)"),
        ("label-negative", lambda s: s.add_points(1, 0, points=[[1.0, 2.0], [3.0, 4.0]],
                                                  labels=[1, -1]), r"1 \(positive\) or 0"),
        ("label-count", lambda s: s.add_points(1, 0, points=[[1.0, 2.0], [3.0, 4.0]],
                                               labels=[1]), "2 points but 1 labels"),
        ("label-fraction", lambda s: s.add_points(1, 0, points=[[1.0, 2.0]], labels=[0.5]),
         r"1 \(positive\) or 0"),
        ("points-odd", lambda s: s.add_points(1, 0, points=[[1.0, 2.0, 3.0]], labels=[1]),
         r"\[x, y\] pairs"),
        ("points-ragged", lambda s: s.add_points(1, 0, points=[[1.0, 2.0], [3.0]], labels=[1, 1]),
         "points must be numbers"),
        ("points-text", lambda s: s.add_points(1, 0, points=[["a", "b"]], labels=[1]),
         "points must be numbers"),
        ("points-nan", lambda s: s.add_points(1, 0, points=[[float("nan"), 2.0]], labels=[1]),
         "points must be finite"),
        ("labels-text", lambda s: s.add_points(1, 0, points=[[1.0, 2.0]], labels=["yes"]),
         "labels must be numbers"),
        ("box-without-clear", lambda s: s.add_points(1, 0, box=[1, 2, 30, 40], clear_old=False),
         "clear_old=True"),
        ("box-three-numbers", lambda s: s.add_points(1, 0, box=[1, 2, 30]),
         r"\[x0, y0, x1, y1\], got 3"),
        ("box-inf", lambda s: s.add_points(1, 0, box=[1, 2, float("inf"), 40]),
         "box must be finite"),
        ("propagate-unknown-object", lambda s: list(s.propagate(obj_ids=[7])), r"no object 7"),
        ("propagate-direction", lambda s: list(s.propagate("sideways")),
         "direction must be both, forward or backward.*sideways"),
    ]


_CASES = _error_cases(24, 120, 160)


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_bad_prompts_raise_prompt_error(tiny_sam2_predictor, jpeg_clip, case):
    folder, gt = jpeg_clip
    assert gt.shape == (24, 120, 160)
    _, call, message = case
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        with pytest.raises(PromptError, match=message):
            call(session)
        # a rejected prompt leaves nothing behind
        assert session.object_ids == []
        # and the session still works
        of = session.add_mask(1, 3, gt[3] == 1)
        assert of.mask().any()
        assert session.object_ids == [1] and session.prompted_frames(1) == [3]


def test_points_and_boxes_as_arrays_or_lists(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    kwargs = _prompt(gt, 7, "box+click")
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        want = session.add_points(1, 7, **kwargs).low_res_logits
        as_numpy = {k: np.asarray(v) for k, v in kwargs.items()}
        assert torch.equal(session.add_points(2, 7, **as_numpy).low_res_logits, want)
        as_torch = {k: torch.tensor(v) for k, v in kwargs.items()}
        assert torch.equal(session.add_points(3, 7, **as_torch).low_res_logits, want)
        # a single click may be given flat, labels as booleans
        cx, cy = _centroid(gt[7] == 1)
        one = session.add_points(4, 7, points=[[cx, cy]], labels=[1]).low_res_logits
        flat = session.add_points(5, 7, points=[cx, cy], labels=[True]).low_res_logits
        assert torch.equal(flat, one)


def test_propagate_errors_with_objects_present(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, 0, gt[0] == 1)
        with pytest.raises(PromptError, match=r"no object 2 .*have \[1\]"):
            list(session.propagate(obj_ids=[1, 2]))
        with pytest.raises(PromptError, match="direction"):
            list(session.propagate("reverse"))
        # nothing was tracked by the failed calls: the object is still waiting to propagate
        assert [f for f, _, _ in _collect(session, "forward")] == list(range(len(gt)))
        # a clean session has nothing to propagate
        assert _collect(session) == []


# ---------------------------------------------------------------- objects


def test_multi_object_results_carry_exactly_the_tracked_objects(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    n = len(gt)
    first = 0
    # object 2 leaves the frame mid-clip: prompt it where it is back and fully visible
    second = n // 2 + int(np.argmax((gt[n // 2:] == 2).sum(axis=(1, 2))))
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, first, gt[first] == 1)
        session.add_mask(2, second, gt[second] == 2)
        assert session.object_ids == [1, 2]
        yielded = []
        masks = {}
        for result in session.propagate("both"):
            yielded.append((result.frame_idx, sorted(result.objects)))
            for obj_id, of in result.objects.items():
                assert (obj_id, result.frame_idx) not in masks
                masks[(obj_id, result.frame_idx)] = of.mask()
        # forward from each object's prompt, then backward from object 2's (object 1's is 0)
        want = [(f, [1] if f < second else [1, 2]) for f in range(n)]
        want += [(f, [2]) for f in range(second - 1, -1, -1)]
        assert yielded == want
        assert sorted(masks) == sorted((o, f) for o in (1, 2) for f in range(n))
        for (obj_id, frame_idx), mask in masks.items():
            if (gt[frame_idx] == obj_id).sum() >= 200:
                assert mask.any(), f"object {obj_id} frame {frame_idx}: empty mask"

        # an object added later is tracked alone: the others did not change
        session.add_mask(3, 5, gt[5] == 1)
        yielded = [(r.frame_idx, sorted(r.objects)) for r in session.propagate("both")]
        assert yielded == [(f, [3]) for f in range(5, n)] + [(f, [3]) for f in range(4, -1, -1)]

        # explicit ids re-track those objects only; one-way passes per object
        yielded = [(r.frame_idx, sorted(r.objects)) for r in session.propagate("backward", [2, 1])]
        assert yielded == [(f, [1, 2] if f == 0 else [2]) for f in range(second, -1, -1)]
        yielded = [(r.frame_idx, sorted(r.objects)) for r in session.propagate("forward", [2])]
        assert yielded == [(f, [2]) for f in range(second, n)]


def test_objects_are_independent_and_remove_object(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    n = len(gt)
    second = n // 2 + int(np.argmax((gt[n // 2:] == 2).sum(axis=(1, 2))))
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as alone:
        alone.add_mask(1, 0, gt[0] == 1)
        want = _single(_collect(alone))
        state_bytes_alone = alone._state_store.resident_bytes()
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, 0, gt[0] == 1)
        session.add_mask(2, second, gt[second] == 2)
        both = _collect(session)
        # objects are tracked independently: object 1 is exactly as if it were alone
        mine = _single(both, 1)
        assert [f for f, _ in mine] == [f for f, _ in want]
        assert all(torch.equal(x.logits(), y.logits()) and x.score == y.score
                   for (_, x), (_, y) in zip(mine, want))

        session.remove_object(2)
        assert session.object_ids == [1]
        # its tracked state is released from the store
        assert session._state_store.resident_bytes() == state_bytes_alone
        with pytest.raises(PromptError, match="no object 2"):
            session.prompted_frames(2)
        with pytest.raises(PromptError, match="no object 2"):
            list(session.propagate(obj_ids=[2]))
        session.remove_object(2)  # removing an unknown id is a no-op
        session.remove_object(99)
        assert _collect(session) == []  # nothing changed, nothing to re-track
        again = _single(_collect(session, obj_ids=[1]))
        assert all(torch.equal(x.logits(), y.logits()) and x.score == y.score
                   for (_, x), (_, y) in zip(again, want))

        # the id can be used again, for a fresh object
        session.add_mask(2, 3, gt[3] == 2)
        assert session.prompted_frames(2) == [3]
        assert session.object_ids == [1, 2]
        assert {o for _, o, _ in _collect(session)} == {2}


def test_remove_object_before_propagating(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, 2, gt[2] == 1)
        session.add_mask(2, 2, gt[2] == 2)
        session.remove_object(1)
        results = _collect(session)
        assert {o for _, o, _ in results} == {2}
        assert sorted(f for f, _, _ in results) == list(range(len(gt)))
        session.remove_object(2)
        assert session.object_ids == []
        assert _collect(session) == []
        assert session._state_store.resident_bytes() == [0]


# ---------------------------------------------------------------- VRS-HQ resize mode


def test_vrshq_resize_mode_masks_at_video_size(tiny_sam2_predictor, make_video):
    fields = dict(num_frames=12, width=160, height=96, fps=10.0, num_objects=2, seed=5)
    folder = make_video("png", **fields)
    gt = ground_truth(SyntheticSpec(**fields))
    h, w = gt.shape[1:]
    size = int(tiny_sam2_predictor.image_size)
    with TrackingSession(tiny_sam2_predictor, open_video(folder), resize="vrshq") as session:
        assert session.transform.mode is ResizeMode.VRSHQ
        new_h, new_w = session.transform.resized_hw(h, w)
        assert (new_h, new_w) == (77, 128)  # 96 * 128 / 160 = 76.8: rows 77.. are padding
        prompt = gt[0] == 1
        of = session.add_mask(1, 0, prompt)
        assert of.mask().shape == (h, w)
        assert _iou(of.mask(), prompt) > 0.85
        results = {f: of for f, of in
                   ((r.frame_idx, r.objects[1]) for r in session.propagate("forward"))}
    assert sorted(results) == list(range(len(gt)))
    low = results[0].low_res_logits.shape[-1]
    pad_rows = -(-new_h * low // size)  # low-res rows at and past this one are all padding
    assert pad_rows < low
    for frame_idx, of in results.items():
        mask = of.mask()
        assert mask.shape == (h, w) and of.logits().shape == (h, w)
        assert mask.any(), f"frame {frame_idx}: empty mask"
        # the padded strip never leaks into the video: making it foreground changes nothing
        leaky = ObjectFrame(of.obj_id, of.frame_idx, of.score, of.low_res_logits.clone(),
                            of.transform, of.orig_hw)
        leaky.low_res_logits[..., pad_rows:, :] = 50.0
        assert np.array_equal(leaky.mask(), mask)
    # the prompt itself was padded with background: no foreground in the padded strip
    assert (results[0].low_res_logits[..., pad_rows:, :] <= 0).all()
    # and the tracked masks stay on the object: a geometry mix-up between frames, prompts
    # and masks (stretched vs. padded) would shift them off it
    for frame_idx, of in results.items():
        mask = of.mask()
        on_object = (mask & (gt[frame_idx] == 1)).sum() / mask.sum()
        assert on_object > 0.6, f"frame {frame_idx}: {on_object:.2f} of the mask is on the object"


def test_vrshq_clicks_are_scaled_like_the_frame(tiny_sam2_predictor, make_video):
    # A click at the same relative position of the frame lands on the same model pixel in
    # both modes only along the longest side; check the scaled prompt the model receives.
    fields = dict(num_frames=3, width=160, height=96, fps=10.0, num_objects=2, seed=5)
    folder = make_video("png", **fields)
    with TrackingSession(tiny_sam2_predictor, open_video(folder), resize="vrshq") as session:
        session.add_points(1, 0, points=[[80.0, 48.0], [160.0, 96.0]], labels=[1, 0])
        coords = session._object(1).points[0].point_coords[0]
    assert torch.allclose(coords, torch.tensor([[64.0, 38.5], [128.0, 77.0]]))
