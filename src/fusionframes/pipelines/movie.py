"""Mini-movies: several prompts (scenes) rendered one after another and joined into one video.

``mode="t2v"`` makes each scene with the text-to-video stages (keyframes, interpolation, decoding),
keyframe sampling started from the model's layout prior like a single video (not for a continued scene,
whose first keyframe is the previous scene's last);
``mode="animate"`` makes each scene a camera animation. Scenes are joined by a ``transition``:

- ``cut``: scenes follow each other as they are.
- ``crossfade``: the last N frames of a scene are blended with the first N of the next
  (the movie is N frames shorter per transition).
- ``continue``: each scene starts from the previous scene's last frame, so the movie has no jump.
  In animate mode that frame is the scene's init image. In t2v mode the last frame's *latent* is
  the scene's first keyframe: at every denoising step the first keyframe is replaced by that latent
  noised to the current level, so the other keyframes grow out of it through the temporal layers
  (and keyframe sampling uses the ancestral DDPM sampler). The shared frame is shown once: each
  continued scene drops its first frame, which repeats the previous scene's last.

Everything is validated by :func:`validate_movie` before a model is loaded.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fusionframes.config import ModelConfig
from fusionframes.pipelines.animation import (
    DEFAULT_FPS,
    MAX_SECONDS,
    AnimationPipeline,
    AnimationPlan,
    count_frames,
    validate_animation,
    with_image,
)
from fusionframes.pipelines.kandinsky11 import (
    GenerationSettings11,
    KandinskyVideo11Pipeline,
    is_kandinsky_11,
)
from fusionframes.pipelines.movie11 import render_scene_11, scene_settings_11
from fusionframes.pipelines.outputs import OUTPUT_TYPES, PlayableOutput
from fusionframes.pipelines.stages import decode_latents
from fusionframes.pipelines.text_to_video import (
    FPS_PASSES,
    GenerationSettings,
    ProgressCallback,
    TextToVideoPipeline,
    to_output_type,
    validate_settings,
)
from fusionframes.runtime import finite_number

MODES = ("t2v", "animate")
TRANSITIONS = ("cut", "crossfade", "continue")
DEFAULT_SCENE_SECONDS = 4.0
DEFAULT_CROSSFADE_SECONDS = 0.5

Scene = str | Mapping[int, str]  # a prompt, or (animate mode) a {frame: prompt} schedule


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class MoviePlan:
    """A validated movie request: one plan or settings per scene and how they are joined."""

    mode: str
    transition: str
    durations: tuple[float, ...]
    fps: float  # playback frame rate of the movie
    scene_frames: tuple[int, ...]  # frames each scene contributes before crossfade overlap
    crossfade_frames: int  # 0 unless transition == "crossfade"
    seed: int | None
    animations: tuple[AnimationPlan, ...] = ()  # animate mode
    t2v: tuple[GenerationSettings | GenerationSettings11, ...] = ()  # t2v mode (1.1 models: 1.1 settings)

    @property
    def num_scenes(self) -> int:
        return len(self.durations)

    @property
    def num_frames(self) -> int:
        return sum(self.scene_frames) - self.crossfade_frames * (self.num_scenes - 1)

    def continued(self, index: int) -> bool:
        """Whether scene ``index`` starts from the previous scene's last frame (and drops its first)."""
        return self.transition == "continue" and index > 0

    def settings(self) -> dict[str, Any]:
        scenes = [a.settings() for a in self.animations] or [s.to_dict() for s in self.t2v]
        return {
            "mode": "movie",
            "scene_mode": self.mode,
            "transition": self.transition,
            "durations": list(self.durations),
            "fps": self.fps,
            "num_frames": self.num_frames,
            "scene_frames": list(self.scene_frames),
            "crossfade_frames": self.crossfade_frames,
            "seed": self.seed,
            "scenes": scenes,
        }


def check_scenes(scenes: Any, mode: str) -> list[Scene]:
    """A non-empty list of prompts (any number); prompt schedules only in animate mode."""
    if isinstance(scenes, str | Mapping):
        scenes = [scenes]
    if not isinstance(scenes, Sequence) or len(scenes) == 0:
        raise ValueError("scenes: need at least one scene (a prompt per scene)")
    for index, scene in enumerate(scenes, 1):
        if isinstance(scene, Mapping):
            if mode != "animate":
                raise ValueError(f"scenes: scene {index} is a prompt schedule; schedules need mode='animate'")
        elif not isinstance(scene, str) or not scene.strip():
            raise ValueError(f"scenes: scene {index} must be a non-empty prompt, got {scene!r}")
    return list(scenes)


def check_durations(durations: Any, count: int) -> tuple[float, ...]:
    """One positive, finite duration in seconds per scene (default 4 s each)."""
    if durations is None:
        return (DEFAULT_SCENE_SECONDS,) * count
    if isinstance(durations, int | float) and not isinstance(durations, bool):
        durations = [durations] * count
    if not isinstance(durations, Sequence | np.ndarray) or isinstance(durations, str):
        raise ValueError(f"durations: expected one number per scene, got {type(durations).__name__}")
    if len(durations) != count:
        raise ValueError(f"durations: got {len(durations)} durations for {count} scenes; give one per scene")
    out = []
    for index, value in enumerate(durations, 1):
        seconds = finite_number(value, f"durations: scene {index}")
        if not 0.0 < seconds <= MAX_SECONDS:
            raise ValueError(
                f"durations: scene {index} must last > 0 and <= {MAX_SECONDS:g} s, got {seconds:g}"
            )
        out.append(seconds)
    return tuple(out)


def keyframes_for(frames: int, passes: int) -> int:
    """Fewest keyframes (at least 2) whose interpolated video has ``frames`` frames or more."""
    stride = 4**passes
    return max(2, math.ceil((frames - 1) / stride) + 1)


def scene_seed(seed: int | None, index: int) -> int | None:
    """Scene ``index`` uses ``seed + index``, so any scene can be re-made on its own."""
    return None if seed is None else (seed + index) % 2**63


class ScenesRequest(NamedTuple):
    """The checked scene list of a movie request, as both scene modes read it."""

    config: ModelConfig
    scenes: list[Scene]
    durations: tuple[float, ...]
    transition: str
    fps: Any
    seed: int | None


ANIMATE_ONLY = ("image", "motion", "strength", "cadence", "border", "colour_coherence", "noise", "depth")


def validate_movie(
    config: ModelConfig,
    scenes: Any,
    durations: Any = None,
    mode: str = "t2v",
    transition: str = "cut",
    crossfade_frames: int | None = None,
    *,
    fps: float | str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    negative_prompt: str | None = None,
    interpolation_steps: int | None = None,
    interpolation_guidance_scale: float | None = None,
    scheduler: str | None = None,
    draw_seed: bool = True,
    **animation: Any,
) -> MoviePlan:
    """Check every option (scene count, durations, transition, per-scene settings) without a model.

    ``fps`` is a number in animate mode (default 24) and low/medium/high in t2v mode (default: the
    model's). ``animation``: the camera options of :func:`~fusionframes.pipelines.animation_plan.
    validate_animation` (animate mode only; ``image`` and ``depth`` belong to the first scene);
    ``motion`` may be one value for all scenes or a list with one per scene.
    """
    if mode not in MODES:
        raise ValueError(f"mode: unknown {mode!r}; allowed: {', '.join(MODES)}")
    if transition not in TRANSITIONS:
        raise ValueError(f"transition: unknown {transition!r}; allowed: {', '.join(TRANSITIONS)}")
    scenes = check_scenes(scenes, mode)
    durations = check_durations(durations, len(scenes))
    if seed is None and draw_seed:
        seed = secrets.randbelow(2**31)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed: must be an integer between 0 and 2**63 - 1, got {seed!r}")
    unknown = sorted(set(animation) - {*ANIMATE_ONLY, "fov_deg"})
    if unknown:
        raise TypeError(f"validate_movie() got unexpected keyword argument(s) {unknown}")
    if mode == "animate":
        shared = {
            "width": width,
            "height": height,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "negative_prompt": negative_prompt,
            **animation,
        }
        plans = _animation_plans(ScenesRequest(config, scenes, durations, transition, fps, seed), shared)
        frames = [p.num_frames - (1 if transition == "continue" and i else 0) for i, p in enumerate(plans)]
        plan = MoviePlan(
            mode, transition, durations, plans[0].fps, tuple(frames), 0, seed, animations=tuple(plans)
        )
    else:
        if animation.get("image") is not None or animation.get("depth") is not None:
            raise ValueError("image: an init image (and depth) needs mode='animate'")
        shared = {
            "negative_prompt": negative_prompt,
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "interpolation_steps": interpolation_steps,
            "guidance_scale": guidance_scale,
            "interpolation_guidance_scale": interpolation_guidance_scale,
            "scheduler": scheduler,
        }
        settings, rate, frames = _t2v_settings(
            ScenesRequest(config, scenes, durations, transition, fps, seed), shared
        )
        plan = MoviePlan(mode, transition, durations, rate, tuple(frames), 0, seed, t2v=tuple(settings))
    return replace(plan, crossfade_frames=_crossfade(crossfade_frames, transition, plan))


def _crossfade(crossfade_frames: Any, transition: str, plan: MoviePlan) -> int:
    if transition != "crossfade":
        if crossfade_frames is not None:
            raise ValueError(f"crossfade_frames: only used with transition='crossfade', not {transition!r}")
        return 0
    if crossfade_frames is None:
        crossfade_frames = max(1, round(DEFAULT_CROSSFADE_SECONDS * plan.fps))
        crossfade_frames = min(crossfade_frames, min(plan.scene_frames))
    if isinstance(crossfade_frames, bool) or not isinstance(crossfade_frames, int) or crossfade_frames < 1:
        raise ValueError(f"crossfade_frames: must be an integer >= 1, got {crossfade_frames!r}")
    if plan.num_scenes > 1 and crossfade_frames > min(plan.scene_frames):
        raise ValueError(
            f"crossfade_frames: {crossfade_frames} is longer than the shortest scene "
            f"({min(plan.scene_frames)} frames)"
        )
    return crossfade_frames


def _scene_frames(seconds: float, fps: Any, index: int) -> tuple[int, float]:
    """Frames of one scene; a scene shorter than a frame is named by its number."""
    try:
        return count_frames(seconds, fps)
    except ValueError as error:
        if str(error).startswith("seconds:"):
            raise ValueError(
                f"durations: scene {index + 1}: {str(error).removeprefix('seconds: ')}"
            ) from None
        raise


def _animation_plans(request: ScenesRequest, shared: dict[str, Any]) -> list[AnimationPlan]:
    """One animation plan per scene; a continued scene gets one extra frame (its shared first frame).

    The init image and depth map (in ``shared``) belong to the first scene only.
    """
    config, scenes, durations, transition, fps, seed = request
    fps = DEFAULT_FPS if fps is None else fps
    if isinstance(fps, str):
        raise ValueError(f"fps: animate mode needs frames per second as a number, got {fps!r}")
    shared = dict(shared)
    image, depth, motion = shared.pop("image", None), shared.pop("depth", None), shared.pop("motion", None)
    per_scene = isinstance(motion, list) and all(isinstance(m, str | Mapping) for m in motion)
    if per_scene and len(motion) != len(scenes):
        raise ValueError(
            f"motion: got {len(motion)} motions for {len(scenes)} scenes; give one or one per scene"
        )
    plans = []
    for index, (scene, seconds) in enumerate(zip(scenes, durations, strict=True)):
        frames, rate = _scene_frames(seconds, fps, index)
        extra = 1 if transition == "continue" and index else 0
        scene_motion = motion[index] if per_scene else motion
        plans.append(
            validate_animation(
                config,
                scene,
                image=image if index == 0 else None,
                seconds=(frames + extra) / rate,
                fps=rate,
                depth=depth if index == 0 else None,
                seed=scene_seed(seed, index),
                draw_seed=False,
                **({} if scene_motion is None else {"motion": scene_motion}),
                **shared,
            )
        )
    return plans


def _t2v_settings(
    request: ScenesRequest, shared: dict[str, Any]
) -> tuple[list[GenerationSettings], float, list[int]]:
    """Text-to-video settings per scene with enough keyframes for its duration."""
    config, scenes, durations, transition, fps, seed = request
    if fps is not None and fps not in FPS_PASSES:
        raise ValueError(f"fps: unknown {fps!r}; allowed in t2v mode: {', '.join(FPS_PASSES)}")
    if transition == "continue":
        if shared["scheduler"] not in (None, "ddpm"):
            raise ValueError(
                f"scheduler: transition 'continue' in t2v mode needs 'ddpm', not {shared['scheduler']!r}"
            )
        shared = {**shared, "scheduler": "ddpm"}
    fps = fps or config.sampling.fps
    passes = FPS_PASSES[fps]
    rate = config.sampling.base_fps * 4**passes
    settings, frames = [], []
    for index, (prompt, seconds) in enumerate(zip(scenes, durations, strict=True)):
        count = round(seconds * rate)
        if count < 1:
            raise ValueError(
                f"durations: scene {index + 1}: {seconds:g} s at {rate:g} fps is less than one frame"
            )
        extra = 1 if transition == "continue" and index else 0
        keyframes = keyframes_for(count + extra, passes)
        if is_kandinsky_11(config):
            settings.append(
                scene_settings_11(config, prompt, fps, keyframes, scene_seed(seed, index), shared)
            )
            frames.append(count)
            continue
        settings.append(
            validate_settings(
                config,
                prompt,
                fps=fps,
                seed=scene_seed(seed, index),
                num_keyframes=keyframes,
                draw_seed=False,
                **shared,
            )
        )
        frames.append(count)
    return settings, rate, frames


# ------------------------------------------------------------------------------------------------ joining


def crossfade(a: torch.Tensor, b: torch.Tensor, frames: int) -> torch.Tensor:
    """``a`` then ``b`` with ``a``'s last ``frames`` frames blended linearly into ``b``'s first ``frames``."""
    if frames == 0:
        return torch.cat([a, b])
    weight = torch.arange(1, frames + 1, dtype=a.dtype, device=a.device).div(frames + 1).view(-1, 1, 1, 1)
    blend = (1 - weight) * a[-frames:] + weight * b[:frames]
    return torch.cat([a[:-frames], blend, b[frames:]])


def join_scenes(clips: Sequence[torch.Tensor], crossfade_frames: int) -> tuple[torch.Tensor, list[int]]:
    """Concatenate clips ``[T, 3, H, W]`` (cross-fading if asked) and report where each scene starts."""
    video, starts = clips[0], [0]
    for clip in clips[1:]:
        starts.append(video.shape[0] - crossfade_frames)
        video = crossfade(video, clip, crossfade_frames)
    return video, starts


# ------------------------------------------------------------------------------------------------ t2v scenes


def t2v_scene_latents(
    t2v: TextToVideoPipeline,
    settings: GenerationSettings,
    generator: torch.Generator,
    anchor: torch.Tensor | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Latents ``[T, C, h, w]`` of one text-to-video scene, optionally starting on ``anchor``."""
    return t2v.video_latents(settings, generator, progress=progress, anchor=anchor)


# ------------------------------------------------------------------------------------------------ output


@dataclass
class MovieOutput(PlayableOutput):
    """The joined movie, where each scene starts in it, and the settings of every scene."""

    frames: Any
    fps: float
    settings: dict[str, Any]
    scene_starts: list[int]
    scene_lengths: list[int]  # frames each scene contributed (crossfaded frames count for both)
    timings: dict[str, float] = field(default_factory=dict)


def _scene_generator(plan: MoviePlan, index: int, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator("cpu").manual_seed(scene_seed(plan.seed, index) or 0)


@torch.no_grad()
def render_movie(
    pipeline: AnimationPipeline | TextToVideoPipeline,
    plan: MoviePlan,
    output_type: str = "pil",
    generator: torch.Generator | None = None,
    callback: ProgressCallback | None = None,
    progress: bool = True,
) -> MovieOutput:
    """Render every scene of a validated plan and join them (see module docstring for transitions)."""
    from tqdm.auto import tqdm

    t2v = pipeline.t2v if isinstance(pipeline, AnimationPipeline) else pipeline
    animator = pipeline if isinstance(pipeline, AnimationPipeline) else AnimationPipeline(t2v)
    clips: list[torch.Tensor] = []
    scene_settings: list[dict[str, Any]] = []
    anchor: torch.Tensor | None = None
    timings: dict[str, float] = {}
    for index in tqdm(range(plan.num_scenes), desc="scenes", unit="scene", disable=not progress):
        start = time.perf_counter()
        stage = f"scene {index + 1}/{plan.num_scenes}"
        report = (
            (lambda s, step, total, _stage=stage: callback(f"{_stage}: {s}", step, total))
            if callback
            else None
        )
        scene_gen = _scene_generator(plan, index, generator)
        skip = 1 if plan.continued(index) else 0
        if plan.mode == "animate":
            scene = plan.animations[index]
            if plan.continued(index):
                scene = with_image(scene, clips[-1][-1:], f"last frame of scene {index}")
            rendered = animator.render(scene, scene_gen, output_type="pt", callback=report, progress=progress)
            clip = rendered.frames
            scene_settings.append(rendered.settings)
        elif isinstance(t2v, KandinskyVideo11Pipeline):  # continued: the last frame is the image
            previous = clips[-1][-1] if plan.continued(index) else None
            clip, used = render_scene_11(t2v, plan.t2v[index], previous, scene_gen, report, progress)
            clip = clip[: plan.scene_frames[index] + skip]
            scene_settings.append(used.to_dict())
        else:
            if report is not None:
                report("text-to-video", 0, 1)
            latents = t2v_scene_latents(t2v, plan.t2v[index], scene_gen, anchor, progress)
            latents = latents[: plan.scene_frames[index] + skip]
            anchor = latents[-1:] if plan.transition == "continue" else None
            clip = decode_latents(
                t2v.components.movq, latents, plan.t2v[index].decode_chunk_size, progress
            ).cpu()
            if report is not None:
                report("text-to-video", 1, 1)
            scene_settings.append(plan.t2v[index].to_dict())
        clips.append(clip[skip:] if skip else clip)
        timings[stage] = time.perf_counter() - start
    video, starts = join_scenes(clips, plan.crossfade_frames)
    return MovieOutput(
        frames=to_output_type(video, output_type),
        fps=plan.fps,
        settings={**plan.settings(), "scenes": scene_settings, "model": t2v.components.name},
        scene_starts=starts,
        scene_lengths=[clip.shape[0] for clip in clips],
        timings=timings,
    )


def make_movie(
    scenes: Sequence[Scene] | Mapping[int, str],
    durations: Sequence[float] | None = None,
    mode: str = "t2v",
    transition: str = "cut",
    crossfade_frames: int | None = None,
    *,
    pipeline: AnimationPipeline | TextToVideoPipeline | None = None,
    model: str | Path | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str = "auto",
    generator: torch.Generator | None = None,
    output_type: str = "pil",
    callback: ProgressCallback | None = None,
    progress: bool = True,
    **options: Any,
) -> MovieOutput:
    """Render a movie from scene prompts; ``options`` are those of :func:`validate_movie`.

    Validates everything first, then loads ``model`` unless a ``pipeline`` is given.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: unknown {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
    if pipeline is None:
        from fusionframes.io.checkpoints import model_config_for
        from fusionframes.runtime import resolve_device, resolve_dtype

        resolve_dtype(dtype, resolve_device(device))
        config = model_config_for(model)
    else:
        config = pipeline.config
    plan = validate_movie(
        config, scenes, durations, mode, transition, crossfade_frames, draw_seed=generator is None, **options
    )
    if pipeline is None:
        pipeline = AnimationPipeline.from_pretrained(model, device=device, dtype=dtype)
    return render_movie(pipeline, plan, output_type, generator, callback, progress)
