"""Evaluation of predicted tracks against ground truth: J&F as in the DAVIS-2017 toolkit."""

from vrshq.evaluation.jf import (
    BOUND_TH,
    EvaluationError,
    ObjectScores,
    boundary_f,
    boundary_tolerance,
    dilate_disk,
    evaluate_folders,
    evaluate_video,
    gt_object_ids,
    region_similarity,
    seg2bmap,
)
from vrshq.evaluation.layout import VideoPair, pair_videos

__all__ = [
    "BOUND_TH",
    "EvaluationError",
    "ObjectScores",
    "VideoPair",
    "boundary_f",
    "boundary_tolerance",
    "dilate_disk",
    "evaluate_folders",
    "evaluate_video",
    "gt_object_ids",
    "pair_videos",
    "region_similarity",
    "seg2bmap",
]
