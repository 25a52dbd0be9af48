"""``vrshq export``: a project's labeled dataset in one of four formats, swapped into place whole.

The export is built in a temporary folder beside ``out`` and renamed over it when complete, so
``out`` holds the previous export or the new one, never half of one; a non-empty ``out`` that is
not a previous export is refused. ``export.json`` says what was exported::

    {"format": "vrshq-dataset-export", "layout", "project", "created_at", "counts": {"tasks",
     "objects", "corrected", "reviewed", "propagated"}, "categories", "tasks": [...]}

It works offline from the data folder (the task states); only the frame images need the videos
(``images=False`` leaves them out) and only ``labelstudio`` needs the project's label config.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from vrshq.backend.corrections.record import utc_now
from vrshq.backend.corrections.swap import check_out, staged_export
from vrshq.backend.export import coco, davis, labelstudio, youtube_vis
from vrshq.backend.export.final import FinalTask, categories, counts, project_tasks
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.media import MediaConfig, resolve_media
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.errors import VrshqError
from vrshq.video.reader import open_video

FORMATS = ("youtube-vis", "coco", "davis", "labelstudio")
MANIFEST_FILENAME = "export.json"
MANIFEST_FORMAT = "vrshq-dataset-export"
JPEG_QUALITY = 95

# progress(stage, done, total): stage "read" (task states) or "write" (videos' frames)
Progress = Callable[[str, int, int], None]


def export_dataset(data_dir: str | os.PathLike, project: str, fmt: str, out: str | os.PathLike,
                   media: MediaConfig | None = None, include_unreviewed: bool = False,
                   images: bool = True, label_config: LabelConfigInfo | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Export ``project``'s final masks from the data folder to ``out``; the manifest."""
    if fmt not in FORMATS:
        raise VrshqError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "labelstudio" and label_config is None:
        raise VrshqError("the labelstudio format needs the project's label config (from the "
                         "backend's /setup in the data folder, or Label Studio's API)")
    out = Path(out)
    check_out(out, MANIFEST_FILENAME, MANIFEST_FORMAT, "dataset export")
    states = TaskStateStore(data_dir)
    if not states.path(project, 0).parent.is_dir():
        raise VrshqError(f"{data_dir}: the backend has no predicted task of project {project} here")
    read = (lambda d, t: progress("read", d, t)) if progress else None
    tasks = list(project_tasks(states, project, include_unreviewed, read))
    if not tasks:
        raise VrshqError(f"project {project}: no task with a submitted annotation"
                         + ("" if include_unreviewed else " (--include-unreviewed adds predicted ones)"))
    cats = categories(tasks)
    info = {"description": f"vrshq export of Label Studio project {project}", "date_created": utc_now()}
    with staged_export(out, MANIFEST_FILENAME) as (tmp, manifest):
        if fmt == "labelstudio":
            try:
                labelstudio.write(tasks, tmp, label_config)  # type: ignore[arg-type]
            except ValueError as exc:  # a label the project's config does not have
                raise VrshqError(f"--format labelstudio: {exc}") from None
        else:
            {"youtube-vis": youtube_vis, "coco": coco, "davis": davis}[fmt].write(tasks, tmp, cats, info)
            if images:
                _write_images(tasks, tmp / "JPEGImages", media or MediaConfig(), progress)
        manifest.update({
            "format": MANIFEST_FORMAT, "version": 1, "layout": fmt, "project": str(project),
            "created_at": info["date_created"], "include_unreviewed": include_unreviewed,
            "images": images and fmt != "labelstudio", "counts": counts(tasks), "categories": cats,
            "tasks": [{"task": t.task, "video": t.name, "source": t.video, "submitted": t.submitted,
                       "frames": t.frames_count, "objects": len(t.objects)} for t in tasks],
        })
    return manifest


def _write_images(tasks: list[FinalTask], root: Path, media: MediaConfig, progress: Progress | None) -> None:
    """Every frame of every task's video as ``root/<video>/00000.jpg`` (0-based, as the masks)."""
    for done, task in enumerate(tasks, 1):
        folder = root / task.name
        folder.mkdir(parents=True, exist_ok=True)
        try:
            local = resolve_media(task.video, media, task_id=int(task.task) if task.task.isdigit() else None)
            with open_video(local) as reader:
                if (len(reader), reader.height, reader.width) != (task.frames_count, task.height, task.width):
                    raise VrshqError(f"the video is {reader.width}x{reader.height}, {len(reader)} "
                                     f"frames; the task's masks {task.width}x{task.height}, "
                                     f"{task.frames_count} frames")
                for f in range(task.frames_count):
                    Image.fromarray(reader.frame(f)).save(folder / f"{f:05d}.jpg", quality=JPEG_QUALITY)
        except (VrshqError, OSError, RuntimeError, ValueError) as exc:
            raise VrshqError(f"task {task.task}: cannot write its frames ({exc}); give the videos' "
                             "folder with --media-root, or export without them (--no-images)") from None
        if progress is not None:
            progress("write", done, len(tasks))


__all__ = ["FORMATS", "MANIFEST_FILENAME", "MANIFEST_FORMAT", "export_dataset"]
