"""Label Studio JSON: the tasks as Label Studio imports them, the final masks as their annotations.

``tasks.json`` is a list of ``{"id", "data": {"video", "fps"}, "annotations": [{"result"}]}``
whose results are what the backend writes for a task (per object a ``VideoRectangle`` track over
every frame and, when the config has masks, the brush mask of its keyframe page), from the
final masks. Each result's ``meta.provenance`` is the object's provenance per 0-based frame.
Label Studio shows no masks on video, so the per-frame masks themselves are in the other formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vrshq.backend.export.final import FinalTask
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.results import object_region_id, state_results

FILENAME = "tasks.json"
MASK_SUFFIX = "-mask"


def labelstudio_tasks(tasks: list[FinalTask], info: LabelConfigInfo) -> list[dict[str, Any]]:
    """The Label Studio import document of ``tasks``."""
    out = []
    for task in tasks:
        state = task.state
        assert state is not None  # final_task always sets it
        provenance = {object_region_id(state, o): fo.provenance
                      for o, fo in zip(state.objects, task.objects)}
        results = state_results(state, info)
        for r in results:
            rid = str(r.get("id", ""))
            key = rid[:-len(MASK_SUFFIX)] if rid.endswith(MASK_SUFFIX) else rid
            if key in provenance:
                r["meta"] = {**(r.get("meta") or {}), "provenance": list(provenance[key])}
        out.append({"id": int(task.task) if task.task.isdigit() else task.task,
                    "data": {"video": task.video, "fps": task.fps},
                    "annotations": [{"result": results, "ground_truth": task.submitted}]})
    return out


def write(tasks: list[FinalTask], root: Path, info: LabelConfigInfo) -> None:
    """Write ``root/tasks.json``."""
    (root / FILENAME).write_text(json.dumps(labelstudio_tasks(tasks, info)) + "\n")


__all__ = ["FILENAME", "labelstudio_tasks", "write"]
