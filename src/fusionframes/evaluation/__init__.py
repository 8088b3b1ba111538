"""Evaluation of generated clips of the synthetic shapes world with classic vision (no learned models)."""

from fusionframes.evaluation.analysis import ClipAnalysis, ObjectTrack, analyse_clip, smoothness_px
from fusionframes.evaluation.synthetic import (
    METRICS,
    contact_sheet,
    default_prompts,
    evaluate,
    ground_truth_check,
    score_clip,
)

__all__ = [
    "METRICS",
    "ClipAnalysis",
    "ObjectTrack",
    "analyse_clip",
    "contact_sheet",
    "default_prompts",
    "evaluate",
    "ground_truth_check",
    "score_clip",
    "smoothness_px",
]
