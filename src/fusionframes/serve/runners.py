"""Runners, one per job mode (t2v, animate, movie): what a job's stored parameters mean to the model.

A runner turns a job's parameters into a validated plan (:meth:`Runner.prepare`, cheap, also used to
reject bad requests with 422 before they are queued) and renders it (:meth:`Runner.run`). The
animation and movie pipelines are imported lazily, so an install without them still serves
text-to-video and says clearly which modes are missing.

Text-to-video runs on the pipeline the model's config calls for (:func:`t2v_pipeline`); what that
pipeline takes beyond a prompt (an image, a motion level: :func:`model_inputs`) is read from the
pipeline itself, so a model gains them in the server as soon as its pipeline does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MODES = ("t2v", "animate", "movie")
T2V_OPTIONS = ("interpolation_steps", "interpolation_guidance_scale", "num_keyframes", "scheduler")
ANIMATION_OPTIONS = ("motion", "strength", "cadence", "border", "colour_coherence", "noise")
MOVIE_OPTIONS = ("scenes", "durations", "scene_mode", "transition", "crossfade_frames")
COMMON_OPTIONS = (
    "negative_prompt",
    "width",
    "height",
    "fps",
    "num_inference_steps",
    "guidance_scale",
    "seed",
)
RENAMED = {
    "steps": "num_inference_steps",
    "first_frame_steps": "num_inference_steps",
    "guidance_weight_prompt": "guidance_scale",
}
# What a text-to-video pipeline may take beyond the prompt and the common options; the server offers
# each one for a model whose pipeline's ``__call__`` has a parameter of that name.
MODEL_INPUTS = ("image", "motion")

ProgressCallback = Callable[[str, int, int], None]


class ModeUnavailable(ValueError):
    """The pipeline behind a mode is not part of this install (HTTP 422 naming ``mode``)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for on this server."""

    max_frames: int = 2000
    max_size: int = 1024


@dataclass
class Prepared:
    """A validated job: the parameters to store (seed filled in), its settings, plan and stages."""

    params: dict[str, Any]
    settings: dict[str, Any]
    num_frames: int
    stages: list[tuple[str, int]]
    plan: Any = field(default=None, repr=False)
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)  # e.g. the image, read from the store


@dataclass(frozen=True)
class Runner:
    """How one mode validates (``prepare``) and renders (``run``) a job."""

    mode: str
    module: str  # imported lazily; its absence makes the mode unavailable
    prepare: Callable[[Any, dict[str, Any], Limits], Prepared]
    run: Callable[[Pipelines, Prepared, ProgressCallback], Any]

    def available(self) -> tuple[bool, str | None]:
        try:
            importlib.import_module(self.module)
        except ImportError as error:
            return False, f"mode {self.mode!r} is not available in this install ({error})"
        return True, None


def require(mode: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModeUnavailable(f"mode: mode {mode!r} is not available in this install") from None


def field_of(error: Exception) -> str | None:
    """The request field a pipeline error names: ``"width: 65 is not ..."`` -> ``"width"``."""
    head, sep, _ = str(error).partition(":")
    if not sep or not head.replace("_", "").isalnum():
        return None
    return RENAMED.get(head, head)


def renamed_error(error: ValueError) -> ValueError:
    """Pipeline errors name ``steps``; the API calls it ``num_inference_steps``."""
    name = field_of(error)
    head = str(error).partition(":")[0]
    if name is not None and name != head:
        return ValueError(f"{name}:{str(error).partition(':')[2]}")
    return error


def json_friendly(value: Any) -> Any:
    """Settings go into SQLite as JSON; numpy scalars and tuples become plain values."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def check_size(params: dict[str, Any], limits: Limits) -> None:
    for name in ("width", "height"):
        value = params.get(name)
        if isinstance(value, int) and value > limits.max_size:
            raise ValueError(f"{name}: {value} is larger than this server allows (at most {limits.max_size})")


def check_frames(count: int, limits: Limits, name: str) -> None:
    if count > limits.max_frames:
        raise ValueError(
            f"{name}: the video would have {count} frames; this server allows at most {limits.max_frames}"
        )


def reject_options(params: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if params.get(name) is not None:
            raise ValueError(f"{name}: not used {where}")


# ---------------------------------------------------------------------------------------------- t2v


def t2v_pipeline(config: Any) -> type:
    """The pipeline class a model's config calls for (the 1.1 architecture has its own)."""
    from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline, is_kandinsky_11
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    return KandinskyVideo11Pipeline if is_kandinsky_11(config) else TextToVideoPipeline


def model_inputs(config: Any) -> tuple[str, ...]:
    """The inputs of :data:`MODEL_INPUTS` that this model's pipeline takes, as its ``__call__`` says:
    a model gains image-to-video or a motion level in the server when its pipeline does."""
    parameters = inspect.signature(t2v_pipeline(config).__call__).parameters
    return tuple(name for name in MODEL_INPUTS if name in parameters)


def animation_problem(config: Any) -> str | None:
    """Why modes ``animate`` and ``movie`` cannot run on this model (None: they can). They redraw
    frames through the 1.0 pipeline's image path; another pipeline class offers them by setting
    ``animates = True`` on itself once its own path exists."""
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipeline = t2v_pipeline(config)
    if pipeline.__dict__.get("animates", pipeline is TextToVideoPipeline):
        return None
    return f"its pipeline, {pipeline.__name__}, has no animation path yet"


def t2v_stages(first_frame: int, keyframes: int, passes: int, interpolation: int) -> list[tuple[str, int]]:
    """The stage names the pipelines report (``first_frame`` 0: no first-frame stage)."""
    stages = [("first frame", first_frame)] if first_frame else []
    stages += [("keyframes", keyframes)]
    stages += [(f"interpolation {i + 1}", interpolation) for i in range(passes)]
    return [*stages, ("decoding", 1)]


def prepare_t2v(config: Any, params: dict[str, Any], limits: Limits) -> Prepared:
    from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline
    from fusionframes.pipelines.text_to_video import FPS_PASSES, validate_settings

    if issubclass(t2v_pipeline(config), KandinskyVideo11Pipeline):
        return prepare_t2v_11(config, params, limits)
    reject_options(params, ANIMATION_OPTIONS + MOVIE_OPTIONS + ("seconds",), "in mode 't2v'")
    check_size(params, limits)
    options = {name: params[name] for name in COMMON_OPTIONS + T2V_OPTIONS if params.get(name) is not None}
    settings = validate_settings(config, params.get("prompt"), **options)
    check_frames(settings.num_frames, limits, "num_keyframes" if "num_keyframes" in options else "fps")
    passes = FPS_PASSES[settings.fps]
    return Prepared(
        params={**params, "seed": settings.seed},
        settings=json_friendly(settings.to_dict()),
        num_frames=settings.num_frames,
        stages=t2v_stages(0, settings.num_inference_steps, passes, settings.interpolation_steps),
        plan=settings,
    )


def prepare_t2v_11(config: Any, params: dict[str, Any], limits: Limits) -> Prepared:
    """Kandinsky Video 1.1: ``motion`` is its motion level and ``image`` (already checked and kept by
    the store; here its description) makes the job image-to-video."""
    import dataclasses

    from fusionframes.pipelines.kandinsky11 import validate_settings_11
    from fusionframes.pipelines.text_to_video import FPS_PASSES

    camera = tuple(name for name in ANIMATION_OPTIONS if name != "motion")
    reject_options(params, camera + MOVIE_OPTIONS + ("seconds",), "in mode 't2v'")
    if params.get("scheduler") not in (None, "ddpm"):
        raise ValueError("scheduler: Kandinsky Video 1.1 samples with its trained DDPM only; allowed: ddpm")
    check_size(params, limits)
    names = ("width", "height", "fps", "motion", "num_inference_steps", *T2V_OPTIONS[:3])
    options = {name: params[name] for name in names if params.get(name) is not None}
    if params.get("guidance_scale") is not None:
        options["guidance_weight_prompt"] = params["guidance_scale"]
    try:
        settings, _ = validate_settings_11(
            config, params.get("prompt"), params.get("negative_prompt"), None, options, params.get("seed")
        )
    except ValueError as error:
        raise renamed_error(error) from None
    image = params.get("image") is not None
    settings = dataclasses.replace(settings, image_to_video=image)
    check_frames(settings.num_frames, limits, "num_keyframes" if "num_keyframes" in options else "fps")
    first = 0 if image else settings.num_inference_steps
    passes = FPS_PASSES[settings.fps]
    return Prepared(
        params={**params, "seed": settings.seed},
        settings=json_friendly(settings.to_dict()),
        num_frames=settings.num_frames,
        stages=t2v_stages(first, settings.num_inference_steps, passes, settings.interpolation_steps),
        plan=settings,
    )


def run_t2v(pipes: Pipelines, job: Prepared, callback: ProgressCallback) -> Any:
    import torch

    from fusionframes.pipelines.kandinsky11 import GenerationSettings11

    settings = job.plan
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    if isinstance(settings, GenerationSettings11):
        image = job.inputs.get("image")  # a PIL image (see WorkerPool._inputs), or None
        return pipes.t2v.generate_11(
            settings, image, generator, output_type="np", callback=callback, progress=False
        )
    return pipes.t2v.generate(settings, generator, output_type="np", callback=callback, progress=False)


# ---------------------------------------------------------------------------------------------- animate


def _animation_options(params: dict[str, Any]) -> dict[str, Any]:
    names = ("negative_prompt", "width", "height", "fps", "guidance_scale", "seed", *ANIMATION_OPTIONS)
    options = {name: params[name] for name in names if params.get(name) is not None}
    if params.get("num_inference_steps") is not None:
        options["steps"] = params["num_inference_steps"]
    return options


def _precheck_length(seconds: Any, fps: Any, limits: Limits, name: str) -> None:
    """Refuse absurd lengths before a per-frame camera path is computed for them."""
    if isinstance(seconds, int | float) and isinstance(fps, int | float) and math.isfinite(seconds * fps):
        check_frames(round(seconds * fps), limits, name)


def prepare_animate(config: Any, params: dict[str, Any], limits: Limits) -> Prepared:
    animation = require("animate", "fusionframes.pipelines.animation")
    reject_options(params, T2V_OPTIONS + MOVIE_OPTIONS, "in mode 'animate'")
    check_size(params, limits)
    options = _animation_options(params)
    seconds = params.get("seconds", animation.DEFAULT_SECONDS)
    _precheck_length(seconds, options.get("fps", animation.DEFAULT_FPS), limits, "seconds")
    try:
        plan = animation.validate_animation(config, params.get("prompt"), seconds=seconds, **options)
    except ValueError as error:
        raise renamed_error(error) from None
    check_frames(plan.num_frames, limits, "seconds")
    return Prepared(
        params={**params, "seed": plan.seed},
        settings=json_friendly(plan.settings()),
        num_frames=plan.num_frames,
        stages=[("first frame", plan.first_frame_steps), ("frames", plan.num_frames)],
        plan=plan,
    )


def run_animate(pipes: Pipelines, job: Prepared, callback: ProgressCallback) -> Any:
    import torch

    generator = torch.Generator("cpu").manual_seed(job.plan.seed)
    return pipes.animator.render(job.plan, generator, output_type="np", callback=callback, progress=False)


# ---------------------------------------------------------------------------------------------- movie


def _movie_options(params: dict[str, Any], scene_mode: str) -> dict[str, Any]:
    if scene_mode == "t2v":
        reject_options(params, ANIMATION_OPTIONS, "with scene_mode 't2v' (camera options need 'animate')")
        names: tuple[str, ...] = T2V_OPTIONS[:2] + T2V_OPTIONS[3:]
    else:
        reject_options(params, T2V_OPTIONS, "with scene_mode 'animate'")
        names = ANIMATION_OPTIONS
    names += ("negative_prompt", "width", "height", "fps", "guidance_scale", "seed")
    options = {name: params[name] for name in names if params.get(name) is not None}
    if params.get("num_inference_steps") is not None:
        options["steps"] = params["num_inference_steps"]
    return options


def prepare_movie(config: Any, params: dict[str, Any], limits: Limits) -> Prepared:
    movie = require("movie", "fusionframes.pipelines.movie")
    if params.get("prompt") is not None:
        raise ValueError("prompt: mode 'movie' takes one prompt per scene in 'scenes'")
    reject_options(params, ("num_keyframes", "seconds"), "in mode 'movie' (use durations)")
    check_size(params, limits)
    scene_mode = params.get("scene_mode") or "t2v"
    options = _movie_options(params, scene_mode)
    durations = params.get("durations")
    if (
        scene_mode == "animate"
        and isinstance(durations, list)
        and all(isinstance(d, int | float) for d in durations)
    ):
        _precheck_length(sum(durations), options.get("fps", 24.0), limits, "durations")
    try:
        plan = movie.validate_movie(
            config,
            params.get("scenes"),
            durations,
            scene_mode,
            params.get("transition") or "cut",
            params.get("crossfade_frames"),
            **options,
        )
    except ValueError as error:
        raise renamed_error(error) from None
    check_frames(plan.num_frames, limits, "durations")
    return Prepared(
        params={**params, "seed": plan.seed},
        settings=json_friendly(plan.settings()),
        num_frames=plan.num_frames,
        stages=movie_stages(plan),
        plan=plan,
    )


def movie_stages(plan: Any) -> list[tuple[str, int]]:
    """The stage names ``render_movie`` reports: ``"scene 2/3: frames"`` and so on."""
    count = plan.num_scenes
    if plan.mode == "t2v":
        return [(f"scene {i + 1}/{count}: text-to-video", 1) for i in range(count)]
    stages = []
    for i, scene in enumerate(plan.animations):
        stages += [(f"scene {i + 1}/{count}: first frame", scene.first_frame_steps)]
        stages += [(f"scene {i + 1}/{count}: frames", scene.num_frames)]
    return stages


def run_movie(pipes: Pipelines, job: Prepared, callback: ProgressCallback) -> Any:
    from fusionframes.pipelines.movie import render_movie

    return render_movie(pipes.animator, job.plan, output_type="np", callback=callback, progress=False)


class Pipelines:
    """The model a worker loads once; the animation pipeline wraps the same weights when needed."""

    def __init__(self, model: Any, device: str, dtype: str, threads: int | None = None) -> None:
        import torch

        from fusionframes.io.checkpoints import model_config_for

        if threads:  # set in the worker thread itself: CPU thread pools are per calling thread
            torch.set_num_threads(threads)
        pipeline = t2v_pipeline(model_config_for(model))
        self.t2v = pipeline.from_pretrained(model, device=device, dtype=dtype)
        self.t2v.encode_prompts("warm up", None)  # loads the text encoder now, not during a job
        self._animator: Any = None
        if RUNNERS["animate"].available()[0] and animation_problem(self.t2v.config) is None:
            _ = self.animator

    @property
    def animator(self) -> Any:
        if self._animator is None:
            from fusionframes.pipelines.animation import AnimationPipeline

            self._animator = AnimationPipeline(self.t2v)
        return self._animator


RUNNERS: dict[str, Runner] = {
    "t2v": Runner("t2v", "fusionframes.pipelines.text_to_video", prepare_t2v, run_t2v),
    "animate": Runner("animate", "fusionframes.pipelines.animation", prepare_animate, run_animate),
    "movie": Runner("movie", "fusionframes.pipelines.movie", prepare_movie, run_movie),
}


def prepare(config: Any, mode: str, params: dict[str, Any], limits: Limits) -> Prepared:
    """Validate a request for ``mode``; ``ValueError("field: reason")`` on bad input."""
    runner = RUNNERS.get(mode)
    if runner is None:
        raise ValueError(f"mode: unknown {mode!r}; allowed: {', '.join(RUNNERS)}")
    return runner.prepare(config, params, limits)
