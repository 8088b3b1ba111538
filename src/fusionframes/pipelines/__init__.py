"""Thin orchestration of the generation stages: text-to-video, animation and mini-movies."""

from fusionframes.pipelines.text_to_video import (
    GenerationCancelled,
    GenerationSettings,
    TextToVideoPipeline,
    VideoOutput,
    validate_settings,
)

__all__ = [
    "GenerationCancelled",
    "GenerationSettings",
    "TextToVideoPipeline",
    "VideoOutput",
    "validate_settings",
]
