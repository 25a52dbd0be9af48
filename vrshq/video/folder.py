"""Folders of JPEG/PNG frames, read with PIL in integer (or natural) name order."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from vrshq.errors import VideoError
from vrshq.video.base import DEFAULT_FOLDER_FPS, FRAME_EXTENSIONS, VideoReader, check_fps


def _frame_sort_key(names: list[str]) -> list[str]:
    stems = [os.path.splitext(n)[0] for n in names]
    if all(re.fullmatch(r"\d+", s, re.ASCII) for s in stems):
        return sorted(names, key=lambda n: (int(os.path.splitext(n)[0]), n))

    def natural(name: str) -> tuple[list[Any], str]:
        # re.split with a group alternates text/number, so the lists compare type-safely
        parts = re.split(r"(\d+)", name)
        return [int(p) if k % 2 else p.lower() for k, p in enumerate(parts)], name

    return sorted(names, key=natural)


class FrameFolderReader(VideoReader):
    """A folder of JPEG/PNG frames, ordered by the number in their names."""

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FOLDER_FPS) -> None:
        self.path = str(path)
        if not os.path.exists(self.path):
            raise VideoError(self.path, "folder not found")
        if not os.path.isdir(self.path):
            raise VideoError(self.path, "not a folder")
        self.fps = check_fps(self.path, fps, "the")
        try:
            with os.scandir(self.path) as entries:
                frames = [
                    e.name
                    for e in entries
                    # dotfiles are OS droppings such as macOS "._0001.jpg"
                    if not e.name.startswith(".")
                    and os.path.splitext(e.name)[1].lower() in FRAME_EXTENSIONS
                    and e.is_file()
                ]
        except PermissionError:
            raise VideoError(self.path, "permission denied: cannot list the folder") from None
        except OSError as e:
            raise VideoError(self.path, f"cannot list the folder ({e.strerror or e})") from None
        if not frames:
            raise VideoError(self.path, "no JPEG/PNG frames")
        self._files = [os.path.join(self.path, n) for n in _frame_sort_key(frames)]
        self.num_frames = len(self._files)
        first = self._load(0)
        self.height, self.width = first.shape[:2]

    @property
    def files(self) -> list[str]:
        """The frame files in frame order."""
        return list(self._files)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image

        file = self._files[index]
        try:
            with Image.open(file) as image:
                rgb = np.array(image.convert("RGB"))
        except PermissionError:
            raise VideoError(file, "permission denied") from None
        except FileNotFoundError:
            raise VideoError(file, "frame file disappeared") from None
        except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
            raise VideoError(file, f"not a readable image ({e})") from None
        return rgb

    def _read(self, index: int) -> np.ndarray:
        rgb = self._load(index)
        if rgb.shape[:2] != (self.height, self.width):
            h, w = rgb.shape[:2]
            raise VideoError(
                self._files[index],
                f"frame size {w}x{h} differs from the first frame's {self.width}x{self.height}",
            )
        return rgb
