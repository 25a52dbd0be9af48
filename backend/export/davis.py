"""DAVIS: one palette PNG per frame and video (pixel value = object id), provenance beside them.

``Annotations/<video>/00000.png`` ... as the DAVIS-2017 toolkit reads them (where two objects
overlap the higher id wins, as in DAVIS), ``provenance.json`` ``{video: {obj_id: [per frame]}}``
and ``categories.json`` ``{video: {obj_id: category name}}``: DAVIS itself has no classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vrshq.backend.export.final import FinalTask
from vrshq.errors import VrshqError
from vrshq.masks import labels_from_masks, write_palette_png

PROVENANCE_FILENAME = "provenance.json"
CATEGORIES_FILENAME = "categories.json"


def write(tasks: list[FinalTask], root: Path, categories: dict[str, int], info: dict[str, Any]) -> None:
    """Write the palette PNGs, ``provenance.json`` and ``categories.json`` under ``root``."""
    provenance: dict[str, Any] = {}
    names: dict[str, Any] = {}
    for task in tasks:
        big = [o.obj_id for o in task.objects if not 1 <= o.obj_id <= 255]
        if big:
            raise VrshqError(f"task {task.task}: object id(s) {big} do not fit a palette PNG (1..255)")
        folder = root / "Annotations" / task.name
        folder.mkdir(parents=True, exist_ok=True)
        hw = (task.height, task.width)
        for f in range(task.frames_count):
            masks = {o.obj_id: o.mask(f, hw) for o in task.objects if o.masks[f] is not None}
            write_palette_png(folder / f"{f:05d}.png", labels_from_masks(masks, hw))
        provenance[task.name] = {str(o.obj_id): list(o.provenance) for o in task.objects}
        names[task.name] = {str(o.obj_id): o.label for o in task.objects}
    (root / PROVENANCE_FILENAME).write_text(json.dumps(provenance) + "\n")
    (root / CATEGORIES_FILENAME).write_text(json.dumps(names) + "\n")


__all__ = ["CATEGORIES_FILENAME", "PROVENANCE_FILENAME", "write"]
