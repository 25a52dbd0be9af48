"""YouTube-VIS JSON: one video per task, one annotation per object with a mask (or null) per frame.

The layout of the YouTube-VIS 2019/2021 ``instances.json`` (read by the ``ytvos`` API of the
VIS toolkits and by Detectron2/MMDetection loaders)::

    {"info", "licenses",
     "videos": [{"id", "width", "height", "length", "file_names": ["<video>/00000.jpg", ...]}],
     "categories": [{"id", "name", "supercategory"}],
     "annotations": [{"id", "video_id", "category_id", "iscrowd": 0, "width", "height", "length",
                      "segmentations": [COCO RLE | null per frame], "areas": [int | null],
                      "bboxes": [[x, y, w, h] | null], "provenance": [per frame]}]}

``provenance`` (``corrected``/``reviewed``/``propagated`` per frame) is our extra key; the
readers ignore keys they do not know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vrshq.backend.export.final import FinalTask
from vrshq.masks import rle_area, rle_to_bbox

FILENAME = "instances.json"


def frame_names(task: FinalTask) -> list[str]:
    """The frame image paths of a task's video, relative to ``JPEGImages/``."""
    return [f"{task.name}/{f:05d}.jpg" for f in range(task.frames_count)]


def xywh(rle: dict[str, Any]) -> list[int] | None:
    """The COCO box ``[x, y, width, height]`` of a mask, None when empty."""
    box = rle_to_bbox(rle)
    return None if box is None else [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def youtube_vis(tasks: list[FinalTask], categories: dict[str, int], info: dict[str, Any]) -> dict[str, Any]:
    """The YouTube-VIS document of ``tasks`` (video ids 1.. in task order)."""
    videos, annotations = [], []
    for vid, task in enumerate(tasks, 1):
        videos.append({"id": vid, "width": task.width, "height": task.height,
                       "length": task.frames_count, "file_names": frame_names(task),
                       "project": task.project, "task": task.task, "video": task.video})
        for obj in task.objects:
            annotations.append({
                "id": len(annotations) + 1, "video_id": vid, "category_id": categories[obj.label],
                "iscrowd": 0, "width": task.width, "height": task.height, "length": 1,
                "segmentations": list(obj.masks),
                "areas": [None if m is None else rle_area(m) for m in obj.masks],
                "bboxes": [None if m is None else xywh(m) for m in obj.masks],
                "obj_id": obj.obj_id, "prompt": obj.prompt, "provenance": list(obj.provenance)})
    return {"info": info, "licenses": [],
            "videos": videos, "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": "object"}
                           for name, i in sorted(categories.items(), key=lambda kv: kv[1])]}


def write(tasks: list[FinalTask], root: Path, categories: dict[str, int], info: dict[str, Any]) -> None:
    """Write ``root/instances.json``."""
    (root / FILENAME).write_text(json.dumps(youtube_vis(tasks, categories, info)) + "\n")


__all__ = ["FILENAME", "frame_names", "write", "xywh", "youtube_vis"]
