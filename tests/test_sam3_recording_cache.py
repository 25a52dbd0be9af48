"""The shared recording step of plugins/sam3_features.py (``_recording_into``, used by the concept
pass's ``recording`` and the tracker's ``tracker_features``), on a real tiny SAM 3 tracker session:
a block that ends well gives the session its own cache back and the slot the frames it computed;
a failed block keeps nothing."""

from __future__ import annotations

import pytest
import torch

from tests import backend_fixtures, sam3_fixtures
from tests.backend_fixtures import SPEC
from vrshq.engine.persist import FeatureSlot, use_slot
from vrshq.plugins.sam3_features import FeatureRecorder, tracker_features
from vrshq.plugins.sam3_session import open_session
from vrshq.plugins.sam3_tracker import _add_prompt, load_tracker
from vrshq.video.reader import open_video

media_root = backend_fixtures.media_root
tiny_sam3_dir = sam3_fixtures.tiny_sam3_dir


@pytest.fixture(scope="module")
def tracker(tiny_sam3_dir, media_root):
    model, processor = load_tracker(tiny_sam3_dir / "sam3", torch.device("cpu"))
    video = open_video(media_root / "clips" / "a.mp4", fps=SPEC.fps)
    yield model, processor, video
    video.close()


def _run_frames(model, processor, session, frames) -> None:
    _add_prompt(processor, session, frames[0], 1, (10.0, 10.0, 60.0, 50.0))
    for frame in frames:
        model(inference_session=session, frame_idx=frame)


def test_a_recording_block_gives_the_cache_back_and_the_slot_its_frames(tracker, tmp_path):
    model, processor, video = tracker
    session = open_session(processor, video, torch.device("cpu"))
    own = session.cache
    slot = FeatureSlot(tmp_path, "1-1", {"video": "a"}, "read", 1 << 30)  # nothing stored yet
    with use_slot(slot):
        with torch.inference_mode(), tracker_features(session, model, processor, video) as stored:
            assert stored is None  # nothing to read: this session records
            assert session.cache is not own
            _run_frames(model, processor, session, [0, 1])
        assert session.cache is own  # unwrapped: later use of the session records nothing
        ((recorder, _),) = slot.adopted
        assert isinstance(recorder, FeatureRecorder)
        assert [f for f, _ in recorder.iter_cached()] == [0, 1]
        assert slot.keep_filled()


def test_a_failed_recording_block_keeps_nothing(tracker, tmp_path):
    model, processor, video = tracker
    session = open_session(processor, video, torch.device("cpu"))
    slot = FeatureSlot(tmp_path, "1-2", {"video": "a"}, "read", 1 << 30)
    with use_slot(slot):
        with pytest.raises(RuntimeError, match="stopped"):
            with torch.inference_mode(), tracker_features(session, model, processor, video):
                _run_frames(model, processor, session, [0])
                raise RuntimeError("stopped")
        assert slot.adopted == [] and not slot.keep_filled()
        recorder = session.cache._recorder  # the recording the failed block made: closed
        assert recorder.snapshot_size()[0] == 0
