"""Bounded memory of the sam3 plugin on a longer video: frames on demand, spent outputs dropped.

A 48-frame ffmpeg-encoded video is longer than the tiny model's memory window (num_maskmem 3,
4 object pointers): the plugin drops outputs while it runs, and its masks must still equal
transformers' documented loops, which hold the whole video and every output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import sam3_fixtures
from tests.sam3_fixtures import assert_tracks_equal_reference, load_sam3_plugin
from tests.test_sam3_plugin import reference_concept
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video

tiny_sam3_dir = sam3_fixtures.tiny_sam3_dir  # the session-wide tiny model (a fixture)

pytest.importorskip("transformers")

N_FRAMES, H, W = 48, 48, 64


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    spec = SyntheticSpec(num_frames=N_FRAMES, width=W, height=H, fps=10.0, num_objects=2, seed=3)
    path = write_video(spec, tmp_path_factory.mktemp("sam3_long") / "clip.mp4")
    with open_video(path) as reader:
        yield reader


@pytest.fixture(scope="module")
def plugin(tiny_sam3_dir):
    return load_sam3_plugin(tiny_sam3_dir)


def all_frames(video):
    return [video.frame(i) for i in range(len(video))]


def test_concept_loop_prunes_and_equals_the_reference(plugin, long_video, tiny_sam3_dir):
    from vrshq.plugins.sam3_session import concept_frames

    stats: dict = {}
    ours = {f: {int(i): m.numpy() for i, m in zip(r["object_ids"], r["masks"])}
            for f, r in concept_frames(plugin.model, plugin.processor, long_video, "cat", stats)}
    ref = reference_concept(tiny_sam3_dir / "sam3", all_frames(long_video), "cat")
    assert sorted(ours) == sorted(ref) == list(range(N_FRAMES))
    # pruning really happened, and what is kept is bounded by the window, not the video
    assert stats["decoded"] == N_FRAMES
    assert stats["dropped"] > N_FRAMES // 2
    delay = plugin.model.hotstart_delay
    assert stats["peak_kept"] <= stats["window"] + delay + 1 < N_FRAMES // 4
    # the tiny model keeps instances on the late frames, past the window: a real comparison
    assert sum(len(per) for f, per in ref.items() if f > N_FRAMES // 2) > 0
    for f in ref:
        assert sorted(ours[f]) == sorted(i for i in ref[f])
        for i, (mask, _) in ref[f].items():
            np.testing.assert_array_equal(ours[f][i], mask)


def test_plugin_tracks_equal_the_reference_on_the_long_video(plugin, long_video, tiny_sam3_dir):
    from vrshq.plugins.base import ObjectPrompt

    tracks = plugin.predict(long_video, [ObjectPrompt(obj_id=1, text="cat", label="Cat")])
    ref = reference_concept(tiny_sam3_dir / "sam3", all_frames(long_video), "cat")
    assert tracks
    assert_tracks_equal_reference(tracks, ref)


def reference_tracking(model_dir, frames, frame_idx, mask):
    """transformers' documented Sam3TrackerVideoModel loop, one mask prompt, both ways."""
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(model_dir).eval()
    processor = Sam3TrackerVideoProcessor.from_pretrained(model_dir)
    session = processor.init_video_session(video=frames, inference_device="cpu")
    processor.add_inputs_to_inference_session(inference_session=session, frame_idx=frame_idx,
                                              obj_ids=1, input_masks=mask.astype(np.float32))
    masks = {}
    with torch.no_grad():
        model(inference_session=session, frame_idx=frame_idx)
        for reverse in (False, True):
            for out in model.propagate_in_video_iterator(session, start_frame_idx=frame_idx,
                                                         reverse=reverse):
                masks.setdefault(out.frame_idx, processor.post_process_masks(
                    [out.pred_masks], original_sizes=[[H, W]], binarize=True)[0][0, 0].numpy())
    return masks


def test_tracker_prunes_both_ways_and_equals_the_reference(plugin, long_video, tiny_sam3_dir):
    from vrshq.plugins.sam3_tracker import load_tracker, track_from_masks

    model, processor = load_tracker(tiny_sam3_dir / "sam3", torch.device("cpu"))
    start = N_FRAMES // 2  # both passes run past the memory window
    mask = np.zeros((H, W), dtype=bool)
    mask[10:30, 20:50] = True
    stats: dict = {}
    track = track_from_masks(model, processor, long_video, {start: mask}, 1, stats=stats)
    ref = reference_tracking(tiny_sam3_dir / "sam3", all_frames(long_video), start, mask)
    assert stats["dropped"] > N_FRAMES // 2
    # forward keeps the frames after the start for the backward pass: two windows at most
    assert stats["peak_kept"] <= 2 * stats["window"] + 1 < N_FRAMES // 4
    assert track.frames() == sorted(ref) == list(range(N_FRAMES))
    assert ref[0].any() and ref[N_FRAMES - 1].any()  # tracked to both ends: a real comparison
    for f in ref:
        np.testing.assert_array_equal(track.mask(f), ref[f])


def test_pruner_keeps_exactly_what_later_frames_read():
    """The kept ranges, by hand: window 3, forward 10..19 then backward 10..0."""
    from vrshq.plugins.sam3_session import OutputPruner

    pruner = OutputPruner(3, [(10, 19, False), (10, 0, True)])
    # after forward frame 14: frames 15..19 read 12..18; the backward pass reads 1..13
    assert pruner._still_read(0, 14) == [(12, 18), (1, 13)]
    # after backward frame 5: frames 4..0 read 1..7
    assert pruner._still_read(1, 5) == [(1, 7)]
    assert pruner._still_read(1, 0) == []
    session = type("S", (), {})()
    session.output_dict_per_obj = {0: {"cond_frame_outputs": {10: "c"},
                                       "non_cond_frame_outputs": {f: f for f in range(20)}}}
    pruner.after_frame(session, 1, 5)
    assert sorted(session.output_dict_per_obj[0]["non_cond_frame_outputs"]) == list(range(1, 8))
    assert session.output_dict_per_obj[0]["cond_frame_outputs"] == {10: "c"}
    assert pruner.dropped == 13


def test_rle_masks_round_trip():
    from vrshq.plugins.sam3_session import RleMasks

    rng = np.random.default_rng(0)
    masks = {f: rng.random((H, W)) > 0.5 for f in (3, 1, 7)}
    store = RleMasks()
    for f, m in masks.items():
        store[f] = m
    assert sorted(store) == [1, 3, 7] and min(store) == 1 and len(store) == 3
    for f, m in masks.items():
        np.testing.assert_array_equal(store[f], m)
