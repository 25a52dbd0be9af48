"""What the backend last predicted for each task, kept on disk so corrections can re-propagate it.

A correction arrives as a Label Studio annotation (webhook) or an interactive request; to
re-track an object the backend needs the object's keyframe, the mask the track was conditioned
on there, the corrections already applied, and the full predicted masks (for the corrections
log). One JSON file per task, ``<data_dir>/tasks/<project>/<task>.json``, written atomically
(temp file + rename), so a crash never leaves half a state; each task is locked while it is
read-modified-written, so two requests on one task never interleave: a thread lock within the
process and a file lock (``flock``) across the processes sharing the folder (gunicorn workers,
queue workers).

What annotators submitted (:mod:`vrshq.backend.tasks.provenance`) lives beside the state in
``<task>.reviews.json`` under a lock of its own, held only to record one annotation: a webhook
must not wait for a re-propagation that holds the task's lock for minutes, and a job that saves
the state it loaded before never overwrites a submission recorded meanwhile. Loading a state
takes that record over the (older) copy in the state file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vrshq.backend.corrections.export import write_atomic
from vrshq.backend.tasks.provenance import Review
from vrshq.plugins.base import Correction, ObjectPrompt, ObjectTrack
from vrshq.errors import MaskFormatError
from vrshq.masks import Track, decode_rle, encode_rle

FORMAT = "vrshq-task-state/1"
REVIEWS_FORMAT = "vrshq-task-reviews/1"
EARLIER_TRACKS = 8  # box tracks kept per object from the backend's earlier predictions
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class MaskPage:
    """An extra mask page of one object beyond its keyframe page (see
    :mod:`vrshq.backend.labelstudio.pages`): the object, the 0-based frame, and why it is shown."""

    obj_id: int
    frame: int
    why: str  # "ranked" (the model's signals), "corrected" or "requested" (asked for by an annotator)

    def to_json(self) -> list[Any]:
        """``[obj_id, frame, why]``."""
        return [self.obj_id, self.frame, self.why]


@dataclass
class TaskState:
    """The backend's last prediction of one task."""

    project: str
    task: str
    plugin: str
    model_version: str
    video: str  # the task's video reference as Label Studio gave it
    fps: float
    frames_count: int
    objects: list[ObjectTrack] = field(default_factory=list)
    keyframe_urls: list[str] = field(default_factory=list)  # item_index order = objects order
    # Extra mask pages, shown after the keyframe pages (page len(objects) + i = pages[i]), and
    # their image URLs. Absent from states written before 0.2: keyframe pages only.
    pages: list[MaskPage] = field(default_factory=list)
    page_urls: list[str] = field(default_factory=list)
    # The on-demand page after the last page (backend.labelstudio.demand_page): the unfilled
    # placeholder's file name and URL, and the last filled one's name (kept for its editor).
    demand_name: str = ""
    demand_url: str = ""
    demand_filled: str = ""
    # "<obj_id>:<frame>" -> the masks (COCO RLE) extra pages showed before a re-propagation
    # replaced them: an annotation still showing one did not edit that page.
    earlier_pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # obj_id -> the box sequences (Label Studio keyframes) the backend predicted before the
    # current track: an annotation still showing one of them did not edit the boxes.
    earlier_tracks: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    # What annotators submitted (see vrshq.backend.tasks.provenance): the annotation ids, and
    # per object and shown frame the newest verdict. Absent from states written before 0.1.
    submissions: list[str] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    # The request's prompts the prediction answered, as [obj_id, text, label] (prompt_signature);
    # None in older states. A concept plugin's objects cannot tell them.
    prompts: list[list[Any]] | None = None

    def object(self, obj_id: int) -> ObjectTrack | None:
        """The object with ``obj_id``, or None."""
        return next((o for o in self.objects if o.obj_id == obj_id), None)

    def replace_objects(self, objects: list[ObjectTrack]) -> None:
        """Make ``objects`` the current ones, remembering the box tracks they replace."""
        from vrshq.masks import track_to_videorectangle

        new = {o.obj_id: o for o in objects}
        for old in self.objects:
            if old.obj_id in new and new[old.obj_id].track == old.track:
                continue
            sequence = track_to_videorectangle(old.track, self.fps, self.frames_count)["value"]["sequence"]
            kept = [s for s in self.earlier_tracks.get(str(old.obj_id), []) if s != sequence]
            self.earlier_tracks[str(old.obj_id)] = (kept + [sequence])[-EARLIER_TRACKS:]
        self.objects = list(objects)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (masks as COCO RLE)."""
        return {
            "format": FORMAT, "project": self.project, "task": self.task, "plugin": self.plugin,
            "model_version": self.model_version, "video": self.video, "fps": self.fps,
            "frames_count": self.frames_count, "keyframe_urls": list(self.keyframe_urls),
            "pages": [p.to_json() for p in self.pages], "page_urls": list(self.page_urls),
            "demand": [self.demand_name, self.demand_url, self.demand_filled],
            "earlier_pages": self.earlier_pages,
            "objects": [_object_json(o) for o in self.objects],
            "earlier_tracks": self.earlier_tracks,
            "submissions": list(self.submissions), "reviews": [r.to_json() for r in self.reviews],
            "prompts": self.prompts,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskState:
        """The inverse of :meth:`to_json`."""
        if doc.get("format") != FORMAT:
            raise MaskFormatError(f"not a task state ({FORMAT}): format {doc.get('format')!r}")
        return cls(
            project=str(doc["project"]), task=str(doc["task"]), plugin=str(doc["plugin"]),
            model_version=str(doc["model_version"]), video=str(doc["video"]), fps=float(doc["fps"]),
            frames_count=int(doc["frames_count"]), keyframe_urls=list(doc.get("keyframe_urls", [])),
            pages=[MaskPage(int(o), int(f), str(w)) for o, f, w in doc.get("pages") or []],
            page_urls=[str(u) for u in doc.get("page_urls") or []],
            **dict(zip(("demand_name", "demand_url", "demand_filled"),
                       [str(v) for v in doc.get("demand") or ["", "", ""]])),
            earlier_pages={str(k): list(v) for k, v in (doc.get("earlier_pages") or {}).items()},
            objects=[_object_from_json(o) for o in doc["objects"]],
            earlier_tracks={str(k): list(v) for k, v in (doc.get("earlier_tracks") or {}).items()},
            submissions=[str(a) for a in doc.get("submissions") or []],
            reviews=[Review.from_json(r) for r in doc.get("reviews") or []],
            prompts=[list(p) for p in doc["prompts"]] if doc.get("prompts") is not None else None,
        )


def prompt_signature(prompts: list[ObjectPrompt]) -> list[list[Any]]:
    """What a request asked for, as a task state records it: [obj_id, text, label] per prompt."""
    return [[int(p.obj_id), p.text, p.label] for p in prompts]


def _object_json(o: ObjectTrack) -> dict[str, Any]:
    return {
        "obj_id": o.obj_id, "label": o.label, "track": o.track.to_json(), "keyframe": o.keyframe,
        "keyframe_mask": encode_rle(np.asarray(o.keyframe_mask, dtype=bool)), "score": o.score,
        "details": o.details,
        "corrections": [correction_json(c) for c in o.corrections],
    }


def correction_json(c: Correction) -> dict[str, Any]:
    """A plugin Correction as JSON: ``mask`` (COCO RLE, as states always had), ``box`` (x0, y0,
    x1, y1 pixels) or ``points`` + ``point_labels`` (clicks)."""
    out: dict[str, Any] = {"obj_id": int(c.obj_id), "frame": int(c.frame)}
    if c.mask is not None:
        out["mask"] = encode_rle(np.asarray(c.mask, dtype=bool))
    if c.box is not None:
        out["box"] = [float(v) for v in c.box]
    if c.points is not None or c.point_labels is not None:
        out["points"] = [[float(x), float(y)] for x, y in c.points or []]
        out["point_labels"] = [int(v) for v in c.point_labels or []]
    return out


def correction_from_json(d: dict[str, Any]) -> Correction:
    """The inverse of :func:`correction_json` (states and job payloads written before boxes and
    clicks hold masks only, and read as before)."""
    return Correction(
        int(d["obj_id"]), int(d["frame"]),
        mask=decode_rle(d["mask"]) if d.get("mask") is not None else None,
        box=tuple(float(v) for v in d["box"]) if d.get("box") is not None else None,  # type: ignore[arg-type]
        points=[(float(x), float(y)) for x, y in d["points"]] if d.get("points") is not None else None,
        point_labels=[int(v) for v in d["point_labels"]] if d.get("point_labels") is not None else None)


def _object_from_json(d: dict[str, Any]) -> ObjectTrack:
    return ObjectTrack(
        obj_id=int(d["obj_id"]), label=d.get("label"), track=Track.from_json(d["track"]),
        keyframe=int(d["keyframe"]), keyframe_mask=decode_rle(d["keyframe_mask"]),
        score=float(d["score"]), details=dict(d.get("details") or {}),
        corrections=[correction_from_json(c) for c in d.get("corrections", [])],
    )


class TaskLock:
    """A re-entrant lock on one task: a thread lock, and a file lock held by the outermost holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> TaskLock:
        self._thread.acquire()
        try:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread.release()


class TaskStateStore:
    """Task states under ``<root>/tasks``, one file per task, with a lock per task."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root) / "tasks"
        self._locks: dict[tuple[str, ...], TaskLock] = {}
        self._guard = threading.Lock()

    def lock(self, project: str | int, task: str | int) -> TaskLock:
        """The lock that serialises work on one task, across threads and processes."""
        path = self.path(project, task).with_suffix(".lock")
        with self._guard:
            return self._locks.setdefault((str(project), str(task)), TaskLock(path))

    def reviews_lock(self, project: str | int, task: str | int) -> TaskLock:
        """The lock of a task's record of submissions, held briefly (see the module docstring)."""
        path = self.path(project, task).with_suffix(".reviews.lock")
        with self._guard:
            return self._locks.setdefault((str(project), str(task), "reviews"), TaskLock(path))

    def path(self, project: str | int, task: str | int) -> Path:
        """The state file of a task (ids checked: they become path parts)."""
        p, t = str(project), str(task)
        for what, value in (("project", p), ("task", t)):
            if not _SAFE_ID.match(value) or value in (".", ".."):
                raise ValueError(f"{what} id {value!r} is not a plain id")
        return self.root / p / f"{t}.json"

    def tasks(self, project: str | int) -> list[int]:
        """The ids of the project's tasks that have a state, in order."""
        folder = self.path(project, 0).parent
        return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())

    def load(self, project: str | int, task: str | int) -> TaskState | None:
        """The task's state, or None when the backend never predicted it."""
        path = self.path(project, task)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        state = TaskState.from_json(doc)
        try:
            reviews = json.loads(path.with_suffix(".reviews.json").read_text())
        except FileNotFoundError:
            return state
        state.submissions = [str(a) for a in reviews.get("submissions") or []]
        state.reviews = [Review.from_json(r) for r in reviews.get("reviews") or []]
        return state

    def save(self, state: TaskState) -> None:
        """Write the state atomically (readers see the old or the new file, never a mix)."""
        path = self.path(state.project, state.task)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, [json.dumps(state.to_json())])

    def save_reviews(self, state: TaskState) -> None:
        """Write the state's record of submissions atomically (hold :meth:`reviews_lock`)."""
        path = self.path(state.project, state.task).with_suffix(".reviews.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, [json.dumps({"format": REVIEWS_FORMAT, "submissions": list(state.submissions),
                                        "reviews": [r.to_json() for r in state.reviews]})])

__all__ = ["MaskPage", "TaskLock", "TaskState", "TaskStateStore", "correction_from_json",
           "correction_json"]
