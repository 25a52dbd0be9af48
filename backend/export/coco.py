"""COCO-style per-frame instances: one image per frame, one annotation per object and frame with a mask.

``annotations.json`` is a COCO instances file (``pycocotools.coco.COCO`` reads it): images
``{"id", "file_name": "<video>/00000.jpg", "width", "height", "video_id", "frame_id"}``,
annotations ``{"id", "image_id", "category_id", "segmentation": COCO RLE, "area", "bbox",
"iscrowd": 0, "track_id": obj_id, "attributes": {"provenance"}}`` (the same ``video_id``/
``frame_id``/``track_id`` keys as TAO and BDD100K's COCO files). A frame without an object's
mask has no annotation of that object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vrshq.backend.export.final import FinalTask
from vrshq.backend.export.youtube_vis import frame_names, xywh
from vrshq.masks import rle_area

FILENAME = "annotations.json"


def coco(tasks: list[FinalTask], categories: dict[str, int], info: dict[str, Any]) -> dict[str, Any]:
    """The COCO document of ``tasks`` (image ids 1.. in task, then frame order)."""
    images, annotations, videos = [], [], []
    for vid, task in enumerate(tasks, 1):
        videos.append({"id": vid, "name": task.name, "project": task.project, "task": task.task,
                       "video": task.video, "length": task.frames_count})
        first = len(images) + 1
        for f, name in enumerate(frame_names(task)):
            images.append({"id": first + f, "file_name": name, "width": task.width,
                           "height": task.height, "video_id": vid, "frame_id": f})
        for obj in task.objects:
            for f, rle in enumerate(obj.masks):
                if rle is None:
                    continue
                annotations.append({
                    "id": len(annotations) + 1, "image_id": first + f,
                    "category_id": categories[obj.label], "segmentation": rle,
                    "area": rle_area(rle), "bbox": xywh(rle), "iscrowd": 0, "track_id": obj.obj_id,
                    "attributes": {"provenance": obj.provenance[f]}})
    return {"info": info, "licenses": [], "videos": videos, "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": "object"}
                           for name, i in sorted(categories.items(), key=lambda kv: kv[1])]}


def write(tasks: list[FinalTask], root: Path, categories: dict[str, int], info: dict[str, Any]) -> None:
    """Write ``root/annotations.json``."""
    (root / FILENAME).write_text(json.dumps(coco(tasks, categories, info)) + "\n")


__all__ = ["FILENAME", "coco", "write"]
