"""Which folder holds each video's label maps, for ``--pred`` and ``--gt``.

A *frames folder* holds one video's label-map PNGs, named by frame (``00000.png ...``). A
*track output* is what ``vrshq track`` and ``vrshq segment`` write: ``OUT/masks/`` (a frames
folder) next to ``OUT/track.json``.

* ``--gt``: a DAVIS folder, one frames folder per video (``GT/<video>/00000.png``), or one
  video's frames folder itself (``GT/00000.png``; the video is named after the folder).
* ``--pred``: a folder with one entry per video, each a frames folder or a track output
  (``PRED/<video>/00000.png`` or ``PRED/<video>/masks/00000.png``); or one video: a track
  output (``OUT/``) or a frames folder.

Videos are matched by name. When one side is a single video, it is matched with the video of
the same name on the other side or, when the other side holds one video, with that one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vrshq.errors import EvaluationError

TRACK_FILE = "track.json"
MASKS_DIR = "masks"


@dataclass(frozen=True)
class VideoPair:
    """One video to score: its name and the frames folders of its prediction and ground truth."""

    name: str
    pred: Path
    gt: Path


def pair_videos(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[VideoPair]:
    """The videos to score, by ground-truth video name; EvaluationError when they do not match."""
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    for what, root in (("prediction", pred_root), ("ground-truth", gt_root)):
        if not root.is_dir():
            raise EvaluationError(f"{root}: the {what} folder does not exist")
    pred_one = _single_video(pred_root)
    if _has_pngs(gt_root):  # one video's ground truth
        name = _name(gt_root)
        if pred_one is not None:
            return [VideoPair(name, pred_one, gt_root)]
        return [VideoPair(name, _the_one(pred_root, name, "--pred", gt_root), gt_root)]
    videos = _videos(gt_root)
    if not videos:
        raise EvaluationError(f"{gt_root}: no video sub-folders (DAVIS layout: GT/<video>/00000.png)")
    if pred_one is not None:
        name = _name(pred_root)
        if name not in videos:
            if len(videos) != 1:
                shown = ", ".join(videos[:5]) + (" ..." if len(videos) > 5 else "")
                raise EvaluationError(f"--pred {pred_root} is one video's masks but the ground truth {gt_root} "
                                  f"holds {len(videos)} videos ({shown}), none named {name!r}: name the "
                                  "prediction folder after its video, or give --gt that video's folder")
            name = videos[0]
        return [VideoPair(name, pred_one, gt_root / name)]
    missing = [v for v in videos if not (pred_root / v).is_dir()]
    if missing:
        raise EvaluationError(f"{pred_root}: no predictions for ground-truth video(s) {', '.join(missing)}")
    return [VideoPair(v, _frames_folder(pred_root / v), gt_root / v) for v in videos]


def _the_one(root: Path, name: str, flag: str, other: Path) -> Path:
    """The frames folder of video ``name`` in ``root``, or of its only video."""
    videos = _videos(root)
    if name not in videos:
        if len(videos) != 1:
            raise EvaluationError(f"{flag} {root} holds {len(videos)} videos and none is named {name!r} "
                              f"like the ground truth {other} (one video's frames)")
        name = videos[0]
    return _frames_folder(root / name)


def _single_video(root: Path) -> Path | None:
    """The frames folder when ``root`` is one video (a track output, or PNGs in it), else None."""
    if (root / TRACK_FILE).is_file() and (root / MASKS_DIR).is_dir():
        return root / MASKS_DIR
    if _has_pngs(root):
        return root
    return None


def _frames_folder(video: Path) -> Path:
    """A video entry's frames folder: its ``masks/`` when it is a track output, else itself."""
    if not _has_pngs(video) and (video / MASKS_DIR).is_dir():
        return video / MASKS_DIR
    return video


def _videos(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_pngs(folder: Path) -> bool:
    return any(p.suffix.lower() == ".png" and p.is_file() for p in folder.iterdir())


def _name(folder: Path) -> str:
    return folder.resolve().name  # "." or "out/" name the folder itself
