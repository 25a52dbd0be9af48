"""Streaming: features and tracking state past their memory budgets, and frames decoded lazily.

Every budgeted run is compared bit for bit (torch.equal) with an unbudgeted session on the
same clip and prompts: spilling to disk, dropping and recomputing features, or reading
memories back from disk must not change a single logit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vrshq.engine.config import EngineConfig
from vrshq.engine.session import TrackingSession
from vrshq.synthetic import SyntheticSpec, ground_truth
from vrshq.video.reader import VideoReader, open_video

NUM_FRAMES = 40
PROMPT = 20  # a middle frame: both directions
CORRECTION = 31  # an already tracked frame, corrected with a mask
BUDGET_FRAMES = 5  # feature budget, in frames: far below the clip's 40


# ---------------------------------------------------------------- helpers


class CountingReader(VideoReader):
    """A reader that records every frame it is asked to decode, in order."""

    def __init__(self, inner: VideoReader) -> None:
        self.inner = inner
        self.path, self.num_frames, self.fps = inner.path, inner.num_frames, inner.fps
        self.width, self.height = inner.width, inner.height
        self.reads: list[int] = []

    def _read(self, index: int) -> np.ndarray:
        self.reads.append(index)
        return self.inner.frame(index)

    def close(self) -> None:
        super().close()
        self.inner.close()


def _spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("vrshq-spill-*"))


def _logits(result) -> dict[int, torch.Tensor]:
    return {obj_id: of.low_res_logits for obj_id, of in result.objects.items()}


def _run(session: TrackingSession, direction: str = "both", check=None,
         ) -> list[tuple[int, dict[int, torch.Tensor]]]:
    """(frame, {obj: low-res logits}) in yielded order; ``check(session)`` after each frame."""
    out = []
    for result in session.propagate(direction):
        out.append((result.frame_idx, _logits(result)))
        for obj_id, of in result.objects.items():
            assert of.mask().any(), f"object {obj_id} frame {result.frame_idx}: empty mask"
        if check is not None:
            check(session)
    return out


def assert_identical(got, want) -> None:
    assert [f for f, _ in got] == [f for f, _ in want]
    for (frame_idx, mine), (_, theirs) in zip(got, want):
        assert sorted(mine) == sorted(theirs)
        for obj_id in mine:
            assert torch.equal(mine[obj_id], theirs[obj_id]), \
                f"object {obj_id} frame {frame_idx}: logits differ"


def _budget_checker(feature_budget: int, state_budget: int):
    def check(session: TrackingSession) -> None:
        features = session.features.store.resident_bytes()
        assert features[0] <= feature_budget, f"features {features} over {feature_budget}"
        state = session._state_store.resident_bytes()
        assert state[0] <= state_budget, f"state {state} over {state_budget}"
    return check


def _assert_same_memories(session: TrackingSession, reference: TrackingSession) -> None:
    """Every tracked frame's stored output (memory, mask, pointer, score) is bit-exact."""
    mine, theirs = session._objects[1].non_cond, reference._objects[1].non_cond
    frames = [f for f in range(NUM_FRAMES) if f in theirs]
    assert len(frames) == NUM_FRAMES - 1 and all(f in mine for f in frames)
    for frame_idx in frames:
        a, b = mine.get(frame_idx), theirs.get(frame_idx)
        for name in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits"):
            assert a[name].dtype == b[name].dtype, name
            assert torch.equal(a[name], b[name]), f"frame {frame_idx}: {name} differs"
    assert mine.get(frames[0])["maskmem_features"].dtype == torch.bfloat16


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clip(synthetic_frame_folder) -> tuple[Path, np.ndarray]:
    gt = ground_truth(SyntheticSpec(num_frames=NUM_FRAMES, width=160, height=120, fps=10.0))
    return synthetic_frame_folder, gt


@pytest.fixture(scope="module")
def models(tiny_sam2_predictor):
    """The tiny sam2 per precision plan: as built (fp32), and a copy with the official bf16 weights."""
    import copy

    from vrshq.engine import apply_precision
    official = apply_precision(copy.deepcopy(tiny_sam2_predictor),
                               EngineConfig(device="cpu", precision="official"))
    return {"fp32": tiny_sam2_predictor, "official": official}


@pytest.fixture(scope="module")
def baseline(models, clip):
    """Unbudgeted sessions per precision: the prompt run, and the corrected run from scratch."""
    folder, gt = clip
    cache: dict[str, dict] = {}
    sessions: list[TrackingSession] = []

    def get(precision: str = "fp32") -> dict:
        if precision not in cache:
            config = EngineConfig(precision=precision)
            model = models[precision]
            session = TrackingSession(model, open_video(folder), config=config)
            sessions.append(session)
            session.add_mask(1, PROMPT, gt[PROMPT] == 1)
            first = _run(session)
            # the same after the correction: both prompts from the start, unbudgeted
            with TrackingSession(model, open_video(folder), config=config) as scratch:
                scratch.add_mask(1, PROMPT, gt[PROMPT] == 1)
                scratch.add_mask(1, CORRECTION, gt[CORRECTION] == 1)
                corrected = _run(scratch)
            # per-frame sizes, measured rather than assumed
            frame_bytes = sum(t.numel() * t.element_size()
                              for t in session.features.store.get(PROMPT))
            state_bytes = session._state_store.resident_bytes()[0] // (NUM_FRAMES - 1)
            assert session.features.store.evictions == 0 and session._state_store.evictions == 0
            cache[precision] = dict(session=session, first=first, corrected=corrected,
                                    frame_bytes=frame_bytes, state_bytes=state_bytes)
        return cache[precision]

    yield get
    for session in sessions:
        session.close()


def test_the_budget_is_far_below_the_clip(baseline):
    base = baseline()
    # 3 feature levels of the tiny model; the store holds what sam2 keeps per frame
    assert base["frame_bytes"] == base["session"].features._frame_bytes
    assert base["frame_bytes"] * NUM_FRAMES > 4 * BUDGET_FRAMES * base["frame_bytes"]
    # bf16 memory + float32 low-res mask + pointer + score
    assert base["state_bytes"] > 0
    resident = base["session"]._state_store.resident_bytes()[0]
    assert resident == base["state_bytes"] * (NUM_FRAMES - 1)


# ---------------------------------------------------------------- features spilled to disk


def test_feature_spill_to_disk_is_exact_and_encodes_each_frame_once(
        tiny_sam2_predictor, clip, baseline, tmp_path):
    folder, gt = clip
    base = baseline()
    feature_budget = BUDGET_FRAMES * base["frame_bytes"]
    state_budget = 10**9
    config = EngineConfig(feature_budget_bytes=feature_budget, state_budget_bytes=state_budget,
                          feature_spill="disk", cache_dir=str(tmp_path))
    check = _budget_checker(feature_budget, state_budget)
    session = TrackingSession(tiny_sam2_predictor, open_video(folder), config=config)
    try:
        session.add_mask(1, PROMPT, gt[PROMPT] == 1)
        first = _run(session, check=check)
        assert_identical(first, base["first"])
        stats = session.features.stats
        assert stats.encoder_calls == NUM_FRAMES
        assert stats.frames_decoded == NUM_FRAMES
        store = session.features.store
        assert store.evictions >= NUM_FRAMES - BUDGET_FRAMES
        assert store.spilled_bytes >= (NUM_FRAMES - BUDGET_FRAMES) * base["frame_bytes"]
        # one spill file: the features' (the state fits its budget)
        (spill,) = _spill_files(tmp_path)
        assert spill.stat().st_size >= (NUM_FRAMES - BUDGET_FRAMES) * base["frame_bytes"]

        # a correction on a tracked frame: no encoder call, the same masks as from scratch
        session.add_mask(1, CORRECTION, gt[CORRECTION] == 1)
        corrected = _run(session, check=check)
        assert stats.encoder_calls == NUM_FRAMES
        assert stats.frames_decoded == NUM_FRAMES
        assert_identical(corrected, base["corrected"])
        assert _spill_files(tmp_path) == [spill]
    finally:
        session.close()
    assert _spill_files(tmp_path) == []
    assert store.resident_bytes() == [0]


def test_feature_recompute_is_exact_and_writes_no_file(tiny_sam2_predictor, clip, baseline,
                                                        tmp_path):
    folder, gt = clip
    base = baseline()
    feature_budget = BUDGET_FRAMES * base["frame_bytes"]
    state_budget = 10**9
    config = EngineConfig(feature_budget_bytes=feature_budget, state_budget_bytes=state_budget,
                          feature_spill="recompute", cache_dir=str(tmp_path))
    check = _budget_checker(feature_budget, state_budget)

    def check_no_file(s: TrackingSession) -> None:
        check(s)
        assert _spill_files(tmp_path) == []

    with TrackingSession(tiny_sam2_predictor, open_video(folder), config=config) as session:
        session.add_mask(1, PROMPT, gt[PROMPT] == 1)
        first = _run(session, check=check_no_file)
        assert_identical(first, base["first"])
        stats = session.features.stats
        assert stats.encoder_calls >= NUM_FRAMES
        session.add_mask(1, CORRECTION, gt[CORRECTION] == 1)
        corrected = _run(session, check=check_no_file)
        assert_identical(corrected, base["corrected"])
        # dropped features were computed again: the correction re-tracked the whole clip
        assert stats.encoder_calls > NUM_FRAMES + NUM_FRAMES // 2
        assert stats.frames_decoded == stats.encoder_calls
        assert session.features.store.spilled_bytes == 0
    assert _spill_files(tmp_path) == []


# ---------------------------------------------------------------- tracking state spilled


@pytest.mark.parametrize("precision", ["fp32", "official"])
@pytest.mark.parametrize("state_frames", [3, 0], ids=["3-frames", "nothing-resident"])
def test_state_spill_is_bit_exact(models, clip, baseline, tmp_path, precision, state_frames):
    folder, gt = clip
    base = baseline(precision)
    state_budget = state_frames * base["state_bytes"]
    feature_budget = BUDGET_FRAMES * base["frame_bytes"]
    config = EngineConfig(precision=precision, feature_budget_bytes=feature_budget,
                          state_budget_bytes=state_budget, cache_dir=str(tmp_path))
    check = _budget_checker(feature_budget, state_budget)
    with TrackingSession(models[precision], open_video(folder), config=config) as session:
        session.add_mask(1, PROMPT, gt[PROMPT] == 1)
        first = _run(session, check=check)
        assert_identical(first, base["first"])
        state = session._state_store
        assert state.evictions >= NUM_FRAMES - 1 - state_frames
        # the memories read back from disk are the unbudgeted session's, bf16 included
        _assert_same_memories(session, base["session"])
        assert len(_spill_files(tmp_path)) == 2  # features and state
        sizes = {p: p.stat().st_size for p in _spill_files(tmp_path)}

        session.add_mask(1, CORRECTION, gt[CORRECTION] == 1)
        corrected = _run(session, check=check)
        assert_identical(corrected, base["corrected"])
        # re-tracking rewrote every record in place: the files did not grow
        assert {p: p.stat().st_size for p in _spill_files(tmp_path)} == sizes
    assert _spill_files(tmp_path) == []


def test_two_objects_share_the_state_budget(tiny_sam2_predictor, clip, baseline, tmp_path):
    folder, gt = clip
    base = baseline()
    state_budget = 4 * base["state_bytes"]
    feature_budget = BUDGET_FRAMES * base["frame_bytes"]
    prompts = {1: 5, 2: 2}
    results = {}
    for budgeted in (False, True):
        config = (EngineConfig(feature_budget_bytes=feature_budget, state_budget_bytes=state_budget,
                               cache_dir=str(tmp_path)) if budgeted else EngineConfig())
        check = _budget_checker(feature_budget, state_budget) if budgeted else None
        with TrackingSession(tiny_sam2_predictor, open_video(folder), config=config) as session:
            for obj_id, frame_idx in prompts.items():
                session.add_mask(obj_id, frame_idx, gt[frame_idx] == obj_id)
            results[budgeted] = _run(session, check=check)
            assert session.features.stats.encoder_calls == NUM_FRAMES
    assert_identical(results[True], results[False])
    assert {o for _, objs in results[True] for o in objs} == {1, 2}


# ---------------------------------------------------------------- lazy decoding


def test_forward_run_decodes_one_frame_per_result(tiny_sam2_predictor, clip, baseline, tmp_path):
    folder, gt = clip
    base = baseline()
    config = EngineConfig(feature_budget_bytes=BUDGET_FRAMES * base["frame_bytes"],
                          state_budget_bytes=4 * base["state_bytes"], cache_dir=str(tmp_path))
    reader = CountingReader(open_video(folder))
    with TrackingSession(tiny_sam2_predictor, reader, config=config) as session:
        assert reader.reads == []  # opening a session decodes nothing
        session.add_mask(1, 0, gt[0] == 1)
        assert reader.reads == [0]
        seen = 0
        for result in session.propagate("forward"):
            # the result of frame i arrives after decoding frames 0..i only
            assert len(reader.reads) <= result.frame_idx + 1, (result.frame_idx, reader.reads)
            assert session.features.stats.frames_decoded <= result.frame_idx + 1
            assert result.objects[1].mask().any()
            seen += 1
        assert seen == NUM_FRAMES
        assert reader.reads == list(range(NUM_FRAMES))  # each frame once, in order


def test_mp4_first_result_after_constant_decoding(tiny_sam2_predictor, synthetic_mp4, clip,
                                                  baseline, tmp_path):
    _, gt = clip
    base = baseline()
    config = EngineConfig(feature_budget_bytes=BUDGET_FRAMES * base["frame_bytes"],
                          state_budget_bytes=4 * base["state_bytes"], cache_dir=str(tmp_path))
    reader = CountingReader(open_video(synthetic_mp4))
    assert len(reader) == NUM_FRAMES
    firsts = []
    with TrackingSession(tiny_sam2_predictor, reader, config=config) as session:
        session.add_mask(1, 0, gt[0] == 1)
        for result in session.propagate("forward"):
            firsts.append((result.frame_idx, list(reader.reads)))
            assert result.objects[1].mask().any()
            if result.frame_idx == 2:
                break  # a consumer may stop early: nothing past frame 2 was decoded
        assert firsts == [(0, [0]), (1, [0, 1]), (2, [0, 1, 2])]
        assert session.features.stats.frames_decoded == 3
        # stopping early left the object to re-track: the next run goes through the clip
        assert [r.frame_idx for r in session.propagate("forward")] == list(range(NUM_FRAMES))
        assert session.features.stats.encoder_calls == NUM_FRAMES


def test_backward_pass_decodes_in_ascending_blocks(tiny_sam2_predictor, clip, baseline, tmp_path):
    # Video decoders are fast only forwards: a backward pass reads each block of frames in
    # ascending order, one block (what the feature budget holds) ahead of its results.
    folder, gt = clip
    base = baseline()
    config = EngineConfig(feature_budget_bytes=BUDGET_FRAMES * base["frame_bytes"],
                          state_budget_bytes=4 * base["state_bytes"], cache_dir=str(tmp_path))
    reader = CountingReader(open_video(folder))
    with TrackingSession(tiny_sam2_predictor, reader, config=config) as session:
        assert session.features.block_size() == 1  # nothing encoded yet: size unknown
        session.add_mask(1, PROMPT, gt[PROMPT] == 1)
        assert session.features.block_size() == BUDGET_FRAMES
        frames = []
        for result in session.propagate("backward"):
            frames.append(result.frame_idx)
            behind = PROMPT - result.frame_idx + 1  # results so far
            assert len(reader.reads) <= behind + BUDGET_FRAMES
            assert result.objects[1].mask().any()
        assert frames == list(range(PROMPT, -1, -1))
        reads = reader.reads
        assert sorted(reads) == list(range(PROMPT + 1))  # each frame once
        runs = [[reads[0]]]
        for prev, cur in zip(reads, reads[1:]):
            runs[-1].append(cur) if cur == prev + 1 else runs.append([cur])
        assert all(len(run) <= BUDGET_FRAMES for run in runs), runs
        assert len(runs) >= (PROMPT + 1) // BUDGET_FRAMES
