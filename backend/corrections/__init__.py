"""The corrections log: every annotator correction of a model prediction, kept for fine-tuning.

One :class:`Correction` is one object on one frame of one annotation whose mask or boxes
differ from what the model predicted: who changed what (project, task, annotation and
annotator ids), on which video (path, SHA-256 of its content, fps), for which prompt and
object (id, label, frame), the predicted and the corrected mask (COCO RLE) and box tracks,
and which model produced the prediction (version, plugin). :class:`CorrectionsLog` keeps them
append-only (record -> store -> export).
"""

from vrshq.backend.corrections.export import EXPORT_FILENAME, MANIFEST_FILENAME, export_jsonl
from vrshq.backend.corrections.record import EVENTS, Correction, utc_now
from vrshq.backend.corrections.store import DB_FILENAME, CorrectionsLog, default_url, public_url

__all__ = [
    "DB_FILENAME", "EVENTS", "EXPORT_FILENAME", "MANIFEST_FILENAME", "Correction",
    "CorrectionsLog", "default_url", "export_jsonl", "public_url", "utc_now",
]
