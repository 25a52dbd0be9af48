"""What Label Studio told the backend about each project in ``/setup``: its config, URL and token.

Label Studio sends the project's label config, its own URL and the project creator's token on
``/setup`` (and again whenever it checks the backend). The backend keeps them per project, so a
webhook or a job can read the config and write back to Label Studio even when the environment
names no Label Studio (``LABEL_STUDIO_URL``/``LABEL_STUDIO_API_KEY`` win when set). Kept in
``<data_dir>/projects/<id>.json``, readable by the backend's user only: it holds a token.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vrshq.backend.tasks.inputs import project_id


@dataclass
class ProjectInfo:
    """One project's setup: label config, Label Studio URL and token (never logged)."""

    project: str
    label_config: str | None = None
    hostname: str | None = None
    access_token: str | None = field(default=None, repr=False)
    extra_params: dict = field(default_factory=dict)


class ProjectRegistry:
    """Project setups on disk, cached in memory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root) / "projects"
        self._cache: dict[str, ProjectInfo] = {}
        self._lock = threading.Lock()

    def get(self, project: str | int) -> ProjectInfo | None:
        """The project's setup, or None."""
        pid = project_id(project)
        with self._lock:
            if pid in self._cache:
                return self._cache[pid]
        try:
            doc = json.loads((self.root / f"{pid}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        info = ProjectInfo(**{k: v for k, v in doc.items() if k in ProjectInfo.__dataclass_fields__})
        with self._lock:
            self._cache[pid] = info
        return info

    def put(self, info: ProjectInfo) -> None:
        """Store a project's setup (atomic write, mode 0600)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{info.project}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(info), fh)
            os.replace(tmp, self.root / f"{info.project}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._cache[info.project] = info


__all__ = ["ProjectInfo", "ProjectRegistry"]
