"""The ``vrshq`` plugin: a text prompt per object -> VRS-HQ keyframe -> SAM-2 tracks."""

from __future__ import annotations

import numpy as np

from vrshq.plugins.base import (
    CORRECTION_KINDS,
    Correction,
    ModelPlugin,
    ObjectPrompt,
    ObjectTrack,
    PluginConfig,
    Progress,
)
from vrshq.plugins.repropagate import repropagate
from vrshq.errors import ModelError, PromptError
from vrshq.masks.track import Track
from vrshq.model.clip_source import is_official
from vrshq.model.layout import check_model_folder
from vrshq.model.loading import load_vrshq
from vrshq.model.pipeline import Vrshq, VrshqConfig
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import ResizeMode


def renumbered(track: Track, obj_id: int) -> Track:
    """A copy of ``track`` under another object id (masks and scores kept)."""
    out = Track(obj_id, track.height, track.width)
    for frame in track.frames():
        out.set_rle(frame, track.rle(frame), score=track.score(frame))
    return out


class VrshqPlugin(ModelPlugin):
    """VRS-HQ (MLLM + CLIP anchor + SAM-2); corrections re-propagate on its own SAM-2."""

    name = "vrshq"
    capabilities = frozenset({"text"})
    correction_kinds = CORRECTION_KINDS  # masks, boxes and clicks re-propagate

    def __init__(self) -> None:
        self.model: Vrshq | None = None
        self._room: int | None = None
        self._official_clip = False

    @property
    def version(self) -> str:
        return self._loaded().version

    @classmethod
    def check_model(cls, model_dir: str | None) -> None:
        if not model_dir:
            raise ModelError("the vrshq plugin needs a model folder (model_dir with vrshq/, sam2/ "
                             "and clip/; `vrshq download` or `vrshq tiny-models` make one)")
        check_model_folder(model_dir)

    def load(self, config: PluginConfig) -> None:
        self.check_model(config.model_dir)
        self.model = load_vrshq(config.model_dir, VrshqConfig(engine=config.engine_config()))
        self._room = None
        self._official_clip = is_official(check_model_folder(config.model_dir).clip)

    def label_text_scores(self, texts: list[str], labels: list[str],
                          official_only: bool = True) -> list[list[float]] | None:
        """Cosine similarities by the anchor CLIP's text tower; None unless it is loaded (and, with
        ``official_only``, holds the official weights `vrshq download` recorded)."""
        if self.model is None or not texts or not labels or (official_only and not self._official_clip):
            return None
        return self.model.anchor_scorer.text_similarities(list(texts), list(labels)).tolist()

    def prompt_tokens(self, text: str) -> int | None:
        """The expression's tokens as the MLLM reads it (lower-cased, whitespace collapsed)."""
        from vrshq.model.prompt import normalize_expression

        try:
            sent = normalize_expression(text)
        except ValueError:
            return 0
        return len(self._loaded().tokenizer.encode(sent, add_special_tokens=False))

    def prompt_token_room(self) -> int | None:
        """The MLLM's context minus the conversation around the expression and the image tokens."""
        if self._room is None:
            from vrshq.model.prompt import build_prompt
            from vrshq.model.tokenization import TOKENS_PER_IMAGE, tokenize_prompt

            model = self._loaded()
            frames = int(model.config.max_frames)
            ids = tokenize_prompt(model.tokenizer, build_prompt("x", frames))
            fixed = len(ids) - 1 + ids.count(-200) * (TOKENS_PER_IMAGE - 1)
            positions = int(getattr(model.mllm.config, "max_position_embeddings", 0) or 0)
            self._room = positions - fixed
        return self._room if self._room > 0 else None

    def _loaded(self) -> Vrshq:
        return self.require_loaded(self.model)

    def predict(self, video: VideoReader, prompts: list[ObjectPrompt],
                progress: Progress | None = None) -> list[ObjectTrack]:
        model = self._loaded()
        self.check_prompts(video, prompts)
        ids = [int(p.obj_id) for p in prompts]
        if len(set(ids)) != len(ids):
            raise PromptError(f"the vrshq plugin takes one text prompt per object, got ids {ids}")
        results = model.segment(video, [p.text for p in prompts], progress=progress)
        out = []
        for p, r in zip(prompts, results):
            track = renumbered(r.track, int(p.obj_id))
            chosen = [c.object_score for c in r.candidates if c.frame == r.keyframe]
            fallback = track.score(r.keyframe) if track.has(r.keyframe) else None
            score = chosen[0] if chosen else (fallback if fallback is not None else 0.0)
            keyframe_mask = (track.mask(r.keyframe) if track.has(r.keyframe)
                             else np.zeros((video.height, video.width), bool))
            out.append(ObjectTrack(
                obj_id=int(p.obj_id), label=p.label, track=track, keyframe=int(r.keyframe),
                keyframe_mask=keyframe_mask, score=float(score),
                details={"prompt": r.prompt, "anchor": int(r.anchor),
                         "candidates": [dict(c.__dict__) for c in r.candidates]}))
        return out

    def correct(self, video: VideoReader, previous: list[ObjectTrack], corrections: list[Correction],
                progress: Progress | None = None) -> list[ObjectTrack]:
        model = self._loaded()
        # VRS-HQ tracks on its own SAM-2, frames resized its way, each pass seeing only its memories.
        return repropagate(model.sam2, video, previous, corrections, resize=ResizeMode.VRSHQ,
                           isolated_passes=True, engine=model.config.engine, progress=progress)
