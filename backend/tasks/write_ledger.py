"""Exactly-once prediction writes for jobs that may run twice (a worker killed, the job re-run).

Comparing results is not enough: a re-run on a GPU may differ in a few pixels and would post a
second prediction. So a job that writes keeps a small record under ``MODEL_DIR/writes``, keyed
by its job id (the same for every attempt): before posting, the highest prediction id the task
had; after, the id it wrote. A re-run that finds the id returns it; one that finds only the
"before" (the previous attempt died around its POST) takes a newer prediction of the same model
version and the same regions as its own, and posts only when there is none.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from vrshq.backend.corrections.export import write_atomic

KEEP_S = 14 * 86400  # records older than a job's retries could be are dropped


class WriteLedger:
    """One small JSON record per writing job, on the disk shared by the backend and its workers."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "writes"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def get(self, key: str) -> dict[str, Any] | None:
        """The job's record, or None."""
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write the job's record (atomically: the old or the new one, never a mix)."""
        write_atomic(self._path(key), [json.dumps({**record, "key": key, "time": time.time()})])

    def prune(self, older_than_s: float = KEEP_S) -> int:
        """Drop records older than ``older_than_s``; how many."""
        cutoff, n = time.time() - older_than_s, 0
        for path in self.root.glob("*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    n += 1
            except OSError:
                continue
        return n


def region_ids(result: Any) -> list[str]:
    """The sorted region ids of a prediction's result."""
    return sorted(str(r.get("id")) for r in (result or []) if isinstance(r, dict))


def post_prediction_once(writer: Any, ledger: WriteLedger, key: str, task: int,
                         result: list[dict[str, Any]], score: float, model_version: str) -> int:
    """Post the job's prediction unless an earlier attempt of the same job did; its id."""
    record = ledger.get(key)
    if record is not None and record.get("prediction") is not None:
        return int(record["prediction"])
    existing = writer.predictions(task)
    if record is None:
        record = {"task": int(task), "before": max((int(p.id) for p in existing), default=0)}
        ledger.put(key, record)
    else:
        ours = region_ids(result)
        for p in sorted(existing, key=lambda p: int(p.id)):
            if int(p.id) > int(record["before"]) and p.model_version == model_version \
                    and region_ids(p.result) == ours:
                ledger.put(key, {**record, "prediction": int(p.id)})
                return int(p.id)
    pid = writer.post_prediction(task, result, score, model_version)
    ledger.put(key, {**record, "prediction": pid})
    return pid


__all__ = ["WriteLedger", "post_prediction_once", "region_ids"]
