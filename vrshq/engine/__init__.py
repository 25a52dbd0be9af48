"""The SAM-2 tracking engine: a stateful session over one video on the sam2 package's model."""

from vrshq.engine.config import PRECISIONS, EngineConfig, Precision
from vrshq.engine.precision import apply_precision
from vrshq.engine.sam2_loader import Sam2Spec, build_model, load_checkpoint
from vrshq.engine.session import FrameResult, ObjectFrame, TrackingSession

__all__ = [
    "EngineConfig",
    "PRECISIONS",
    "Precision",
    "apply_precision",
    "FrameResult",
    "ObjectFrame",
    "Sam2Spec",
    "TrackingSession",
    "build_model",
    "load_checkpoint",
]
