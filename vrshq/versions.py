"""Model versions: fine-tuned models registered under ``MODEL_DIR/versions/``, one of them served.

Each version is a folder ``versions/<id>/`` holding a model folder as ``load_vrshq`` reads it
(``vrshq/``, ``sam2/``, ``clip/``), its ``model_card.json`` and ``metrics.json`` (J&F on the
held-out split). ``versions/serving.json`` names the version the backend serves (none: the
configured base model) and keeps the history of switches, so ``vrshq versions use`` can roll
back. Backends watch that file and swap models without a restart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vrshq.errors import VrshqError

SERVING = "serving.json"
BASE = "base"  # "use base": serve the configured model again
_ID = re.compile(r"^v\d{3,}-[A-Za-z0-9_.-]+$")


class VersionError(VrshqError):
    """An unknown version, or a registry that cannot be read or written."""


@dataclass(frozen=True)
class Version:
    """One registered model version."""

    id: str
    path: Path
    card: dict[str, Any]
    metrics: dict[str, Any]

    def to_json(self, serving: bool = False) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"id": self.id, "path": str(self.path), "serving": serving,
                "created": self.card.get("saved_at"), "base": self.card.get("base_version"),
                "steps": self.card.get("steps"), "J&F": self.metrics.get("J&F"),
                "baseline J&F": self.metrics.get("baseline J&F")}


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class VersionRegistry:
    """The versions of one backend data folder."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.root = Path(data_dir) / "versions"

    @property
    def serving_file(self) -> Path:
        """The file backends watch."""
        return self.root / SERVING

    def list(self) -> list[Version]:
        """Every registered version, oldest first."""
        if not self.root.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir()) if p.is_dir() and _ID.match(p.name)]

    def get(self, version_id: str) -> Version:
        """One version by id; VersionError naming the known ones when unknown."""
        path = self.root / version_id
        if not _ID.match(version_id) or not (path / "vrshq" / "config.json").is_file():
            known = ", ".join(v.name for v in sorted(self.root.glob("v*")) if v.is_dir()) or "none"
            raise VersionError(f"unknown model version {version_id!r} (registered: {known})")
        return Version(version_id, path, _read(path / "model_card.json"), _read(path / "metrics.json"))

    def serving(self) -> Version | None:
        """The served version, or None for the configured base model."""
        doc = _read(self.serving_file)
        current = doc.get("current")
        return None if not current or current == BASE else self.get(current)

    def history(self) -> list[dict[str, Any]]:
        """Every switch, oldest first."""
        return list(_read(self.serving_file).get("history", []))

    def register(self, model_dir: str | os.PathLike, metrics: dict[str, Any] | None = None,
                 name: str = "finetune") -> Version:
        """Copy a model folder (as `vrshq finetune` writes it) into the registry; the new version."""
        source = Path(model_dir)
        if not (source / "vrshq" / "config.json").is_file():
            raise VersionError(f"{source}: not a model folder (no vrshq/config.json)")
        self.root.mkdir(parents=True, exist_ok=True)
        number = 1 + max((int(p.name[1:].split("-", 1)[0]) for p in self.root.glob("v*")
                          if p.is_dir() and _ID.match(p.name)), default=0)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "finetune"
        version_id = f"v{number:03d}-{safe}"
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            for item in source.iterdir():
                if item.name.startswith("."):
                    continue  # the trainer's resumable state stays with the run
                target = staging / item.name
                if item.is_dir():
                    shutil.copytree(item, target, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(item), str(target))
            _write_json(staging / "metrics.json", dict(metrics or {}))
            os.replace(staging, self.root / version_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.get(version_id)

    def use(self, version_id: str, reason: str = "") -> Version | None:
        """Serve ``version_id`` (or "base"); backends pick it up without a restart."""
        version = None if version_id == BASE else self.get(version_id)
        doc = _read(self.serving_file)
        history = list(doc.get("history", []))
        history.append({"version": version_id, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "reason": reason})
        _write_json(self.serving_file, {"current": version_id, "history": history})
        return version


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise VersionError(f"{path}: unreadable ({exc})") from None
    return doc if isinstance(doc, dict) else {}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


__all__ = ["BASE", "SERVING", "Version", "VersionError", "VersionRegistry"]
