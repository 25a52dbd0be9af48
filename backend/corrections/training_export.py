"""Export the corrections log as a training/evaluation set the official VRS-HQ loaders read.

``fmt="revos"`` writes the ReVOS/MeViS layout (brief §5.2, read by the official
``load_mevis_json``: ``<root>/JPEGImages/<video>/<frame>.jpg``, ``meta_expressions.json`` and
``<root>/mask_dict.json``)::

    OUT/manifest.json
    OUT/train/JPEGImages/p<project>_t<task>/00000.jpg ...
    OUT/train/meta_expressions.json   {"videos": {video: {"expressions": {exp_id: {"exp", "obj_id": [..],
                                                  "anno_id": [..]}}, "frames": ["00000", ...]}}}
    OUT/train/mask_dict.json          {anno_id: [COCO RLE or null, one per entry of "frames"]}
    OUT/valid/...                     (the same, for the held-out videos; only when there are some)

``fmt="davis"`` writes ``<split>/JPEGImages/<video>/%05d.jpg`` and ``<split>/Annotations/<video>/%05d.png``
(palette PNGs, pixel value = object id) for evaluation tools, with the same split.

One video per (project, task); one expression per logged object (its prompt, else its label),
and per object an annotator reviewed without correcting (from the task states). On each
frame the latest logged corrected mask of an object wins (box-only corrections carry no mask and
are skipped; a deleted object is an empty mask); other frames take the backend's latest track
from the task state (``state_root`` = MODEL_DIR) when there is one, else no mask (``null``).
The manifest records, per object, which frames are annotator-corrected, which reviewed (shown to
an annotator who submitted them unchanged: the task state's record) and which propagated; each
split's ``verified_frames.json`` lists the corrected and reviewed ones, the only ground truth
``vrshq evaluate --model --data`` and the Train button score (:mod:`vrshq.evaluation.verified`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from vrshq.backend.corrections.record import utc_now
from vrshq.backend.corrections.store import CorrectionsLog, public_url
from vrshq.backend.corrections.swap import check_out, staged_export
from vrshq.backend.corrections.training_tasks import (
    LoggedObject,
    LoggedTask,
    add_reviewed,
    collect_tasks,
    split_videos,
)
from vrshq.backend.export.final import final_task
from vrshq.backend.labelstudio.media import MediaConfig, resolve_media
from vrshq.backend.tasks.provenance import REVIEWED
from vrshq.backend.tasks.state import TaskState, TaskStateStore
from vrshq.errors import VrshqError
from vrshq.evaluation.verified import FILENAME as VERIFIED_FILENAME
from vrshq.evaluation.verified import FORMAT as VERIFIED_FORMAT
from vrshq.masks import decode_rle, labels_from_masks, rle_size, write_palette_png
from vrshq.video.reader import open_video

FORMATS = ("revos", "davis")
FRAME_CHOICES = ("all", "corrected")
SPLITS = ("train", "valid")
MANIFEST_FILENAME = "manifest.json"
META_FILENAME = "meta_expressions.json"
MASKS_FILENAME = "mask_dict.json"
JPEG_QUALITY = 95
MANIFEST_FORMAT = "vrshq-training-set"

# progress(done, total): videos done of the videos to export
Progress = Callable[[int, int], None]


def export_training_set(
    log: CorrectionsLog,
    out: str | os.PathLike,
    media: MediaConfig,
    fmt: Literal["revos", "davis"] = "revos",
    holdout: float = 0.0,
    seed: int = 0,
    state_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    frames: Literal["all", "corrected"] = "all",
) -> dict[str, Any]:
    """Write the training set to ``out`` and return its manifest (also ``out/manifest.json``).

    ``holdout`` (0 <= h < 1) is the fraction of videos held out into ``valid/``; a video is held
    out when ``sha256(f"{seed}:{video}")`` (as a fraction of 2**256) is below ``holdout``, so a
    video keeps its split as the log grows. When that leaves one side empty while two or more
    videos were exported, the video nearest the threshold moves over. ``frames="corrected"``
    exports only the frames where some object of the video has an annotator-corrected mask
    (by default every frame is exported). The export is
    built in a temporary folder next to ``out`` and renamed into place; an existing ``out`` must
    be empty or a previous export (it is replaced). Videos that cannot be resolved or decoded are
    skipped and listed under ``skipped``.
    """
    if fmt not in FORMATS:
        raise VrshqError(f"unknown training-set format {fmt!r} (choose from {', '.join(FORMATS)})")
    if frames not in FRAME_CHOICES:
        raise VrshqError(f"unknown frames choice {frames!r} (choose from {', '.join(FRAME_CHOICES)})")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0.0 <= holdout < 1.0:
        raise VrshqError(f"holdout must be a fraction in [0, 1), got {holdout!r}")
    out = Path(out)
    check_out(out, MANIFEST_FILENAME, MANIFEST_FORMAT, "training-set export")

    tasks, n_log = collect_tasks(log)
    states = TaskStateStore(state_root) if state_root is not None else None
    if states is not None:
        add_reviewed(tasks, states)
    if not tasks:
        raise VrshqError("no corrections to export (and no annotator-reviewed objects)")

    with staged_export(out, MANIFEST_FILENAME) as (tmp, manifest):
        manifest.update(_export(tasks, tmp, media, fmt, frames, states, progress, holdout, seed))
        if not manifest["counts"]["videos"]:  # an empty set would replace a good one at ``out``
            raise NothingExportedError(manifest["skipped"])
        split = {v: entry["split"] for v, entry in manifest["videos"].items()}
        manifest.update({
            "format": MANIFEST_FORMAT, "version": 1, "layout": fmt, "created_at": utc_now(),
            "source": public_url(log.url), "corrections": n_log, "frames": frames,
            "split": {"holdout": float(holdout), "seed": int(seed),
                      "method": "sha256(f'{seed}:{video}') / 2**256 < holdout",
                      **{s: sorted(v for v in split if split[v] == s) for s in SPLITS}},
        })
    return manifest


# --- writing ------------------------------------------------------------------------------------


def _export(tasks: dict[str, LoggedTask], root: Path, media: MediaConfig, fmt: str, frames_choice: str,
            states: TaskStateStore | None, progress: Progress | None, holdout: float,
            seed: int) -> dict[str, Any]:
    """Export every video into ``root/.staging``, then split the exported ones into train/valid."""
    stage = root / ".staging"
    metas: dict[str, dict[str, Any]] = {}
    mask_dicts: dict[str, dict[str, Any]] = {}
    videos: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    warnings: list[str] = []
    counts = {"videos": 0, "expressions": 0, "frames": 0, "corrected_masks": 0, "reviewed_masks": 0,
              "propagated_masks": 0, "verified_masks": 0}
    next_anno = 0
    names = sorted(tasks)
    if progress is not None:
        progress(0, len(names))
    for done, name in enumerate(names, 1):
        t = tasks[name]
        try:
            entry, meta, masks = _export_video(t, stage, media, fmt, frames_choice, states,
                                               next_anno, warnings)
        except _Skip as exc:
            skipped.append({"video": name, "project": t.project, "task": t.task,
                            "video_path": t.video_paths[-1], "reason": str(exc)})
        else:
            videos[name] = entry
            metas[name] = meta
            mask_dicts[name] = masks
            next_anno += len(entry["objects"])
            counts["videos"] += 1
            counts["expressions"] += len(entry["objects"])
            counts["frames"] += len(entry["frames"])
            for o in entry["objects"]:
                counts["corrected_masks"] += len(o["corrected_frames"])
                counts["reviewed_masks"] += len(o["reviewed_frames"])
                counts["propagated_masks"] += len(o["propagated_frames"])
                counts["verified_masks"] += len(o["corrected_frames"]) + len(o["reviewed_frames"])
        if progress is not None:
            progress(done, len(names))
    split = split_videos(sorted(videos), holdout, seed)
    for name, entry in videos.items():
        entry["split"] = split[name]
        for kind in ("JPEGImages", "Annotations"):
            if (stage / kind / name).is_dir():
                (root / split[name] / kind).mkdir(parents=True, exist_ok=True)
                os.replace(stage / kind / name, root / split[name] / kind / name)
    shutil.rmtree(stage, ignore_errors=True)
    for s in SPLITS:
        names_s = [v for v in sorted(videos) if split[v] == s]
        if names_s:  # the ground truth evaluation may use (vrshq.evaluation.verified)
            (root / s).mkdir(parents=True, exist_ok=True)
            (root / s / VERIFIED_FILENAME).write_text(json.dumps(
                {"format": VERIFIED_FORMAT, "videos": {v: _verified(videos[v]) for v in names_s}}) + "\n")
    if fmt == "revos":
        for s in SPLITS:
            names_s = [v for v in sorted(videos) if split[v] == s]
            if names_s:
                meta = {"videos": {v: metas[v] for v in names_s}}
                masks = {k: rle for v in names_s for k, rle in mask_dicts[v].items()}
                (root / s / META_FILENAME).write_text(json.dumps(meta) + "\n")
                (root / s / MASKS_FILENAME).write_text(json.dumps(masks) + "\n")
    counts.update({s: sum(1 for v in videos.values() if v["split"] == s) for s in SPLITS})
    return {"counts": counts, "videos": videos, "skipped": skipped, "warnings": warnings}


def _verified(entry: dict[str, Any]) -> dict[str, list[int]]:
    """Per object, the positions (in the video's exported frames) of its annotator-verified masks."""
    position = {f: k for k, f in enumerate(entry["frames"])}
    return {str(o["obj_id"]): sorted(position[f] for f in {*o["corrected_frames"], *o["reviewed_frames"]})
            for o in entry["objects"]}


class NothingExportedError(VrshqError):
    """Every video of the log was skipped (``skipped``: their names and reasons)."""

    def __init__(self, skipped: list[dict[str, Any]]) -> None:
        self.skipped = skipped
        first = skipped[0] if skipped else {"video": "-", "reason": "-"}
        super().__init__(f"nothing exported: all {len(skipped)} video(s) skipped (first "
                         f"{first['video']}: {str(first['reason']).splitlines()[0]})")


class _Skip(Exception):
    """This video cannot be exported (the reason is listed in the manifest)."""


def _export_video(t: LoggedTask, root: Path, media: MediaConfig, fmt: str, frames_choice: str,
                  states: TaskStateStore | None, first_anno: int,
                  warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    name = t.name
    video_path = t.video_paths[-1]
    if len(t.video_paths) > 1:
        warnings.append(f"{name}: the log names {len(set(t.video_paths))} videos; using the newest, {video_path}")
    try:
        local = resolve_media(video_path, media, task_id=t.task if isinstance(t.task, int) else None)
        reader = open_video(local)
    except (VrshqError, OSError, RuntimeError, ValueError) as exc:
        raise _Skip(f"cannot open the video: {exc}") from None
    with reader:
        n, h, w = reader.num_frames, reader.height, reader.width
        state = _load_state(t, states, n, video_path, warnings)
        tracks = {str(o.obj_id): o.track for o in state.objects} if state is not None else {}
        # Frames an annotator was shown and submitted unchanged (the state's record of submissions).
        reviewed = {str(o.obj_id): {f for f, p in enumerate(o.provenance) if p == REVIEWED}
                    for o in final_task(state).objects} if state is not None else {}

        # per object: frame -> (rle, "corrected" | "propagated")
        objects: list[tuple[LoggedObject, dict[int, tuple[dict[str, Any], str]]]] = []
        for key in sorted(t.objects, key=_id_order):
            obj = t.objects[key]
            known: dict[int, tuple[dict[str, Any], str]] = {}
            track = tracks.get(key)
            if track is not None:
                if (track.height, track.width) != (h, w):
                    warnings.append(f"{name}: object {key}: the state's track is {track.width}x{track.height}, "
                                    f"the video {w}x{h}; not used")
                else:
                    known.update({f: (track.rle(f), "reviewed" if f in reviewed.get(key, ()) else "propagated")
                                  for f in track.frames() if f < n})
            for f, (cid, rle) in sorted(obj.masks.items()):
                if f >= n:
                    warnings.append(f"{name}: correction {cid} is on frame {f}, the video has {n} frames; skipped")
                elif rle_size(rle) != (h, w):
                    warnings.append(f"{name}: correction {cid} is {rle_size(rle)[1]}x{rle_size(rle)[0]}, "
                                    f"the video {w}x{h}; skipped")
                else:
                    known[f] = (rle, "corrected")
            objects.append((obj, known))

        if frames_choice == "corrected":
            frame_ids = sorted({f for _, known in objects for f, (_, kind) in known.items() if kind == "corrected"})
        else:
            frame_ids = list(range(n))
        kept = []
        for obj, known in objects:
            if any(f in known for f in frame_ids):
                kept.append((obj, known))
            else:
                warnings.append(f"{name}: object {obj.source_id} has no mask on any exported frame; left out")
        if not kept or not frame_ids:
            raise _Skip("no object has a mask on any exported frame (box-only corrections and no task state)")

        obj_ids = _export_ids([obj.source_id for obj, _ in kept])
        names = [f"{f:05d}" for f in frame_ids]
        jpeg_dir = root / "JPEGImages" / name
        jpeg_dir.mkdir(parents=True, exist_ok=True)
        try:
            for k, f in enumerate(frame_ids):
                Image.fromarray(reader.frame(f)).save(jpeg_dir / f"{names[k]}.jpg", quality=JPEG_QUALITY)
        except (VrshqError, OSError, RuntimeError, ValueError) as exc:
            shutil.rmtree(jpeg_dir, ignore_errors=True)
            raise _Skip(f"cannot decode the video: {exc}") from None

    entry_objects = []
    expressions: dict[str, Any] = {}
    mask_dict: dict[str, Any] = {}
    for k, ((obj, known), oid) in enumerate(zip(kept, obj_ids)):
        anno = first_anno + k
        expressions[str(k)] = {"exp": obj.expression(), "obj_id": [oid], "anno_id": [anno]}
        mask_dict[str(anno)] = [known[f][0] if f in known else None for f in frame_ids]
        entry_objects.append({
            "obj_id": oid, "source_obj_id": obj.source_id, "exp_id": str(k), "anno_id": anno,
            "exp": obj.expression(), "label": obj.label, "correction_ids": obj.correction_ids,
            "corrected_frames": [f for f in frame_ids if f in known and known[f][1] == "corrected"],
            "reviewed_frames": [f for f in frame_ids if f in known and known[f][1] == "reviewed"],
            "propagated_frames": [f for f in frame_ids if f in known and known[f][1] == "propagated"],
        })
    if fmt == "davis":
        try:
            _write_davis(root / "Annotations" / name, kept, obj_ids, frame_ids, (h, w))
        except VrshqError as exc:
            shutil.rmtree(root / "JPEGImages" / name, ignore_errors=True)
            shutil.rmtree(root / "Annotations" / name, ignore_errors=True)
            raise _Skip(f"cannot write the palette PNGs: {exc}") from None
    entry = {
        "project": t.project, "task": t.task, "video_path": video_path, "num_frames": n,
        "width": w, "height": h, "frames": frame_ids, "state": state is not None,
        "corrected_frames": sorted({f for o in entry_objects for f in o["corrected_frames"]}),
        "objects": entry_objects,
    }
    return entry, {"expressions": expressions, "frames": names}, mask_dict


def _write_davis(folder: Path, kept, obj_ids: list[int], frame_ids: list[int], hw: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in frame_ids:
        masks = {oid: decode_rle(known[f][0]) for (_, known), oid in zip(kept, obj_ids) if f in known}
        write_palette_png(folder / f"{f:05d}.png", labels_from_masks(masks, hw))


def _load_state(t: LoggedTask, states: TaskStateStore | None, n: int, video_path: str,
                warnings: list[str]) -> TaskState | None:
    if states is None:
        return None
    try:
        state = states.load(t.project, t.task)
    except (ValueError, KeyError, TypeError, OSError, VrshqError) as exc:
        warnings.append(f"{t.name}: the task state cannot be read ({exc}); propagated masks left out")
        return None
    if state is None:
        return None
    if state.video != video_path:
        warnings.append(f"{t.name}: the task state is for {state.video}, the log for {video_path}; not used")
        return None
    if state.frames_count != n:
        warnings.append(f"{t.name}: the task state has {state.frames_count} frames, the video {n}; not used")
        return None
    return state


def _id_order(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _export_ids(source_ids: list[Any]) -> list[int]:
    """Positive int ids for the objects: their own when they are ints >= 1, else the smallest free ones."""
    own = {i for i in source_ids if isinstance(i, int) and i >= 1}
    out, free = [], 1
    for i in source_ids:
        if isinstance(i, int) and i >= 1:
            out.append(i)
            continue
        while free in own:
            free += 1
        own.add(free)
        out.append(free)
    return out


__all__ = ["FORMATS", "FRAME_CHOICES", "NothingExportedError", "export_training_set", "split_videos"]
