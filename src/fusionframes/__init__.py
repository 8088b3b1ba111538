"""FusionFrames: text-to-video with the Kandinsky Video architecture.

Public API::

    from fusionframes import TextToVideoPipeline
    pipe = TextToVideoPipeline.from_pretrained()          # the built-in model, offline
    video = pipe("a red circle moving right on a gray background", fps="medium", seed=0)
    video.save("circle.mp4")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TextToVideoPipeline": "fusionframes.pipelines.text_to_video",
    "VideoOutput": "fusionframes.pipelines.text_to_video",
    "KandinskyVideo11Pipeline": "fusionframes.pipelines.kandinsky11",
    "AnimationPipeline": "fusionframes.pipelines.animation",
    "make_movie": "fusionframes.pipelines.movie",
    "get_T2V_pipeline": "fusionframes.compat",
    "load_model": "fusionframes.io.checkpoints",
    "write_video": "fusionframes.io.video",
}

if TYPE_CHECKING:
    from fusionframes.compat import get_T2V_pipeline
    from fusionframes.io.checkpoints import load_model
    from fusionframes.io.video import write_video
    from fusionframes.pipelines.animation import AnimationPipeline as AnimationPipeline
    from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline as KandinskyVideo11Pipeline
    from fusionframes.pipelines.movie import make_movie as make_movie
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline, VideoOutput


def __getattr__(name: str) -> Any:
    """Import heavy modules (torch, transformers) only when the API is actually used."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fusionframes' has no attribute {name!r}")


__all__ = ["TextToVideoPipeline", "VideoOutput", "get_T2V_pipeline", "load_model", "write_video"]
