"""Corrections by box or clicks (not only by mask), at the plugin level.

A box or clicks correction re-tracks the object with that prompt on its frame. The SAM-2 path
(``repropagate``: the vrshq and sam2 plugins) is compared with sam2's own ``SAM2VideoPredictor``
driven the way its README does (tests/sam2_reference.py) on the same tiny weights and frames,
mask for mask (the engine is bit-exact, tests/test_engine_parity.py; hole filling off on both
sides); the sam3 path with transformers' documented ``Sam3TrackerVideoModel`` loop with the same
prompts (tests/test_sam3_plugin.py), also mask for mask.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.engine_fixtures import PARITY
from tests.sam2_reference import reference_prompt, reference_propagate
from tests.sam3_fixtures import load_sam3_plugin, tiny_sam3_dir  # noqa: F401 - fixture
from vrshq.backend.tasks.state import TaskState, correction_from_json, correction_json
from vrshq.errors import PromptError
from vrshq.masks.track import Track
from vrshq.plugins.base import Correction, ObjectPrompt, ObjectTrack
from vrshq.plugins.repropagate import merge_corrections, repropagate
from vrshq.video.reader import open_video

A, K = 2, 16  # the keyframe and the corrected frame of the 24-frame JPEG clip


def bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def sam2_reference(predictor, folder, prompts: list[tuple[int, dict]]) -> dict[int, np.ndarray]:
    """sam2's masks per frame for object 1, prompted with (frame, add_new_* keyword arguments)."""
    state = predictor.init_state(str(folder))
    for frame, kwargs in prompts:
        reference_prompt(predictor, state, frame, **kwargs)
    return {f: (r.logits > 0).numpy() for f, r in reference_propagate(predictor, state, "both")}


def ours(predictor, folder, gt, corrections: list[Correction]) -> Track:
    previous = ObjectTrack(1, "disc", Track(1, gt.shape[1], gt.shape[2]), keyframe=A,
                           keyframe_mask=gt[A] == 1, score=0.0)
    (out,) = repropagate(predictor, open_video(folder), [previous], corrections, resize="sam2",
                         isolated_passes=False, engine=PARITY)
    assert [c.kind for c in out.corrections] == [c.kind for c in corrections]
    return out.track


def assert_track_is(track: Track, ref: dict[int, np.ndarray], n: int) -> None:
    assert track.frames() == list(range(n)) == sorted(ref)
    for f in range(n):
        assert np.array_equal(track.mask(f), ref[f]), f"frame {f} differs from the reference"


def test_a_box_correction_equals_sam2s_predictor(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    x0, y0, x1, y1 = bbox(gt[K] == 1)
    box = (x0 + 3, y0 - 2, x1 + 6, y1 + 1)  # a loose box, not the mask's own
    track = ours(tiny_sam2_predictor, folder, gt, [Correction(1, K, box=box)])
    ref = sam2_reference(tiny_sam2_predictor, folder, [(A, {"mask": gt[A] == 1}),
                                                       (K, {"box": np.array(box)})])
    assert_track_is(track, ref, len(gt))
    # not the track without the correction: the box is used
    plain = sam2_reference(tiny_sam2_predictor, folder, [(A, {"mask": gt[A] == 1})])
    assert any(not np.array_equal(ref[f], plain[f]) for f in ref)


def test_a_clicks_correction_equals_sam2s_predictor(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    ys, xs = np.nonzero(gt[K] == 1)
    points = [(float(xs.mean()), float(ys.mean())), (5.0, 7.0)]  # inside the disc; a background click
    labels = [1, 0]
    track = ours(tiny_sam2_predictor, folder, gt, [Correction(1, K, points=points, point_labels=labels)])
    ref = sam2_reference(tiny_sam2_predictor, folder, [
        (A, {"mask": gt[A] == 1}),
        (K, {"points": np.array(points, dtype=np.float32), "labels": np.array(labels, np.int32)})])
    assert_track_is(track, ref, len(gt))


def test_a_box_replaces_an_earlier_mask_on_its_frame_and_keeps_other_frames(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    box = bbox(gt[K] == 1)
    earlier = [Correction(1, K, gt[K] == 1), Correction(1, 6, gt[6] == 1)]
    merged = merge_corrections(earlier, [Correction(1, K, box=box)])
    assert [(c.frame, c.kind) for c in merged] == [(6, "mask"), (K, "box")]
    track = ours(tiny_sam2_predictor, folder, gt, merged)
    ref = sam2_reference(tiny_sam2_predictor, folder, [(A, {"mask": gt[A] == 1}), (6, {"mask": gt[6] == 1}),
                                                       (K, {"box": np.array(box)})])
    assert_track_is(track, ref, len(gt))


@pytest.mark.parametrize(("correction", "words"), [
    (Correction(1, 3), "exactly one of a mask, a box or points (got nothing)"),
    (Correction(1, 3, np.zeros((120, 160), bool), box=(1, 1, 5, 5)), "exactly one of a mask, a box or points (got box, mask)"),
    (Correction(1, 3, box=(1, 1, 5)), "a box is (x0, y0, x1, y1) finite pixels"),
    (Correction(1, 3, box=(1, float("nan"), 5, 5)), "finite pixels"),
    (Correction(1, 3, box=(5, 1, 5, 9)), "has no area"),
    (Correction(1, 3, box=(1, 1, 161, 9)), "not inside the 160x120 frame"),
    (Correction(1, 3, box=(-1, 1, 10, 9)), "not inside the 160x120 frame"),
    (Correction(1, 3, points=[(1, 2)]), "points and point_labels must be given together"),
    (Correction(1, 3, points=[(1, 2)], point_labels=[1, 0]), "1 points but 2 point labels"),
    (Correction(1, 3, points=[], point_labels=[]), "points is empty"),
    (Correction(1, 3, points=[(1, float("inf"))], point_labels=[1]), "finite (x, y) pixel pairs"),
    (Correction(1, 3, points=[(1, 121)], point_labels=[1]), "outside the 160x120 frame"),
    (Correction(1, 3, points=[(1, 2)], point_labels=[2]), "1 (positive) or 0 (negative)"),
    (Correction(1, 3, points=[(1, 2)], point_labels=[True]), "1 (positive) or 0 (negative)"),
])
def test_bad_box_and_clicks_corrections_are_named(tiny_sam2_predictor, jpeg_clip, correction, words):
    folder, gt = jpeg_clip
    with pytest.raises(PromptError, match="correction of object 1 on frame 3") as err:
        ours(tiny_sam2_predictor, folder, gt, [correction])
    assert words in str(err.value)


def test_a_plugin_refuses_kinds_it_does_not_take(jpeg_clip):
    from vrshq.plugins.repropagate import corrections_by_object

    folder, gt = jpeg_clip
    prev = ObjectTrack(1, None, Track(1, 120, 160), keyframe=A, keyframe_mask=gt[A] == 1, score=0.0)
    with pytest.raises(PromptError, match="does not take box corrections"):
        corrections_by_object([prev], [Correction(1, 3, box=(1, 1, 5, 5))], open_video(folder),
                              frozenset({"mask"}))


# --- stored corrections --------------------------------------------------------------------------

def test_box_and_clicks_corrections_survive_the_task_state(jpeg_clip):
    _, gt = jpeg_clip
    mask = gt[4] == 1
    corrections = [Correction(1, 4, mask), Correction(1, 9, box=(1.5, 2.25, 30.0, 40.125)),
                   Correction(1, 12, points=[(3.5, 4.0), (9.0, 1.0)], point_labels=[1, 0])]
    obj = ObjectTrack(1, "disc", Track(1, 120, 160), keyframe=A, keyframe_mask=gt[A] == 1, score=0.5,
                      corrections=corrections)
    state = TaskState("1", "7", "sam2", "v", "clips/a.mp4", 10.0, 24, objects=[obj])
    back = TaskState.from_json(json.loads(json.dumps(state.to_json()))).objects[0].corrections
    assert [(c.frame, c.kind) for c in back] == [(4, "mask"), (9, "box"), (12, "points")]
    assert np.array_equal(back[0].mask, mask) and back[0].box is None and back[0].points is None
    assert back[1].box == (1.5, 2.25, 30.0, 40.125) and back[1].mask is None
    assert back[2].points == [(3.5, 4.0), (9.0, 1.0)] and back[2].point_labels == [1, 0]
    # a state written before boxes and clicks (mask corrections only) reads as it always did
    old = {"obj_id": 1, "frame": 4, "mask": correction_json(corrections[0])["mask"]}
    assert set(correction_json(corrections[0])) == {"obj_id", "frame", "mask"}
    assert np.array_equal(correction_from_json(old).mask, mask) and correction_from_json(old).kind == "mask"


def test_a_stored_box_correction_keeps_being_used_by_later_corrections(tiny_models, truth, tmp_path):
    """box on frame 5 -> saved and loaded state -> a mask on frame 9: the same as both at once."""
    from tests.backend_fixtures import SPEC  # the clip of the truth fixture
    from vrshq.plugins import PluginConfig, load_plugin
    from vrshq.synthetic import write_frame_folder

    sam2 = load_plugin("sam2", PluginConfig(model_dir=str(tiny_models), device="cpu"))
    write_frame_folder(SPEC, tmp_path / "f", ext="png")
    video = open_video(tmp_path / "f")
    tracks = sam2.predict(video, [ObjectPrompt(1, frame=0, mask=truth[0] == 1)])
    box = bbox(truth[5] == 1)
    once = sam2.correct(video, tracks, [Correction(1, 5, box=box)])
    state = TaskState("1", "7", "sam2", "v", "x", SPEC.fps, SPEC.num_frames, objects=once)
    loaded = TaskState.from_json(json.loads(json.dumps(state.to_json()))).objects
    twice = sam2.correct(video, loaded, [Correction(1, 9, truth[9] == 1)])
    both = sam2.correct(video, tracks, [Correction(1, 5, box=box), Correction(1, 9, truth[9] == 1)])
    without_box = sam2.correct(video, tracks, [Correction(1, 9, truth[9] == 1)])
    assert [(c.frame, c.kind) for c in twice[0].corrections] == [(5, "box"), (9, "mask")]
    assert twice[0].track == both[0].track
    assert twice[0].track != without_box[0].track  # the stored box still conditions the track


# --- sam3 ----------------------------------------------------------------------------------------

N3, H3, W3 = 3, 48, 64


@pytest.fixture(scope="module")
def sam3_video(tmp_path_factory):
    from PIL import Image

    from vrshq.video.folder import FrameFolderReader

    folder = tmp_path_factory.mktemp("sam3_box_video")
    rng = np.random.default_rng(0)
    for i in range(N3):
        Image.fromarray(rng.integers(0, 255, (H3, W3, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return FrameFolderReader(folder)


def sam3_reference(model_dir, frames, prompts: list[tuple[int, dict]]) -> dict[int, np.ndarray]:
    """transformers' documented Sam3TrackerVideoModel loop: each frame's prompt added and the
    model run on it, then propagation forward and backward from the first prompted frame."""
    import torch
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(model_dir).eval()
    processor = Sam3TrackerVideoProcessor.from_pretrained(model_dir)
    session = processor.init_video_session(video=frames, inference_device="cpu")
    start = min(f for f, _ in prompts)
    masks = {}
    with torch.no_grad():
        for frame, kwargs in sorted(prompts, key=lambda p: p[0]):
            processor.add_inputs_to_inference_session(inference_session=session, frame_idx=frame,
                                                      obj_ids=1, **kwargs)
            model(inference_session=session, frame_idx=frame)
        for reverse in (False, True):
            for out in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                if out.frame_idx not in masks:
                    masks[out.frame_idx] = processor.post_process_masks(
                        [out.pred_masks], original_sizes=[[H3, W3]], binarize=True)[0][0, 0].numpy()
    return masks


@pytest.fixture(scope="module")
def sam3(tiny_sam3_dir):  # noqa: F811
    return load_sam3_plugin(tiny_sam3_dir)


def sam3_object(keyframe: int) -> ObjectTrack:
    mask = np.zeros((H3, W3), dtype=bool)
    mask[5:25, 8:30] = True
    return ObjectTrack(1, "Cat", Track(1, H3, W3), keyframe=keyframe, keyframe_mask=mask, score=0.0)


@pytest.mark.parametrize("kind", ["box", "points"])
def test_sam3_box_and_clicks_corrections_equal_the_tracker_loop(sam3, sam3_video, tiny_sam3_dir, kind):  # noqa: F811
    box = (12.0, 8.0, 50.0, 40.0)
    points, labels = [(30.0, 20.0), (4.0, 44.0)], [1, 0]
    obj = sam3_object(keyframe=0)
    fix = Correction(1, 2, box=box) if kind == "box" else Correction(1, 2, points=points, point_labels=labels)
    (out,) = sam3.correct(sam3_video, [obj], [fix])
    assert out.track.frames() == list(range(N3)) and [c.kind for c in out.corrections] == [kind]
    prompt = {"input_boxes": [[list(box)]]} if kind == "box" else \
        {"input_points": [[[list(p) for p in points]]], "input_labels": [[labels]]}
    frames = [sam3_video.frame(i) for i in range(N3)]
    ref = sam3_reference(tiny_sam3_dir / "sam3", frames,
                         [(0, {"input_masks": obj.keyframe_mask.astype(np.float32)}), (2, prompt)])
    plain = sam3_reference(tiny_sam3_dir / "sam3", frames,
                           [(0, {"input_masks": obj.keyframe_mask.astype(np.float32)})])
    assert any(not np.array_equal(ref[f], plain[f]) for f in range(N3))  # the prompt matters
    for f in range(N3):
        np.testing.assert_array_equal(out.track.mask(f), ref[f], err_msg=f"frame {f}")
