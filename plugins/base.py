"""The model-plugin interface: what a plugin receives (a video and object prompts) and returns (tracks).

A plugin is a :class:`ModelPlugin` subclass published under the entry-point group
``vrshq.plugins`` (see :mod:`vrshq.plugins.registry`). The backend builds one instance per process,
calls :meth:`ModelPlugin.load` once (heavy models live on the instance) and then, per request,
:meth:`ModelPlugin.predict` or :meth:`ModelPlugin.correct`. Plugins see plain data classes and
numpy masks at the video's size, never Label Studio JSON: the backend converts both ways.
Requests share no state: each call builds its own tracking session.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import numpy as np

from vrshq.engine.config import EngineConfig
from vrshq.errors import ModelError, PromptError
from vrshq.masks.track import Track
from vrshq.video.reader import VideoReader

# progress(stage, done, total), e.g. ("propagate", 12, 80)
Progress = Callable[[str, int, int], None]

PROMPT_KINDS = frozenset({"text", "box", "points", "mask"})

_T = TypeVar("_T")


@dataclass
class ObjectPrompt:
    """What the annotator asked for one object.

    ``box`` is ``(x0, y0, x1, y1)`` and ``points`` are ``(x, y)`` in video pixels; ``point_labels``
    are 1 (positive) or 0 (negative), one per point; ``mask`` is boolean HxW at the video size.
    ``frame`` is the 0-based frame the geometric prompt lies on. Several prompts may share an
    ``obj_id`` (on different frames): the first is the object's keyframe, the others refine it.
    ``label_rule`` is the backend's note of why a text prompt got ``label``
    (:mod:`vrshq.backend.labelstudio.label_rules`); plugins need not read it.
    """

    obj_id: int
    label: str | None = None
    text: str | None = None
    frame: int | None = None
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] | None = None
    point_labels: list[int] | None = None
    label_rule: str | None = None

    def kinds(self) -> set[str]:
        """The prompt kinds this prompt carries (a subset of ``PROMPT_KINDS``)."""
        kinds = set()
        if self.text is not None:
            kinds.add("text")
        if self.box is not None:
            kinds.add("box")
        if self.points is not None or self.point_labels is not None:
            kinds.add("points")
        if self.mask is not None:
            kinds.add("mask")
        return kinds


CORRECTION_KINDS = frozenset({"mask", "box", "points"})


@dataclass
class Correction:
    """An annotator's correction of one object on one frame: exactly one of a ``mask`` (boolean
    HxW at the video size), a ``box`` ``(x0, y0, x1, y1)`` in video pixels, or clicks: ``points``
    ``(x, y)`` in video pixels with ``point_labels`` 1 (positive) / 0 (negative), one per point.

    A mask comes back exactly on its frame; a box or clicks are a prompt there, so the frame's
    mask is the tracker's mask from that prompt (no mask was drawn).
    """

    obj_id: int
    frame: int
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] | None = None
    point_labels: list[int] | None = None

    def kinds(self) -> set[str]:
        """The correction kinds this correction carries (one, once checked)."""
        kinds = set()
        if self.mask is not None:
            kinds.add("mask")
        if self.box is not None:
            kinds.add("box")
        if self.points is not None or self.point_labels is not None:
            kinds.add("points")
        return kinds

    @property
    def kind(self) -> str:
        """``"mask"``, ``"box"`` or ``"points"`` (a checked correction has exactly one)."""
        kinds = self.kinds()
        return next(iter(kinds)) if len(kinds) == 1 else "+".join(sorted(kinds)) or "nothing"


@dataclass
class ObjectTrack:
    """A plugin's result for one object: its track, keyframe and what the model decided.

    ``keyframe_mask`` is the mask the object's track was conditioned on at ``keyframe`` (a
    mask prompt itself, or the model's mask there); :meth:`ModelPlugin.correct` re-prompts with
    it. ``score`` is the object-score logit on the keyframe (> 0: present); the backend reports
    its sigmoid to Label Studio. ``details`` holds model specifics the backend may report (JSON-ready values);
    ``corrections`` are the corrections already applied, so later corrections keep them.
    """

    obj_id: int
    label: str | None
    track: Track
    keyframe: int
    keyframe_mask: np.ndarray
    score: float
    details: dict[str, Any] = field(default_factory=dict)
    corrections: list[Correction] = field(default_factory=list)


@dataclass(frozen=True)
class PluginConfig:
    """How the backend configures a plugin: the model folder, the device and the engine budgets.

    ``sam2_config``/``sam2_checkpoint`` name a SAM-2 model outside ``model_dir`` (sam2 plugin);
    ``options`` carries plugin-specific settings of third-party plugins.
    """

    model_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"  # the precision plan (vrshq.engine.config.PRECISIONS)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sam2_config: str | None = None
    sam2_checkpoint: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def engine_config(self) -> EngineConfig:
        """The engine config with this config's device and precision (each wins unless "auto")."""
        engine = replace(self.engine, device=self.device) if self.device != "auto" else self.engine
        if self.precision != "auto":
            try:
                engine = replace(engine, precision=self.precision)
            except ValueError as exc:
                raise ModelError(str(exc)) from None
        try:
            engine.resolved_device()
        except RuntimeError:
            raise ModelError(f"device {engine.device!r}: not a torch device") from None
        return engine

    def option(self, key: str, default: str | None = None) -> str | None:
        """A plugin-specific option's value."""
        return dict(self.options).get(key, default)


class ModelPlugin(ABC):
    """A model the backend can pre-annotate videos with.

    Subclasses set ``name`` and ``capabilities``, and implement :meth:`load`, :meth:`predict`,
    :meth:`correct` and the :attr:`version` property.
    """

    name: ClassVar[str] = "plugin"
    # The prompt kinds predict() accepts, a subset of PROMPT_KINDS.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # A concept model: a task without a prompt takes the project's labels as its text prompts.
    labels_as_prompts: ClassVar[bool] = False
    # The Correction kinds correct() takes (a subset of CORRECTION_KINDS); the backend sends a
    # moved box as a correction only to a plugin that takes "box", and logs it only otherwise.
    correction_kinds: ClassVar[frozenset[str]] = frozenset({"mask"})

    @property
    @abstractmethod
    def version(self) -> str:
        """The model version string (reported to Label Studio as ``model_version``)."""

    @abstractmethod
    def load(self, config: PluginConfig) -> None:
        """Load the models (once per process); a missing or bad model raises ModelError."""

    @abstractmethod
    def predict(self, video: VideoReader, prompts: list[ObjectPrompt],
                progress: Progress | None = None) -> list[ObjectTrack]:
        """One track per object of ``prompts`` (in first-prompt order); bad prompts raise PromptError."""

    @abstractmethod
    def correct(self, video: VideoReader, previous: list[ObjectTrack], corrections: list[Correction],
                progress: Progress | None = None) -> list[ObjectTrack]:
        """Re-propagate the corrected objects; returns every object's track (others unchanged)."""

    @classmethod
    def check_model(cls, model_dir: str | None) -> None:
        """Check the model folder's layout without loading it (at start-up); ModelError if bad."""

    def prompt_tokens(self, text: str) -> int | None:
        """How many tokens the model reads for ``text`` as one object's prompt (None: unknown).

        The backend bounds prompts with it before any model work; it must cost time linear in
        ``len(text)`` and never run the model.
        """
        return None

    def prompt_token_room(self) -> int | None:
        """The most prompt tokens one object's model pass has room for (None: unknown)."""
        return None

    def label_text_scores(self, texts: list[str], labels: list[str],
                          official_only: bool = True) -> list[list[float]] | None:
        """Cosine similarity of each text's embedding to each label text's, by the model's text
        encoder (one row per text); None without one, or with ``official_only`` when its weights
        are not the official release's. The backend's CLIP label rule reads it.
        """
        return None

    # ------------------------------------------------------------------ helpers
    def info(self) -> dict[str, Any]:
        """What /setup and /health report about the plugin."""
        try:
            version = self.version
        except ModelError:
            version = None
        return {"name": self.name, "version": version, "capabilities": sorted(self.capabilities),
                "corrections": sorted(self.correction_kinds)}

    def check_prompts(self, video: VideoReader, prompts: list[ObjectPrompt]) -> None:
        """Raise PromptError naming the first prompt this plugin cannot take."""
        check_prompts(self.name, self.capabilities, video, prompts)

    def require_loaded(self, value: _T | None) -> _T:
        """``value`` (something :meth:`load` sets: a model, the version), or ModelError if unset."""
        if value is None:
            raise ModelError(f"the {self.name} plugin is not loaded: call load() first")
        return value


def check_prompts(plugin: str, capabilities: frozenset[str] | set[str], video: VideoReader,
                  prompts: list[ObjectPrompt]) -> None:
    """The checks every plugin shares: types, ids, kinds, frames, mask sizes, point/label counts."""
    if isinstance(prompts, ObjectPrompt) or not isinstance(prompts, (list, tuple)):
        raise PromptError("prompts must be a list of ObjectPrompt")
    if not prompts:
        raise PromptError("give at least one prompt")
    accepted = ", ".join(sorted(capabilities)) or "nothing"
    hw = (video.height, video.width)
    for p in prompts:
        if not isinstance(p, ObjectPrompt):
            raise PromptError(f"a prompt must be an ObjectPrompt, got {type(p).__name__}")
        if not isinstance(p.obj_id, (int, np.integer)) or isinstance(p.obj_id, bool) or p.obj_id < 1:
            raise PromptError(f"object ids are positive integers, not {p.obj_id!r}")
        kinds = p.kinds()
        if not kinds:
            raise PromptError(f"object {p.obj_id}: the prompt is empty (the {plugin} plugin "
                              f"accepts {accepted})")
        unsupported = kinds - set(capabilities)
        if unsupported:
            raise PromptError(f"object {p.obj_id}: the {plugin} plugin does not accept "
                              f"{', '.join(sorted(unsupported))} prompts (it accepts {accepted})")
        if p.frame is not None and (not isinstance(p.frame, (int, np.integer)) or isinstance(p.frame, bool)
                                    or not 0 <= p.frame < len(video)):
            raise PromptError(f"object {p.obj_id}: frame {p.frame!r} is outside the video "
                              f"(0..{len(video) - 1})")
        if p.text is not None and (not isinstance(p.text, str) or not p.text.strip()):
            raise PromptError(f"object {p.obj_id}: a text prompt must be non-empty text")
        if p.mask is not None:
            mask = np.asarray(p.mask)
            if mask.shape != hw:
                raise PromptError(f"object {p.obj_id}: the mask is {mask.shape} but the video is "
                                  f"{hw} (height, width)")
            if not mask.any():
                raise PromptError(f"object {p.obj_id}: the mask prompt is empty")
        if p.box is not None:
            box = np.asarray(p.box, dtype=float).reshape(-1) if _numeric(p.box) else None
            if box is None or box.size != 4 or not np.isfinite(box).all():
                raise PromptError(f"object {p.obj_id}: a box is (x0, y0, x1, y1) pixels, got {p.box!r}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise PromptError(f"object {p.obj_id}: the box {tuple(box.tolist())} has no area "
                                  "(x1 must exceed x0 and y1 y0)")
        if "points" in kinds:
            if p.points is None or p.point_labels is None:
                raise PromptError(f"object {p.obj_id}: points and point_labels must be given together")
            if len(p.points) != len(p.point_labels):
                raise PromptError(f"object {p.obj_id}: {len(p.points)} points but "
                                  f"{len(p.point_labels)} point labels")
            if not p.points:
                raise PromptError(f"object {p.obj_id}: points is empty")
            pts = np.asarray(p.points, dtype=float) if _numeric(p.points) else None
            if pts is None or pts.shape != (len(p.points), 2) or not np.isfinite(pts).all():
                raise PromptError(f"object {p.obj_id}: points are finite (x, y) pixel pairs, "
                                  f"got {p.points!r}")
            if any(label not in (0, 1) for label in p.point_labels):
                raise PromptError(f"object {p.obj_id}: point labels are 1 (positive) or 0 "
                                  f"(negative), got {p.point_labels!r}")


def _numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def check_corrections(previous: list[ObjectTrack], corrections: list[Correction],
                      video: VideoReader, kinds: frozenset[str] | set[str] = CORRECTION_KINDS) -> None:
    """Raise PromptError for a correction of an unknown object, off the video, of a kind not in
    ``kinds``, or with a bad mask (size), box (finite, inside the frame, with area) or clicks
    (finite, inside the frame, labels 0/1, as many labels as points)."""
    if isinstance(corrections, Correction) or not isinstance(corrections, (list, tuple)):
        raise PromptError("corrections must be a list of Correction")
    ids = [t.obj_id for t in previous]
    if len(set(ids)) != len(ids):
        raise PromptError(f"the previous tracks repeat object ids: {ids}")
    for c in corrections:
        if not isinstance(c, Correction):
            raise PromptError(f"a correction must be a Correction, got {type(c).__name__}")
        if c.obj_id not in ids:
            raise PromptError(f"correction of object {c.obj_id}, which has no previous track "
                              f"(have {sorted(ids)})")
        if not isinstance(c.frame, (int, np.integer)) or isinstance(c.frame, bool) \
                or not 0 <= c.frame < len(video):
            raise PromptError(f"correction of object {c.obj_id}: frame {c.frame!r} is outside the "
                              f"video (0..{len(video) - 1})")
        _check_correction(c, video, kinds)


def _check_correction(c: Correction, video: VideoReader, accepted: frozenset[str] | set[str]) -> None:
    """The checks of one correction's payload (its object and frame are known to be good)."""
    what = f"correction of object {c.obj_id} on frame {c.frame}"
    kinds = c.kinds()
    if len(kinds) != 1:
        got = ", ".join(sorted(kinds)) or "nothing"
        raise PromptError(f"{what}: give exactly one of a mask, a box or points (got {got})")
    (kind,) = kinds
    if kind not in accepted:
        raise PromptError(f"{what}: this plugin does not take {kind} corrections (it takes "
                          f"{', '.join(sorted(accepted))})")
    height, width = video.height, video.width
    if kind == "mask":
        mask = np.asarray(c.mask)
        if mask.shape != (height, width):
            raise PromptError(f"{what}: the mask is {mask.shape} but the video is "
                              f"{(height, width)} (height, width)")
    elif kind == "box":
        box = np.asarray(c.box, dtype=float).reshape(-1) if _numeric(c.box) else None
        if box is None or box.size != 4 or not np.isfinite(box).all():
            raise PromptError(f"{what}: a box is (x0, y0, x1, y1) finite pixels, got {c.box!r}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise PromptError(f"{what}: the box {tuple(box.tolist())} has no area (x1 must exceed "
                              "x0 and y1 y0)")
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            raise PromptError(f"{what}: the box {tuple(box.tolist())} is not inside the "
                              f"{width}x{height} frame")
    else:
        if c.points is None or c.point_labels is None:
            raise PromptError(f"{what}: points and point_labels must be given together")
        if len(c.points) != len(c.point_labels):
            raise PromptError(f"{what}: {len(c.points)} points but {len(c.point_labels)} point labels")
        if not len(c.points):
            raise PromptError(f"{what}: points is empty")
        pts = np.asarray(c.points, dtype=float) if _numeric(c.points) else None
        if pts is None or pts.shape != (len(c.points), 2) or not np.isfinite(pts).all():
            raise PromptError(f"{what}: points are finite (x, y) pixel pairs, got {c.points!r}")
        if (pts < 0).any() or (pts[:, 0] > width).any() or (pts[:, 1] > height).any():
            raise PromptError(f"{what}: a point of {pts.tolist()} is outside the {width}x{height} frame")
        if any(isinstance(v, bool) or v not in (0, 1) for v in c.point_labels):
            raise PromptError(f"{what}: point labels are 1 (positive) or 0 (negative), "
                              f"got {c.point_labels!r}")


__all__ = [
    "CORRECTION_KINDS", "PROMPT_KINDS", "Correction", "ModelPlugin", "ObjectPrompt", "ObjectTrack",
    "PluginConfig", "Progress", "check_corrections", "check_prompts",
]
