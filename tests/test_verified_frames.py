"""Issue 14 §4: only annotator-verified frames (corrected or reviewed) are ground truth.

The training export says which frames are verified; ``vrshq evaluate --model --data`` and the
Train button score only those and say how many; with none, evaluation refuses and the Train
button does not promote. Task states are built from synthetic ground truth (as in
test_dataset_export.py), so every verified frame is known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrshq.backend.labelstudio.media import MediaConfig
from vrshq.backend.tasks.provenance import REVIEWED, Review
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.cli import main
from vrshq.synthetic import ground_truth, write_video
from tests.test_dataset_export import SMALL, URL, _state


def _log_correction(log, task: str, frame: int, mask, url=URL, boxes_only=False):
    from vrshq.backend.corrections import Correction as Logged
    from vrshq.masks import encode_rle

    log.append(Logged(
        project=1, task=int(task), annotation=1, annotator=2, video_path=url, video_sha256=None,
        fps=SMALL.fps, prompt="the red disc", obj_id=1, label="Person", frame=frame,
        predicted_mask=encode_rle(np.zeros_like(mask, bool)),
        corrected_mask=None if boxes_only else encode_rle(mask),
        predicted_boxes=[{"frame": 1, "x": 1, "y": 1, "width": 5, "height": 5, "enabled": True}]
        if boxes_only else None,
        corrected_boxes=[{"frame": 1, "x": 2, "y": 1, "width": 5, "height": 5, "enabled": True}]
        if boxes_only else None,
        model_version="tiny", plugin="vrshq", event="ANNOTATION_UPDATED"))


@pytest.fixture
def mostly_propagated(tmp_path):
    """A backend data folder whose one task's object 1 has 8 masks, 2 of them verified:
    corrected on frame 0 (the log) and reviewed on frame 3 (the state)."""
    from vrshq.backend.corrections import CorrectionsLog

    data, media = tmp_path / "backend", tmp_path / "media"
    (media / "clips").mkdir(parents=True)
    write_video(SMALL, media / "clips" / "v.mp4")
    gt = ground_truth(SMALL)
    state = _state("1", "4", submitted=True)
    state.reviews = [Review(1, 3, REVIEWED, gt[3] == 1, 9, "the red disc")]
    TaskStateStore(data).save(state)
    with CorrectionsLog.for_model_dir(data) as log:
        _log_correction(log, "4", 0, gt[0] == 1)
    return {"data": data, "media": MediaConfig(local_roots=(str(media),)), "gt": gt}


def test_the_training_export_says_which_frames_are_verified(mostly_propagated, tmp_path):
    from vrshq.backend.corrections import CorrectionsLog
    from vrshq.backend.corrections.training_export import export_training_set
    from vrshq.evaluation.verified import count_verified, read_verified

    w = mostly_propagated
    reviewed_only = _state("1", "5", submitted=True)  # no correction logged: in by its review
    reviewed_only.reviews = [Review(2, 0, REVIEWED, w["gt"][0] == 2, 9, "the car")]
    TaskStateStore(w["data"]).save(reviewed_only)
    with CorrectionsLog.for_model_dir(w["data"]) as log:
        m = export_training_set(log, tmp_path / "set", w["media"], "revos", state_root=w["data"])
    (o5,) = m["videos"]["p1_t5"]["objects"]
    assert (o5["obj_id"], o5["exp"], o5["label"], o5["corrected_frames"], o5["reviewed_frames"]) == \
        (2, "the car", "Car", [], [0])
    del m["videos"]["p1_t5"]
    (o1,) = m["videos"]["p1_t4"]["objects"]  # the log's objects (object 2 has no correction)
    assert (o1["corrected_frames"], o1["reviewed_frames"]) == ([0], [3])
    assert o1["propagated_frames"] == [1, 2, 4, 5, 6, 7]
    assert (m["counts"]["verified_masks"], m["counts"]["propagated_masks"]) == (3, 13)
    verified = read_verified(tmp_path / "set" / "train")
    assert verified == {"p1_t4": {1: [0, 3]}, "p1_t5": {2: [0]}} and count_verified(verified) == 3


def test_evaluate_says_how_many_verified_frames_it_scored(mostly_propagated, tiny_models, tmp_path, capsys):
    from vrshq.backend.corrections import CorrectionsLog
    from vrshq.backend.corrections.training_export import export_training_set

    w = mostly_propagated
    with CorrectionsLog.for_model_dir(w["data"]) as log:
        export_training_set(log, tmp_path / "set", w["media"], "revos", state_root=w["data"])
    code = main(["evaluate", "--model", str(tiny_models), "--data", str(tmp_path / "set"), "--split",
                 "train", "--device", "cpu", "--out", str(tmp_path / "scores")])
    assert code == 0, capsys.readouterr().err
    assert "J&F over 2 annotator-verified frame(s)" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert scores["verified_frames"] == 2 and scores["videos"]["p1_t4"]["frames"] == [0, 3]


def test_evaluation_scores_only_verified_frames(tmp_path):
    """The trap of issue 14: a model that reproduces the backend's propagation scores ~1 against
    it; on the verified frames (where the annotator disagreed with the propagation) it does not."""
    from vrshq.evaluation import evaluate_folders
    from vrshq.evaluation.verified import evaluate_verified
    from vrshq.masks import write_palette_folder

    gt = ground_truth(SMALL)
    truth = gt.copy()  # what annotators verified on frames 2 and 5: object 1 elsewhere
    for f in (2, 5):
        truth[f][truth[f] == 1] = 0
        truth[f][30:40, 40:55] = 1
    pred = gt  # the backend's own propagation, replayed by the untrained model
    write_palette_folder(tmp_path / "gt" / "v", list(enumerate(truth)))
    write_palette_folder(tmp_path / "pred" / "v", list(enumerate(pred)))
    everything = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert everything["J&F"] > 0.8  # the noise issue 14 measured
    scored = evaluate_verified(tmp_path / "pred", tmp_path / "gt", {"v": {1: [2, 5], 2: [2]}})
    assert scored["verified_frames"] == 3 and scored["num_objects"] == 2
    assert scored["videos"]["v"]["objects"]["1"]["J"] == 0.0  # disjoint from what was verified
    assert scored["videos"]["v"]["objects"]["2"]["J&F"] == 1.0
    assert scored["videos"]["v"]["objects"]["1"]["verified_frames"] == 2
    assert scored["J&F"] == pytest.approx(0.5)
    none = evaluate_verified(tmp_path / "pred", tmp_path / "gt", {"v": {1: [], 2: []}})
    assert (none["verified_frames"], none["J&F"], none["num_objects"]) == (0, None, 0)


@pytest.fixture
def unverified_set(tmp_path):
    """A revos export whose only correction is a box edit: every mask is propagated."""
    from vrshq.backend.corrections import CorrectionsLog
    from vrshq.backend.corrections.training_export import export_training_set

    data, media = tmp_path / "backend", tmp_path / "media"
    (media / "clips").mkdir(parents=True)
    write_video(SMALL, media / "clips" / "v.mp4")
    TaskStateStore(data).save(_state("1", "4", submitted=True))
    with CorrectionsLog.for_model_dir(data) as log:
        _log_correction(log, "4", 0, ground_truth(SMALL)[0] == 1, boxes_only=True)
        m = export_training_set(log, tmp_path / "set", MediaConfig(local_roots=(str(media),)), "revos",
                                state_root=data)
    assert m["counts"]["verified_masks"] == 0 and m["counts"]["propagated_masks"] == 8
    return tmp_path / "set"


def test_no_verified_frames_nothing_to_score_and_nothing_promoted(tiny_models, unverified_set, tmp_path, capsys):
    from vrshq.finetune.run import register_if_not_worse
    from vrshq.versions import VersionRegistry

    code = main(["evaluate", "--model", str(tiny_models), "--data", str(unverified_set), "--split",
                 "train", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no annotator-verified frames" in err and err.count("\n") == 1, err

    # The Train button's last step: the held-out split has no verified frame -> not served.
    (unverified_set / "valid").mkdir()
    for name in ("meta_expressions.json", "mask_dict.json", "verified_frames.json", "JPEGImages"):
        (unverified_set / "train" / name).rename(unverified_set / "valid" / name)
    registry = VersionRegistry(tmp_path / "backend")
    result = register_if_not_worse(tmp_path / "backend", tiny_models, tiny_models, unverified_set,
                                   device="cpu")
    assert result["served"] is False and result["verified_frames"] == 0
    assert "no annotator-verified frames" in result["reason"]
    assert result["baseline J&F"] is None  # the serving model was not even scored on noise
    assert registry.serving() is None  # still the base model
