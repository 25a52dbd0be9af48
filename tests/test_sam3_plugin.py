"""The sam3 plugin against transformers' own documented SAM 3 loops, on the same tiny weights.

Reference loops are written here as transformers' docs show them (``Sam3VideoModel`` for text
prompts; ``Sam3TrackerVideoModel`` with a mask prompt for corrections). Offline, transformers
would skip its Hub kernel (NMS, hole filling, sprinkle removal); the plugin installs ours
(vrshq.plugins.sam3_kernels) and the reference installs the same, so both sides run the same
post-processing and masks must be bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.sam3_fixtures import assert_tracks_equal_reference, load_sam3_plugin, tiny_sam3_dir  # noqa: F401 - fixture
from vrshq.errors import PromptError
from vrshq.plugins.base import Correction, ObjectPrompt, PluginConfig
from vrshq.video.folder import FrameFolderReader

pytest.importorskip("transformers")

N_FRAMES, H, W = 3, 48, 64


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Three random 64x48 frames as a frame folder (the tiny model finds instances in them)."""
    folder = tmp_path_factory.mktemp("sam3_video")
    rng = np.random.default_rng(0)
    for i in range(N_FRAMES):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return FrameFolderReader(folder)


@pytest.fixture(scope="module")
def plugin(tiny_sam3_dir):  # noqa: F811
    return load_sam3_plugin(tiny_sam3_dir)


@pytest.fixture(scope="module")
def predicted(plugin, video):
    return plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="Cat")])


def test_sam3_is_registered_like_the_other_plugins():
    import tomllib
    from pathlib import Path

    from vrshq.plugins.registry import load_plugin, plugin_class
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.errors import ModelError

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["vrshq.plugins"]["sam3"] == \
        "vrshq.plugins.sam3_plugin:Sam3Plugin"
    assert plugin_class("sam3") is Sam3Plugin
    with pytest.raises(ModelError, match="sam3/config.json"):
        load_plugin("sam3", PluginConfig(model_dir=None))


def reference_concept(model_dir, frames, text, kernel=True):
    """transformers' documented Sam3VideoModel loop: {frame: {object id: (mask, score)}}."""
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    from vrshq.plugins import sam3_kernels

    if kernel:
        sam3_kernels.install()  # our NMS + connected components, as the plugin runs them
    else:
        from transformers.models.sam3_video import modeling_sam3_video

        modeling_sam3_video.cv_utils_kernel = False  # transformers' own offline path: skipped
    model = Sam3VideoModel.from_pretrained(model_dir).eval()
    processor = Sam3VideoProcessor.from_pretrained(model_dir)
    inference_session = processor.init_video_session(video=frames, inference_device="cpu",
                                                     processing_device="cpu",
                                                     video_storage_device="cpu")
    inference_session = processor.add_text_prompt(inference_session=inference_session, text=text)
    outputs_per_frame = {}
    with torch.no_grad():
        for model_outputs in model.propagate_in_video_iterator(inference_session=inference_session):
            processed = processor.postprocess_outputs(inference_session, model_outputs)
            outputs_per_frame[model_outputs.frame_idx] = {
                int(i): (m.numpy(), float(s)) for i, m, s in
                zip(processed["object_ids"], processed["masks"], processed["scores"])}
    return outputs_per_frame


def test_concept_masks_equal_transformers_reference(predicted, video, tiny_sam3_dir):  # noqa: F811
    frames = [video.frame(i) for i in range(len(video))]
    ref = reference_concept(tiny_sam3_dir / "sam3", frames, "cat")
    ref_ids = sorted({i for per in ref.values() for i in per})
    assert ref_ids, "the tiny model must find instances for the comparison to mean anything"
    assert len(predicted) == len(ref_ids)
    # the tiny model tracks an instance over several frames, so the keyframe is a real choice
    assert max(len(t.track.frames()) for t in predicted) > 1
    assert_tracks_equal_reference(predicted, ref)
    for t in predicted:
        sam3_id = t.details["sam3_instance"]
        ref_frames = sorted(f for f, per in ref.items() if sam3_id in per)
        scores = {f: ref[f][sam3_id][1] for f in ref_frames}
        assert t.keyframe == max(ref_frames, key=lambda f: (scores[f], -f))
        np.testing.assert_array_equal(t.keyframe_mask, ref[t.keyframe][sam3_id][0])


def test_our_kernel_changes_the_masks_transformers_would_leave(predicted, video, tiny_sam3_dir):  # noqa: F811
    """Without a kernel transformers skips NMS and hole filling: our stand-in is not a no-op."""
    frames = [video.frame(i) for i in range(len(video))]
    skipped = reference_concept(tiny_sam3_dir / "sam3", frames, "cat", kernel=False)
    from vrshq.plugins import sam3_kernels

    sam3_kernels.install()  # back to the plugin's state for the tests that follow
    ours = {(f, t.details["sam3_instance"]): t.track.mask(f) for t in predicted for f in t.track.frames()}
    theirs = {(f, i): m for f, per in skipped.items() for i, (m, _) in per.items()}
    assert ours.keys() != theirs.keys() or any(
        not np.array_equal(ours[k], theirs[k]) for k in ours)


def test_every_instance_is_its_own_object_with_the_concept_label(predicted):
    assert [t.obj_id for t in predicted] == list(range(1, len(predicted) + 1))
    assert {t.label for t in predicted} == {"Cat"}
    # deterministic order: first frame, then SAM 3's instance id
    keys = [(t.track.frames()[0], t.details["sam3_instance"]) for t in predicted]
    assert keys == sorted(keys)


def test_two_concepts_keep_their_own_labels_and_label_rules(plugin, video, predicted):
    from vrshq.backend.labelstudio.label_rules import record_label_rules

    # prompt ids unlike the instances' new ids: the rules must follow concepts, not ids
    prompts = [ObjectPrompt(obj_id=2, text="dog", label="Dog", label_rule="explicit"),
               ObjectPrompt(obj_id=1, text="cat", label="Cat", label_rule="word")]
    seen = []
    tracks = plugin.predict(video, prompts, progress=lambda *a: seen.append(a))
    # one propagate stage over both concepts' passes, frame by frame
    assert seen == [("propagate", i, 2 * N_FRAMES) for i in range(1, 2 * N_FRAMES + 1)]
    record_label_rules(tracks, prompts)  # as the backend does after predict
    dogs = [t for t in tracks if t.details["concept"] == "dog"]
    cats = [t for t in tracks if t.details["concept"] == "cat"]
    assert dogs and cats and tracks == dogs + cats  # concepts in prompt order
    assert {(t.label, t.details["label_rule"]) for t in dogs} == {("Dog", "explicit")}
    assert {(t.label, t.details["label_rule"]) for t in cats} == {("Cat", "word")}
    # one session per concept: the cats are the cat-only prediction's, renumbered after the dogs
    assert [t.details["sam3_instance"] for t in cats] == [t.details["sam3_instance"] for t in predicted]
    for mine, alone in zip(cats, predicted):
        assert mine.obj_id == alone.obj_id + len(dogs)
        assert all(np.array_equal(mine.track.mask(f), alone.track.mask(f)) for f in alone.track.frames())


def test_prediction_is_deterministic_and_a_repeated_concept_runs_once(plugin, video, predicted):
    again = plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="Cat"),
                                   ObjectPrompt(obj_id=2, text=" cat ", label="Cat")])
    assert [t.track for t in again] == [t.track for t in predicted]
    # objects added to a task: numbered on from the prompt's (next free) id
    added = plugin.predict(video, [ObjectPrompt(obj_id=7, text="cat", label="Cat")])
    assert [t.obj_id for t in added] == list(range(7, 7 + len(predicted)))


def test_concept_prompts_take_no_frame_or_geometry(plugin, video):
    with pytest.raises(PromptError, match="whole video"):
        plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", frame=0)])
    with pytest.raises(PromptError, match="whole video"):
        plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", box=(0, 0, 5, 5))])
    # drawn objects: a box or a mask on a frame, never points, never without a frame
    with pytest.raises(PromptError, match="does not accept points"):
        plugin.predict(video, [ObjectPrompt(obj_id=1, points=[(2, 2)], point_labels=[1], frame=0)])
    with pytest.raises(PromptError, match="needs its frame"):
        plugin.predict(video, [ObjectPrompt(obj_id=1, box=(0, 0, 5, 5))])
    with pytest.raises(PromptError, match="two prompts on frame 0"):
        plugin.predict(video, [ObjectPrompt(obj_id=1, box=(0, 0, 5, 5), frame=0),
                               ObjectPrompt(obj_id=1, box=(1, 1, 6, 6), frame=0)])


def test_a_drawn_box_is_tracked_both_ways_like_the_reference(plugin, video, tiny_sam3_dir):  # noqa: F811
    box = (12.0, 8.0, 50.0, 40.0)
    (obj,) = plugin.predict(video, [ObjectPrompt(obj_id=4, box=box, frame=1, label="Dog")])
    assert (obj.obj_id, obj.label, obj.keyframe) == (4, "Dog", 1)
    assert obj.track.frames() == list(range(N_FRAMES))
    frames = [video.frame(i) for i in range(len(video))]
    ref = reference_box_tracking(tiny_sam3_dir / "sam3", frames, 1, box)
    assert any(ref[f].any() for f in range(N_FRAMES))  # a non-trivial comparison
    for f in range(N_FRAMES):
        np.testing.assert_array_equal(obj.track.mask(f), ref[f])
    np.testing.assert_array_equal(obj.keyframe_mask, ref[1])


def test_a_drawn_mask_and_a_concept_in_one_request(plugin, video, predicted, tiny_sam3_dir):  # noqa: F811
    drawn = np.zeros((H, W), dtype=bool)
    drawn[10:30, 20:50] = True
    # the drawn object takes id 1: the concept's instances are numbered past it
    out = plugin.predict(video, [ObjectPrompt(obj_id=1, mask=drawn, frame=1, label="Dog"),
                                 ObjectPrompt(obj_id=1, text="cat", label="Cat")])
    concept = [t for t in out if t.details.get("concept") == "cat"]
    assert [t.obj_id for t in concept] == list(range(2, 2 + len(predicted)))
    for a, b in zip(concept, predicted):  # the same instances, only numbered on
        assert a.track.frames() == b.track.frames()
        assert all(np.array_equal(a.track.mask(f), b.track.mask(f)) for f in b.track.frames())
    (obj,) = [t for t in out if t.obj_id == 1]
    assert obj.label == "Dog" and obj.details["prompt_kinds"] == ["mask"]
    np.testing.assert_array_equal(obj.track.mask(1), drawn)  # exactly as drawn
    frames = [video.frame(i) for i in range(len(video))]
    ref = reference_mask_tracking(tiny_sam3_dir / "sam3", frames, 1, drawn)
    for f in (0, 2):
        np.testing.assert_array_equal(obj.track.mask(f), ref[f])


def reference_mask_tracking(model_dir, frames, frame_idx, mask):
    """transformers' documented Sam3TrackerVideoModel loop with one mask prompt, both ways."""
    return reference_tracking(model_dir, frames, frame_idx, input_masks=mask.astype(np.float32))


def reference_box_tracking(model_dir, frames, frame_idx, box):
    """transformers' documented Sam3TrackerVideoModel box-prompt loop (one object), both ways."""
    return reference_tracking(model_dir, frames, frame_idx, input_boxes=[[list(box)]])


def reference_tracking(model_dir, frames, frame_idx, **prompt):
    """The documented tracker loop: one object's prompt (``input_masks`` or ``input_boxes``) on
    ``frame_idx``, its output there, then propagation forward and backward from it."""
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(model_dir).eval()
    processor = Sam3TrackerVideoProcessor.from_pretrained(model_dir)
    inference_session = processor.init_video_session(video=frames, inference_device="cpu")
    processor.add_inputs_to_inference_session(inference_session=inference_session,
                                              frame_idx=frame_idx, obj_ids=1, **prompt)
    masks = {}
    with torch.no_grad():
        model(inference_session=inference_session, frame_idx=frame_idx)
        for reverse in (False, True):
            for out in model.propagate_in_video_iterator(inference_session, start_frame_idx=frame_idx,
                                                         reverse=reverse):
                if out.frame_idx not in masks:
                    masks[out.frame_idx] = processor.post_process_masks(
                        [out.pred_masks], original_sizes=[[H, W]], binarize=True)[0][0, 0].numpy()
    return masks


def test_mask_correction_repropagates_both_ways_like_the_reference(plugin, video, predicted,
                                                                   tiny_sam3_dir):  # noqa: F811
    from dataclasses import replace

    # the keyframe on the corrected frame: the session then has exactly the reference's one prompt
    corrected = np.zeros((H, W), dtype=bool)
    corrected[10:30, 20:50] = True
    target = replace(predicted[0], keyframe=1, keyframe_mask=corrected, corrections=[])
    others = predicted[1:]
    out = plugin.correct(video, [target, *others], [Correction(target.obj_id, 1, corrected)])
    assert [t.obj_id for t in out] == [t.obj_id for t in [target, *others]]
    assert all(a is b for a, b in zip(out[1:], others))  # untouched objects unchanged
    track = out[0].track
    assert track.frames() == list(range(N_FRAMES))
    np.testing.assert_array_equal(track.mask(1), corrected)  # exactly as corrected
    frames = [video.frame(i) for i in range(len(video))]
    ref = reference_mask_tracking(tiny_sam3_dir / "sam3", frames, 1, corrected)
    for f in (0, 2):
        assert ref[f].any()  # a non-trivial comparison
        np.testing.assert_array_equal(track.mask(f), ref[f])
    assert out[0].corrections[0].frame == 1


def test_keyframe_is_the_highest_score_earliest_on_a_tie():
    from vrshq.plugins.sam3_plugin import Instance

    mask = np.ones((2, 2), dtype=bool)
    inst = Instance(7, masks={f: mask for f in range(4)}, scores={0: 0.3, 1: 0.9, 2: 0.9, 3: 0.1})
    assert inst.keyframe() == 1
    assert inst.first_frame() == 0
    # the tiny model's instances score the same on every frame: the rule's tie case
    assert Instance(1, masks={2: mask, 5: mask}, scores={5: 0.5, 2: 0.5}).keyframe() == 2


def test_instances_are_ordered_by_first_frame_then_sam3_id():
    from vrshq.plugins.sam3_plugin import Instance, order_instances

    mask = np.ones((2, 2), dtype=bool)

    def inst(sam3_id, frames):
        return Instance(sam3_id, masks={f: mask for f in frames}, scores={f: 0.5 for f in frames})

    found = [inst(5, [0, 1]), inst(2, [1, 2]), inst(9, [0]), inst(1, [2])]
    assert [i.sam3_id for i in order_instances(found)] == [5, 9, 2, 1]


def test_a_later_correction_keeps_the_earlier_ones_exact(plugin, video, predicted):
    first = np.zeros((H, W), dtype=bool)
    first[5:20, 5:25] = True
    second = np.zeros((H, W), dtype=bool)
    second[30:45, 40:60] = True
    once = plugin.correct(video, predicted, [Correction(predicted[0].obj_id, 0, first)])
    twice = plugin.correct(video, once, [Correction(predicted[0].obj_id, 2, second)])
    track = twice[0].track
    np.testing.assert_array_equal(track.mask(0), first)
    np.testing.assert_array_equal(track.mask(2), second)
    assert [c.frame for c in twice[0].corrections] == [0, 2]
