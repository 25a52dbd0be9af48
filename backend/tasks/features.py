"""Where a task's stored image features live and what they must match (vrshq.engine.persist)."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Literal

from vrshq.backend.config import BackendConfig
from vrshq.engine.persist import FeatureSlot, file_fingerprint
from vrshq.video.reader import VideoReader

MiB = 1024 * 1024


def _safe(part: object) -> str:
    text = str(part)
    clean = re.sub(r"[^A-Za-z0-9_.]", "_", text)[:40]
    # a digest keeps two names that clean to the same text apart
    return clean if clean == text else f"{clean}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def task_slot(config: BackendConfig, project: object, task: object, video_url: str, fps: float,
              video: VideoReader, model_version: str,
              mode: Literal["read", "write"]) -> FeatureSlot | None:
    """The task's feature slot, keyed by the video (URL, rate, frames, file content) and model version.

    None when the cache is off (``VRSHQ_FEATURE_CACHE_MB=0``) on reading; a writing slot is still
    made then, so a new prediction removes the task's old folder.
    """
    if mode == "read" and config.feature_cache_mb <= 0:
        return None
    path = getattr(video, "path", None)
    content = file_fingerprint(path) if path and os.path.isfile(path) else None
    identity = {"video": str(video_url), "fps": float(fps), "frames": len(video),
                "file": content, "model_version": str(model_version)}
    return FeatureSlot(root=config.data_path / "features", name=f"{_safe(project)}-{_safe(task)}",
                       identity=identity, mode=mode, budget_bytes=config.feature_cache_mb * MiB)
