"""VRS-HQ end to end: video + text prompts -> anchor -> MLLM tokens -> TDA -> TKS -> SAM-2 tracks.

The steps follow the official inference (``model/VISA_multiseg_cliptree_bf16.py`` of
SitongGong/VRS-HQ; brief-vrshq.md §1-4). Beyond it, every frame's SAM-2 image features are
computed once and shared by keyframe selection and both propagation passes, frames stream from
the reader, and the prompts of one video share the CLIP image embeddings, the MLLM's image
encoding and the SAM-2 features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vrshq.engine import EngineConfig, TrackingSession
from vrshq.errors import ModelError, PromptError
from vrshq.masks import Track, TrackSet
from vrshq.model.anchor import AnchorScorer
from vrshq.model.chatunivi.image_processing import clip_preprocess
from vrshq.model.chatunivi.modeling import ChatUniViForCausalLM
from vrshq.model.frames import MAX_FRAMES, sample_frames
from vrshq.model.keyframe import KeyframeChoice, select_keyframe_with_token
from vrshq.model.projection import TextHiddenFcs
from vrshq.model.prompt import SEG_TOKEN, TAK_TOKEN, build_prompt
from vrshq.model.tda import ALPHA, temporal_dynamic_aggregation
from vrshq.model.tokenization import LlamaTokenizer431, tokenize_prompt
from vrshq.tracking import collect_tracks
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import ResizeMode

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class VrshqConfig:
    """Inference settings (official defaults) and the engine's device, budgets and hole filling.

    ``engine.fill_hole_area`` defaults to 8, the fork's ``_build_sam2_`` value; it fills the
    keyframe decode and every tracked frame's logits.
    """

    alpha: float = ALPHA
    max_frames: int = MAX_FRAMES
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class Candidate:
    """One keyframe candidate: its frame, token-prompted object score, TDA weight and TKS score."""

    frame: int
    object_score: float
    lam: float
    score: float


@dataclass
class PromptResult:
    """Everything VRS-HQ decided for one prompt, and its track."""

    prompt: str
    obj_id: int
    anchor: int
    keyframe: int
    candidates: list[Candidate]
    track: Track

    def keyframe_json(self) -> dict:
        """The ``keyframes.json`` entry of this prompt."""
        return {"prompt": self.prompt, "object_id": self.obj_id, "anchor": self.anchor,
                "keyframe": self.keyframe,
                "candidates": [c.__dict__ for c in self.candidates]}


@dataclass
class Tokens:
    """The projected [SEG]/[TAK] states of one prompt and what TDA makes of them."""

    h_seg: torch.Tensor  # [T', out_dim]
    h_tak: torch.Tensor  # [out_dim]
    h_tak_fused: torch.Tensor  # [out_dim]
    lam: torch.Tensor  # [T']


class Vrshq:
    """The loaded model: MLLM, tokenizer, projection, SAM-2 and the CLIP anchor scorer."""

    def __init__(self, mllm: ChatUniViForCausalLM, tokenizer: LlamaTokenizer431,
                 projection: TextHiddenFcs, sam2: torch.nn.Module, anchor: AnchorScorer,
                 config: VrshqConfig = VrshqConfig(), version: str = "vrshq") -> None:
        self.mllm = mllm
        self.tokenizer = tokenizer
        self.projection = projection
        self.sam2 = sam2
        self.anchor_scorer = anchor
        self.config = config
        self.version = version
        self.device = config.engine.resolved_device()
        self.seg_id = tokenizer.token_id(SEG_TOKEN)
        self.tak_id = tokenizer.token_id(TAK_TOKEN)

    # ------------------------------------------------------------------ steps
    def anchors(self, reader: VideoReader, prompts: Sequence[str],
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> list[int]:
        """The CLIP anchor frame of each prompt (one pass of image embeddings for all prompts).

        ``on_frame`` sees every decoded frame of that pass (to encode SAM-2 features meanwhile).
        """
        def frames():
            for i, frame in reader.iter_frames():
                if on_frame is not None:
                    on_frame(i, frame)
                yield frame

        embeddings = self.anchor_scorer.image_embeddings(frames())
        return [self.anchor_scorer.anchor_from_embeddings(embeddings, p) for p in prompts]

    def encode_frames(self, reader: VideoReader, frames: Sequence[int]) -> dict[int, torch.Tensor]:
        """The MLLM's clustered image tokens of each frame, [tokens, hidden], computed once."""
        size = self.mllm.config.image_size()
        dtype = next(self.mllm.parameters()).dtype
        out: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            for start in range(0, len(frames), 8):
                chunk = list(frames[start:start + 8])
                pixels = torch.stack([clip_preprocess(reader.frame(f), size=size) for f in chunk])
                feats = self.mllm.encode_images(pixels.to(self.device, dtype))
                out.update(zip(chunk, feats))
        return out

    def prompt_tokens(self, prompt: str, image_features: Sequence[torch.Tensor]) -> Tokens:
        """One teacher-forced MLLM pass -> projected [SEG]s and [TAK] -> TDA."""
        text = build_prompt(prompt, len(image_features))
        ids = torch.tensor([tokenize_prompt(self.tokenizer, text)], device=self.device)
        with torch.inference_mode():
            output = self.mllm(ids, image_features=torch.stack(list(image_features)))
            h_seg = ChatUniViForCausalLM.hidden_before(output, ids, self.seg_id)[0]
            h_tak = ChatUniViForCausalLM.hidden_before(output, ids, self.tak_id)[0]
            if h_seg.shape[0] != len(image_features) or h_tak.shape[0] != 1:
                raise ModelError(f"prompt {prompt!r}: expected {len(image_features)} [SEG] and one "
                                 f"[TAK], found {h_seg.shape[0]} and {h_tak.shape[0]}")
            # TDA in the projection's dtype: bf16 under the official plan, as the release's
            # cosine, softmax and fusion run on its bf16 tokens (L464-472).
            p_seg = self.projection(h_seg)
            p_tak = self.projection(h_tak)[0]
            fused, lam = temporal_dynamic_aggregation(p_seg, p_tak, alpha=self.config.alpha)
        return Tokens(p_seg, p_tak, fused, lam)

    def keyframe_mask(self, choice: KeyframeChoice) -> torch.Tensor:
        """The keyframe's decode, upsampled to the model input and binarised, as the fork re-adds it."""
        size = int(self.sam2.image_size)
        logits = F.interpolate(choice.low_res_logits.float(), size=(size, size), mode="bilinear",
                               align_corners=False)
        return (logits[0, 0] > 0).float()

    # ------------------------------------------------------------------ whole video
    def segment(self, reader: VideoReader, prompts: Sequence[str], direction: str = "both",
                progress: Progress | None = None) -> list[PromptResult]:
        """Segment every prompt's object on every frame of ``reader``; object ids are 1, 2, ..."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)  # not one per letter
        if not prompts:
            raise PromptError("give at least one prompt")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise PromptError(f"a prompt must be non-empty text, got {p!r}")
        report = progress or (lambda stage, done, total: None)
        num_frames = len(reader)
        session = TrackingSession(self.sam2, reader, resize=ResizeMode.VRSHQ,
                                  config=self.config.engine, isolated_passes=True)
        try:
            # With a disk spill every frame's SAM-2 features can be kept, so they are computed
            # during the anchor pass: one decode per frame for the whole pipeline.
            fill = session.features.add_frame if self.config.engine.feature_spill == "disk" else None
            report("anchor", 0, len(prompts))
            anchors = self.anchors(reader, prompts, on_frame=fill)
            report("anchor", len(prompts), len(prompts))
            grids = [sample_frames(a, num_frames, self.config.max_frames) for a in anchors]
            frame_tokens = self.encode_frames(reader, sorted(set().union(*grids)))
            choices = []
            for i, (prompt, grid) in enumerate(zip(prompts, grids)):
                tokens = self.prompt_tokens(prompt, [frame_tokens[f] for f in grid])
                choice = select_keyframe_with_token(
                    self.sam2, session.features, grid, tokens.h_tak_fused.to(self.device),
                    tokens.lam, fill_hole_area=self.config.engine.fill_hole_area)
                session.add_model_mask(i + 1, choice.keyframe, self.keyframe_mask(choice))
                choices.append(choice)
                report("keyframe", i + 1, len(prompts))
            tracks = self._propagate(session, direction, report)
        finally:
            session.close()
        return [
            PromptResult(prompt, i + 1, anchors[i], c.keyframe,
                         [Candidate(f, float(s), float(lam), float(score)) for f, s, lam, score
                          in zip(c.candidate_frames, c.object_scores, c.lambdas, c.scores)],
                         tracks[i + 1])
            for i, (prompt, c) in enumerate(zip(prompts, choices))
        ]

    def _propagate(self, session: TrackingSession, direction: str, report: Progress) -> TrackSet:
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            report("propagate", done[0], session.num_frames)

        return collect_tracks(session, direction, progress=step)


def results_to_trackset(results: Sequence[PromptResult], reader: VideoReader) -> TrackSet:
    """All prompts' tracks in one TrackSet (object id = prompt order + 1)."""
    tracks = TrackSet(height=reader.height, width=reader.width, num_frames=len(reader),
                      fps=reader.fps)
    for r in results:
        tracks.add(r.track)
    return tracks
