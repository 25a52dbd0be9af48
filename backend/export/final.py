"""The final masks of a project's tasks, with their provenance: what every format writer reads.

Per task (its saved state, ``MODEL_DIR/tasks/<project>/<task>.json``) and object: the last
re-propagated track, with every correction applied on its own frame (the annotator's submitted
mask wins over the correction a re-propagation was given; on one frame the newest wins). Per
frame the provenance is ``corrected`` (an annotator drew that mask), ``reviewed`` (shown to an
annotator who submitted it unchanged, and still the mask the track has there) or ``propagated``.
Objects an annotator deleted are left out. Frames are 0-based.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vrshq.backend.tasks.provenance import CORRECTED, PROPAGATED, REVIEWED, VERIFIED, deleted_objects
from vrshq.backend.tasks.state import TaskState, TaskStateStore
from vrshq.errors import VrshqError
from vrshq.masks import CocoRle, decode_rle, encode_rle, rle_area

DEFAULT_LABEL = "object"  # the category of an object without a label


@dataclass
class FinalObject:
    """One object's final masks: per frame a COCO RLE (None: no mask there) and its provenance."""

    obj_id: int
    label: str
    prompt: str
    masks: list[CocoRle | None]
    provenance: list[str]

    def mask(self, frame: int, hw: tuple[int, int]) -> np.ndarray:
        """The boolean mask on ``frame`` (empty where there is none)."""
        rle = self.masks[frame]
        return np.zeros(hw, bool) if rle is None else decode_rle(rle)

    def count(self, kind: str) -> int:
        """How many frames have this provenance."""
        return sum(1 for p in self.provenance if p == kind)


@dataclass
class FinalTask:
    """One task's final masks."""

    project: str
    task: str
    video: str  # the task's video reference as Label Studio gave it
    fps: float
    frames_count: int
    height: int
    width: int
    submitted: bool  # an annotation was submitted (else: predictions only)
    objects: list[FinalObject] = field(default_factory=list)
    state: TaskState | None = field(default=None, repr=False)  # with the final tracks

    @property
    def name(self) -> str:
        """The task's video name in an export."""
        return f"p{self.project}_t{self.task}"

    def verified_frames(self) -> int:
        """(object, frame) pairs an annotator corrected or reviewed."""
        return sum(1 for o in self.objects for p in o.provenance if p in VERIFIED)


def final_task(state: TaskState) -> FinalTask:
    """The final masks of one task state (the state itself is not changed)."""
    n = state.frames_count
    hw = next(((o.track.height, o.track.width) for o in state.objects), (0, 0))
    out = FinalTask(state.project, state.task, state.video, state.fps, n, int(hw[0]), int(hw[1]),
                    bool(state.submissions))
    deleted = deleted_objects(state)  # the same rule that hides them from every prediction
    for obj in state.objects:
        if obj.obj_id in deleted:
            continue
        prompt = obj.details.get("prompt")
        # A verdict on an object re-prompted since (same id, other prompt) was about another object.
        reviews = {r.frame: r for r in state.reviews if r.obj_id == obj.obj_id and r.prompt == prompt}
        masks: list[CocoRle | None] = [None] * n
        provenance = [PROPAGATED] * n
        for f in obj.track.frames():
            if 0 <= f < n:
                masks[f] = obj.track.rle(f)
        # in order applied: the newest wins; a box or clicks drew no mask (the frame stays the
        # tracker's, propagated), and it hides an older mask drawn on the same frame
        drawn = {c.frame: c.mask for c in obj.corrections}
        drawn = {f: m for f, m in drawn.items() if m is not None}
        drawn.update({f: r.mask for f, r in reviews.items() if r.status == CORRECTED})
        for f, mask in drawn.items():
            if 0 <= f < n and np.shape(mask) == hw:
                masks[f], provenance[f] = encode_rle(np.asarray(mask, dtype=bool)), CORRECTED
        for f, r in reviews.items():
            if r.status == REVIEWED and 0 <= f < n and provenance[f] == PROPAGATED \
                    and np.array_equal(_decoded(masks[f], hw), r.mask):
                provenance[f] = REVIEWED  # a reviewed mask the track has changed since is not
        masks = [None if m is None or rle_area(m) == 0 else m for m in masks]
        out.objects.append(FinalObject(obj.obj_id, str(obj.label or DEFAULT_LABEL), str(prompt or ""),
                                       masks, provenance))
    out.state = _final_state(state, out, hw)
    return out


def _decoded(rle: CocoRle | None, hw: tuple[int, int]) -> np.ndarray:
    return np.zeros(hw, bool) if rle is None else decode_rle(rle)


def _final_state(state: TaskState, final: FinalTask, hw: tuple[int, int]) -> TaskState:
    """A copy of ``state`` whose tracks hold the final masks (for the Label Studio writer)."""
    from dataclasses import replace

    from vrshq.masks import Track

    kept = {o.obj_id: o for o in final.objects}
    objects = []
    for obj in state.objects:
        fo = kept.get(obj.obj_id)
        if fo is None:
            continue
        track = Track(obj.obj_id, hw[0], hw[1])
        for f, rle in enumerate(fo.masks):
            score = obj.track.score(f) if obj.track.has(f) else None
            if rle is not None:
                track.set_rle(f, rle, score=score)
            elif obj.track.has(f):
                track.set(f, np.zeros(hw, bool), score=score)
        # The keyframe page shows the final keyframe mask (a submitted correction the backend
        # has not re-propagated yet included).
        objects.append(replace(obj, track=track, keyframe_mask=fo.mask(obj.keyframe, hw)
                               if 0 <= obj.keyframe < len(fo.masks) else obj.keyframe_mask,
                               corrections=[]))
    return replace(state, objects=objects)


def project_tasks(states: TaskStateStore, project: str, include_unreviewed: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Iterator[FinalTask]:
    """The final masks of every task of ``project`` with a submitted annotation, in task order.

    ``include_unreviewed`` adds the tasks that have predictions only. A submission is what the
    task state recorded when the webhook or ``vrshq corrections sync`` handled the annotation.
    A task left without objects (every one deleted) has nothing to export and is left out.
    """
    tasks = states.tasks(project)
    for done, task in enumerate(tasks, 1):
        try:
            state = states.load(project, task)
        except (ValueError, KeyError, TypeError, VrshqError) as exc:
            raise VrshqError(f"task {task}: its state cannot be read ({exc})") from None
        if state is not None and (state.submissions or include_unreviewed):
            final = final_task(state)
            if final.objects:
                yield final
        if progress is not None:
            progress(done, len(tasks))


def reviewed_objects(states: TaskStateStore) -> Iterator[tuple[FinalTask, FinalObject]]:
    """Every object, of every project, with a frame an annotator reviewed (unreadable states skipped)."""
    projects = sorted(p.name for p in states.root.iterdir() if p.is_dir()) if states.root.is_dir() else []
    for project in projects:
        try:
            tasks = states.tasks(project)
        except ValueError:  # not a project folder of ours
            continue
        for task in tasks:
            try:
                state = states.load(project, task)
            except (ValueError, KeyError, TypeError, VrshqError):
                continue
            if state is None or not state.submissions:
                continue
            final = final_task(state)
            for obj in final.objects:
                if REVIEWED in obj.provenance:
                    yield final, obj


def categories(tasks: list[FinalTask]) -> dict[str, int]:
    """Category ids 1..N of the objects' labels, in sorted label order (stable across exports)."""
    labels = sorted({o.label for t in tasks for o in t.objects})
    return {label: i for i, label in enumerate(labels, 1)}


def counts(tasks: list[FinalTask]) -> dict[str, Any]:
    """Tasks, objects and (object, frame) pairs by provenance."""
    out: dict[str, Any] = {"tasks": len(tasks), "objects": sum(len(t.objects) for t in tasks)}
    for kind in (CORRECTED, REVIEWED, PROPAGATED):
        out[kind] = sum(o.count(kind) for t in tasks for o in t.objects)
    return out


__all__ = ["DEFAULT_LABEL", "FinalObject", "FinalTask", "categories", "counts", "final_task",
           "project_tasks", "reviewed_objects"]
