"""What the training-set export reads: the corrections log grouped by task and object (the newest
mask per frame wins), the objects annotators reviewed without correcting, and the seeded split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from vrshq.backend.corrections.store import CorrectionsLog
from vrshq.backend.export.final import reviewed_objects
from vrshq.backend.tasks.state import TaskStateStore


@dataclass
class LoggedObject:
    """One object of one task, as the log and the task state describe it."""

    source_id: Any  # the obj_id of the log (an int for backend objects)
    prompt: str = ""
    label: str = ""
    masks: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # frame -> (id, rle)
    correction_ids: list[int] = field(default_factory=list)

    def expression(self) -> str:
        """The object's expression for the training set: its prompt, else its label."""
        return self.prompt.strip() or self.label.strip() or f"object {self.source_id}"


@dataclass
class LoggedTask:
    """One task of the log: its video paths and its objects."""

    project: Any
    task: Any
    video_paths: list[str] = field(default_factory=list)  # newest last
    objects: dict[str, LoggedObject] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The task's video name in the export."""
        return f"p{self.project}_t{self.task}"


def collect_tasks(log: CorrectionsLog) -> tuple[dict[str, LoggedTask], int]:
    """Group the log by task and object; the newest mask correction per frame wins (id order)."""
    tasks: dict[str, LoggedTask] = {}
    n = 0
    for c in log.iter():
        n += 1
        t = tasks.setdefault(f"p{c.project}_t{c.task}", LoggedTask(c.project, c.task))
        if not t.video_paths or t.video_paths[-1] != c.video_path:
            t.video_paths.append(c.video_path)
        obj = t.objects.setdefault(str(c.obj_id), LoggedObject(c.obj_id))
        obj.prompt = c.prompt or obj.prompt
        obj.label = c.label or obj.label
        if c.corrected_mask is not None:
            obj.masks[c.frame] = (c.id, c.corrected_mask)  # later ids overwrite earlier ones
            obj.correction_ids.append(c.id)
    return tasks, n


def add_reviewed(tasks: dict[str, LoggedTask], states: TaskStateStore) -> None:
    """Add the objects annotators reviewed but never corrected: their reviewed frames are ground truth too."""
    for final, obj in reviewed_objects(states):
        project, task = (int(x) if x.isdigit() else x for x in (final.project, final.task))
        t = tasks.setdefault(f"p{project}_t{task}", LoggedTask(project, task))
        if not t.video_paths:
            t.video_paths.append(final.video)
        o = t.objects.setdefault(str(obj.obj_id), LoggedObject(obj.obj_id))
        o.prompt, o.label = o.prompt or obj.prompt, o.label or obj.label


def split_videos(names: list[str], holdout: float, seed: int) -> dict[str, str]:
    """``{video: "train" | "valid"}``: held out when its seeded hash fraction is below ``holdout``."""
    score = {v: int.from_bytes(hashlib.sha256(f"{seed}:{v}".encode()).digest(), "big") / 2**256
             for v in names}
    split = {v: "valid" if score[v] < holdout else "train" for v in names}
    if holdout > 0 and len(names) >= 2:
        by_score = sorted(names, key=lambda v: (score[v], v))
        if "valid" not in split.values():
            split[by_score[0]] = "valid"
        elif "train" not in split.values():
            split[by_score[-1]] = "train"
    return split


__all__ = ["LoggedObject", "LoggedTask", "add_reviewed", "collect_tasks", "split_videos"]
