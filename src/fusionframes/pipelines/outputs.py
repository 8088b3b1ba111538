"""How every pipeline hands its result back: the output type, progress reporting, the output object.

Text-to-video, animations and movies differ in what they record (a ``GenerationSettings``, or a
settings dict with per-scene entries) but are delivered, played, described and saved the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

OUTPUT_TYPES = ("pil", "np", "pt")

ProgressCallback = Callable[[str, int, int], None]


class Delivery(TypedDict, total=False):
    """The keyword arguments every pipeline call takes for its result: ``output_type`` (pil | np | pt,
    default pil), ``callback(stage, step, total)`` between denoising steps (raise
    ``GenerationCancelled`` in it to stop), and ``progress`` bars (default on)."""

    output_type: str
    callback: ProgressCallback | None
    progress: bool


def split_delivery(options: dict[str, Any]) -> Delivery:
    """Take the delivery options out of a call's keyword arguments (what is left is the request)."""
    taken: Any = {key: options.pop(key) for key in Delivery.__annotations__ if key in options}
    delivered(taken)
    return taken


def delivered(options: Mapping[str, Any]) -> tuple[str, ProgressCallback | None, bool]:
    """``(output_type, callback, progress)`` of delivery options, the output type checked."""
    output_type = options.get("output_type", "pil")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: unknown {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
    return output_type, options.get("callback"), options.get("progress", True)


class PlayableOutput:
    """Mixin for output dataclasses with ``frames``, ``fps`` and ``settings`` (a dict, or an object
    with ``to_dict``)."""

    frames: Any  # list[PIL.Image] | np.ndarray [T, H, W, 3] uint8 | torch.Tensor [T, 3, H, W] in [0, 1]
    fps: float
    settings: Any

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    def metadata(self) -> dict[str, Any]:
        """The settings that made the frames, for the video file's metadata (so it can be re-made)."""
        settings = self.settings if isinstance(self.settings, dict) else self.settings.to_dict()
        return {**settings, "playback_fps": self.fps, "generator": "fusionframes"}

    def save(self, path: str | Path) -> Path:
        from fusionframes.io.video import write_video

        return write_video(self.frames, path, fps=self.fps, metadata=self.metadata())
