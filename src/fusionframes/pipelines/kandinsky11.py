"""Kandinsky Video 1.1: prompt (and optionally a first image) -> first frame -> keyframes -> video.

The 1.1 chain: the keyframe U-Net draws the first frame in its image mode (or the user gives one),
the image MoVQ round-trips it to a latent at the video's size, the keyframe U-Net draws 12 keyframes
conditioned on that latent (noise-augmented), the motion score and the prompt with three-branch
guidance, the interpolation U-Net fills in three frames per pair (once for fps ``medium``, twice for
``high``), and the temporal MoVQ decodes the clip. Every option is validated by
:func:`validate_settings_11` before any network runs.

Where this differs from the reference on purpose (documented in the README's 1.1 section): a negative
prompt is used (the reference accepts and ignores it: its context replaces the null embedding in the
unconditional rows of every stage), an unknown motion name is an error (the reference warns and uses
``medium``), and ``keep_first_frame=True`` puts the condition latent itself in frame 0 (by default,
as released, frame 0 is the keyframe U-Net's own drawing of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Unpack

import torch

from fusionframes.components import ModelComponents
from fusionframes.config import ModelConfig
from fusionframes.diffusion.scheduled_ddpm import DDPMSettings, interpolation_settings_11
from fusionframes.models.movq import decode_clip
from fusionframes.pipelines.acceleration import memory_format_of, to_channels_last, use_channels_last
from fusionframes.pipelines.first_frame import check_image, decode_image, encode_image
from fusionframes.pipelines.outputs import OUTPUT_TYPES, Delivery, delivered
from fusionframes.pipelines.stages import scatter_frames
from fusionframes.pipelines.stages11 import (
    KeyframeControls,
    TextBranches,
    generate_first_frame,
    generate_keyframes_11,
    interpolate_groups_11,
)
from fusionframes.pipelines.text_to_video import (
    FPS_PASSES,
    PASS_SKIP_FRAMES,
    ProgressCallback,
    TextToVideoPipeline,
    VideoOutput,
    _int,
    resolve_seed,
    to_output_type,
    validate_size,
    video_frames,
)
from fusionframes.runtime import check_finite, finite_number, resolve_device

RELEASE = "kandinsky-video-1.1"  # the Hub release's model name
MOTION_SCORES = {"low": 1, "medium": 10, "high": 50, "extreme": 100}
DECODERS = ("video", "image")
MOTION_MAX = 1000.0  # the motion embedding is sinusoidal like a timestep; beyond this it only aliases


@dataclass(frozen=True)
class Reference11Defaults:
    """The reference pipeline's call defaults (``KandinskyVideoT2VPipeline.__call__``); its motion
    default ``'normal'`` is not a motion name and falls back to ``'medium'`` there."""

    motion: str = "medium"
    key_frame_guidance_scale: float = 5.0
    guidance_weight_prompt: float = 5.0
    guidance_weight_image: float = 2.0
    interpolation_guidance_scale: float = 0.5
    noise_augmentation: int = 20
    num_keyframes: int = 12
    decoder: str = "video"


DEFAULTS_11 = Reference11Defaults()
KEYFRAME_SAMPLER_11 = DDPMSettings()  # first frame and keyframes: epsilon, 50 leading steps
INTERPOLATION_SAMPLER_11 = interpolation_settings_11()  # v, 10 trailing steps


def is_kandinsky_11(config: ModelConfig) -> bool:
    """A model whose U-Nets have the 1.1 temporal layers takes this pipeline."""
    return getattr(config.keyframe_unet, "temporal_layers", "1.0") == "1.1"


@dataclass(frozen=True)
class GenerationSettings11:
    """Everything that determines a 1.1 video; stored as its metadata."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    fps: str
    motion: str | float
    key_frame_guidance_scale: float
    guidance_weight_prompt: float
    guidance_weight_image: float
    interpolation_guidance_scale: float
    noise_augmentation: int
    seed: int | None
    decoder: str
    num_keyframes: int
    num_inference_steps: int
    interpolation_steps: int
    image_to_video: bool = False
    keep_first_frame: bool = False
    decode_window: int | None = None  # None: the reference's pieces of about four frames
    decode_overlap: int = 0

    @property
    def motion_score(self) -> float:
        return MOTION_SCORES[self.motion] if isinstance(self.motion, str) else self.motion

    @property
    def num_frames(self) -> int:
        return video_frames(self.num_keyframes, self.fps)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "motion_score": self.motion_score, "model_release": "1.1"}


def check_motion(value: Any) -> str | float:
    """A motion name or a score: a finite number in [0, MOTION_MAX]."""
    if isinstance(value, str):
        if value not in MOTION_SCORES:
            allowed = ", ".join(f"{k} ({v})" for k, v in MOTION_SCORES.items())
            raise ValueError(
                f"motion: unknown {value!r}; allowed: {allowed}, or a score in [0, {MOTION_MAX:g}]"
            )
        return value
    score = finite_number(value, "motion", 0.0)
    if score > MOTION_MAX:
        raise ValueError(
            f"motion: {score:g} is above {MOTION_MAX:g}; use a name or a score in [0, {MOTION_MAX:g}]"
        )
    return int(score) if float(score).is_integer() else score


def _steps(value: Any, default: int, name: str) -> int:
    steps = _int(value if value is not None else default, name)
    if not 1 <= steps <= 1000:
        raise ValueError(f"{name}: must be an integer in [1, 1000], got {steps}")
    return steps


def validate_settings_11(
    config: ModelConfig,
    prompt: str,
    negative_prompt: str | None = None,
    image: Any = None,
    options: dict[str, Any] | None = None,
    seed: int | None = None,
    draw_seed: bool = True,
    decoders: tuple[str, ...] = DECODERS,
) -> tuple[GenerationSettings11, Any]:
    """Check every option (``options``: the keyword arguments of :meth:`KandinskyVideo11Pipeline.__call__`
    other than prompt, negative prompt, image and seed) and return the settings and the PIL image.

    ``decoders``: what the model can decode with (a model folder without a video MoVQ has only
    ``image``). Nothing here touches a network, so a bad value costs milliseconds.
    """
    options = dict(options or {})
    allowed = set(Reference11Defaults.__dataclass_fields__) | {
        "width",
        "height",
        "fps",
        "num_inference_steps",
        "interpolation_steps",
        "keep_first_frame",
        "decode_window",
        "decode_overlap",
    }
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"options: unknown {unknown}; allowed: {sorted(allowed)}")
    given = {k: v for k, v in options.items() if v is not None}
    merged = {**asdict(DEFAULTS_11), **given}
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt: must be a non-empty string")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt: must be a string or None, got {type(negative_prompt).__name__}")
    negative_prompt = negative_prompt if negative_prompt and negative_prompt.strip() else None
    defaults = config.sampling
    multiple = config.pixel_multiple
    width = validate_size(given.get("width", defaults.width), "width", multiple)
    height = validate_size(given.get("height", defaults.height), "height", multiple)
    fps = given.get("fps", defaults.fps)
    if fps not in FPS_PASSES:
        raise ValueError(f"fps: unknown {fps!r}; allowed: {', '.join(FPS_PASSES)}")
    decoder = merged["decoder"]
    if decoder not in decoders:
        raise ValueError(
            f"decoder: unknown or unavailable {decoder!r}; allowed for this model: {', '.join(decoders)}"
        )
    noise_augmentation = _int(merged["noise_augmentation"], "noise_augmentation")
    if not 0 <= noise_augmentation < KEYFRAME_SAMPLER_11.num_train_timesteps:
        raise ValueError(
            f"noise_augmentation: must be a timestep in [0, {KEYFRAME_SAMPLER_11.num_train_timesteps - 1}], "
            f"got {noise_augmentation}"
        )
    keyframes = _int(merged["num_keyframes"], "num_keyframes")
    if keyframes < 2:
        raise ValueError(f"num_keyframes: must be >= 2, got {keyframes}")
    keep = merged.get("keep_first_frame", False)
    if not isinstance(keep, bool):
        raise ValueError(f"keep_first_frame: must be True or False, got {keep!r}")
    window = given.get("decode_window")
    window = None if window is None else _int(window, "decode_window")
    overlap = _int(given.get("decode_overlap", 0), "decode_overlap")
    if window is not None and not 0 <= overlap < window or window is None and overlap:
        raise ValueError(f"decode_overlap: must be in [0, decode_window) with a decode_window, got {overlap}")
    if window is not None and window < 1:
        raise ValueError(f"decode_window: must be >= 1 frames, got {window}")
    if image is not None:
        image = check_image(image, width, height)
    seed = resolve_seed(seed, draw_seed)
    settings = GenerationSettings11(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        fps=fps,
        motion=check_motion(merged["motion"]),
        key_frame_guidance_scale=finite_number(
            merged["key_frame_guidance_scale"], "key_frame_guidance_scale"
        ),
        guidance_weight_prompt=finite_number(merged["guidance_weight_prompt"], "guidance_weight_prompt"),
        guidance_weight_image=finite_number(merged["guidance_weight_image"], "guidance_weight_image"),
        interpolation_guidance_scale=finite_number(
            merged["interpolation_guidance_scale"], "interpolation_guidance_scale"
        ),
        noise_augmentation=noise_augmentation,
        seed=seed,
        decoder=decoder,
        num_keyframes=keyframes,
        num_inference_steps=_steps(
            given.get("num_inference_steps"),
            KEYFRAME_SAMPLER_11.num_inference_timesteps,
            "num_inference_steps",
        ),
        interpolation_steps=_steps(
            given.get("interpolation_steps"),
            INTERPOLATION_SAMPLER_11.num_inference_timesteps,
            "interpolation_steps",
        ),
        image_to_video=image is not None,
        keep_first_frame=keep,
        decode_window=window,
        decode_overlap=overlap,
    )
    return settings, image


def config_11_for(model: str | Path | None) -> ModelConfig | None:
    """The config of a 1.1 model named by ``model`` without loading weights; None when ``model`` is
    not a 1.1 model (or not a model: the 1.0 path then reports that)."""
    from fusionframes.io.checkpoints import model_config_for

    try:
        config = model_config_for(model)
    except (FileNotFoundError, ValueError):
        return None
    return config if is_kandinsky_11(config) else None


class KandinskyVideo11Pipeline(TextToVideoPipeline):
    """Text-to-video and image-to-video with a Kandinsky Video 1.1 model (released or small)."""

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        model: str | Path = RELEASE,
        device: str | torch.device | None = "cpu",
        dtype: str = "auto",
        cache_dir: str | Path | None = None,
        text_encoder: str | Path | None = None,
        **kwargs: Any,
    ) -> KandinskyVideo11Pipeline:
        """``model``: ``kandinsky-video-1.1`` (the Hub), a folder of the released files, or a model
        folder (see :meth:`TextToVideoPipeline.from_pretrained`, which also routes 1.1 models here)."""
        return super().from_pretrained(model, device, dtype, cache_dir, text_encoder, **kwargs)

    text_device: torch.device | None = None  # set by a per-component device map (see kandinsky_video.py)

    def __init__(
        self,
        components: ModelComponents,
        device: str | torch.device | None = "cpu",
        dtype: str = "auto",
        channels_last: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """As :class:`TextToVideoPipeline` (same options); the temporal MoVQ follows the image MoVQ:
        ``decoder_dtype``, channels-last (auto: on CPU, where it was measured to pay for both) and
        offload."""
        video_movq = components.video_movq
        if video_movq is not None and use_channels_last(resolve_device(device), channels_last):
            to_channels_last(video_movq.decoder)  # before placement: sequential offload copies weights
        super().__init__(components, device, dtype, channels_last=channels_last, **kwargs)
        if video_movq is not None and self.placement.mode != "none":
            # offload: the temporal decoder joins the image MoVQ's placement (hooks move it in and out)
            video_movq.post_quant_conv.to(self.device)
            self.placement.place(video_movq.decoder)

    def device_for(self, module: torch.nn.Module) -> torch.device:
        """Where ``module``'s inputs go: the pipeline's device under offload, else the module's own
        (a per-component device map may put the networks on different devices)."""
        if self.placement.mode != "none":
            return self.device
        return next(module.parameters()).device

    def _text_conditioner(self):
        text = super()._text_conditioner()
        if self.text_device is not None:
            text.encoder.to(self.text_device)
            text.projection.to(self.text_device)
        return text

    @property
    def video_movq(self):
        return getattr(self.components, "video_movq", None)

    def decoders(self) -> tuple[str, ...]:
        return DECODERS if self.video_movq is not None else ("image",)

    def __call__(  # noqa: D417 - the arguments are the reference's, documented in the README
        self,
        prompt: str,
        negative_prompt: str | None = None,
        image: Any = None,
        width: int | None = None,
        height: int | None = None,
        fps: str | None = None,
        motion: str | float | None = None,
        key_frame_guidance_scale: float | None = None,
        guidance_weight_prompt: float | None = None,
        guidance_weight_image: float | None = None,
        interpolation_guidance_scale: float | None = None,
        noise_augmentation: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        decoder: str | None = None,
        output_type: str = "pil",
        callback: ProgressCallback | None = None,
        progress: bool = True,
        num_inference_steps: int | None = None,
        interpolation_steps: int | None = None,
        num_keyframes: int | None = None,
        keep_first_frame: bool | None = None,
        decode_window: int | None = None,
        decode_overlap: int | None = None,
    ) -> VideoOutput:
        """Generate one video (``image``: animate this first frame instead of drawing one).

        ``generator`` wins over ``seed``; with neither a seed is drawn and recorded in
        ``output.settings.seed``. ``motion``: low / medium / high / extreme or a score.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: unknown {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        options = {
            "width": width,
            "height": height,
            "fps": fps,
            "motion": motion,
            "key_frame_guidance_scale": key_frame_guidance_scale,
            "guidance_weight_prompt": guidance_weight_prompt,
            "guidance_weight_image": guidance_weight_image,
            "interpolation_guidance_scale": interpolation_guidance_scale,
            "noise_augmentation": noise_augmentation,
            "decoder": decoder,
            "num_inference_steps": num_inference_steps,
            "interpolation_steps": interpolation_steps,
            "num_keyframes": num_keyframes,
            "keep_first_frame": keep_first_frame,
            "decode_window": decode_window,
            "decode_overlap": decode_overlap,
        }
        settings, image = validate_settings_11(
            self.config, prompt, negative_prompt, image, options, seed, generator is None, self.decoders()
        )
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(settings.seed)
        return self.generate_11(
            settings, image, generator, output_type=output_type, callback=callback, progress=progress
        )

    def generate(  # type: ignore[override]
        self,
        settings: GenerationSettings11,
        generator: torch.Generator,
        output_type: str = "pil",
        callback: ProgressCallback | None = None,
        progress: bool = True,
    ) -> VideoOutput:
        """Text-to-video from validated 1.1 settings (code written for 1.0 pipelines calls this);
        1.0 settings and image-to-video settings (which need the image) are refused by name."""
        if not isinstance(settings, GenerationSettings11):
            raise TypeError(
                f"settings: a Kandinsky Video 1.1 pipeline takes GenerationSettings11 from "
                f"validate_settings_11, got {type(settings).__name__}"
            )
        if settings.image_to_video:
            raise ValueError("settings: image-to-video needs the image; call generate_11(settings, image)")
        return self.generate_11(
            settings, None, generator, output_type=output_type, callback=callback, progress=progress
        )

    # -- stages ----------------------------------------------------------------------------------

    @torch.no_grad()
    def text_branches(self, settings: GenerationSettings11) -> tuple[TextBranches, TextBranches]:
        """(keyframe text, interpolation text). Both stages use the base projection, as released; the
        unconditional rows see the negative prompt if there is one, else each U-Net's null embedding."""
        text = self._text_conditioner()
        negative = settings.negative_prompt
        context, mask = text([settings.prompt] if negative is None else [settings.prompt, negative])
        if negative is not None:
            keyframe = TextBranches(context[:1], mask[:1], context[1:], mask[1:])
            interpolation = keyframe
        else:
            keyframe = TextBranches.with_null(context, mask, self.components.keyframe_null)
            interpolation = TextBranches.with_null(context, mask, self.components.interpolation_null)
        return (
            keyframe.to(self.device_for(self.components.keyframe_unet)),
            interpolation.to(self.device_for(self.components.interpolation_unet)),
        )

    def first_frame_latent(
        self,
        settings: GenerationSettings11,
        text: TextBranches,
        image: Any,
        generator: torch.Generator,
        report,
    ) -> tuple[torch.Tensor, Any]:
        """The condition latent ``[C, h, w]`` and its image: the user's, or one drawn by the keyframe
        U-Net at twice the video's latent size, decoded and re-encoded at the video's size."""
        movq = self.components.movq
        if image is None:
            factor = self.config.movq.scale_factor
            shape = (
                self.config.keyframe_unet.out_channels,
                2 * settings.height // factor,
                2 * settings.width // factor,
            )
            schedule = KEYFRAME_SAMPLER_11.schedule(settings.num_inference_steps)
            latent = generate_first_frame(
                self.components.keyframe_unet,
                text,
                shape,
                settings.key_frame_guidance_scale,
                schedule,
                generator,
                report("first frame"),
            )
            check_finite(latent, "first frame")
            image = decode_image(movq, latent, self.device_for(movq))
        latent = encode_image(movq, image, settings.width, settings.height, self.device_for(movq))
        return latent.to(text.context.device, torch.float32), image

    def decode_11(
        self, latents: torch.Tensor, settings: GenerationSettings11, progress: bool
    ) -> torch.Tensor:
        """Latents -> ``[T, 3, H, W]`` in [0, 1]. ``video``: the temporal MoVQ, by default on the
        reference's pieces of about four frames, each its own clip, or in windows of
        ``settings.decode_window`` frames cross-faded over ``decode_overlap`` (bounded memory, no
        seams; :func:`~fusionframes.models.movq.decode_clip`); ``image``: the image MoVQ one frame at a
        time (its attention norms read the first row's latent, so frames must not share a batch)."""
        from tqdm.auto import tqdm

        video = settings.decoder == "video"
        movq = self.video_movq if video else self.components.movq
        dtype, device = next(movq.parameters()).dtype, self.device_for(movq)
        latents = latents.to(device, dtype).contiguous(memory_format=memory_format_of(movq.decoder))
        if video:
            out = decode_clip(movq, latents, settings.decode_window, settings.decode_overlap).float()
        else:
            pieces = tqdm(latents.split(1), desc="decoding", disable=not progress, leave=False)
            out = torch.cat([movq.decode(piece).float() for piece in pieces])
        return torch.clip((out + 1.0) / 2.0, 0.0, 1.0)

    @torch.no_grad()
    def generate_11(
        self,
        settings: GenerationSettings11,
        image: Any,
        generator: torch.Generator,
        **delivery: Unpack[Delivery],
    ) -> VideoOutput:
        output_type, callback, progress = delivered(delivery)
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        def report(stage: str) -> Callable[[int, int], None] | None:
            """The stage's step callback; announces the stage (step 0) now, as it is about to start."""
            if callback is None:
                return None
            interpolation = stage.startswith("interpolation")
            callback(
                stage, 0, settings.interpolation_steps if interpolation else settings.num_inference_steps
            )
            return lambda step, total: callback(stage, step, total)

        self.warn_unknown_words(settings.prompt)
        keyframe_text, interpolation_text = self.text_branches(settings)
        lap("text")
        first, _ = self.first_frame_latent(settings, keyframe_text, image, generator, report)
        lap("first frame")
        controls = KeyframeControls(
            prompt_weight=settings.guidance_weight_prompt,
            image_weight=settings.guidance_weight_image,
            motion_score=settings.motion_score,
            noise_augmentation=settings.noise_augmentation,
        )
        latents = generate_keyframes_11(
            self.components.keyframe_unet,
            keyframe_text,
            first,
            settings.num_keyframes,
            controls,
            KEYFRAME_SAMPLER_11.schedule(settings.num_inference_steps),
            generator,
            report("keyframes"),
        )
        if settings.keep_first_frame:
            latents[0] = first
        check_finite(latents, "keyframes")
        lap("keyframes")
        schedule = INTERPOLATION_SAMPLER_11.schedule(settings.interpolation_steps)
        for index in range(FPS_PASSES[settings.fps]):
            stage = f"interpolation {index + 1}"
            latents = latents.to(interpolation_text.context.device)
            groups = interpolate_groups_11(
                self.components.interpolation_unet,
                interpolation_text,
                latents,
                PASS_SKIP_FRAMES[index],
                settings.interpolation_guidance_scale,
                schedule,
                generator,
                report(stage),
            )
            latents = scatter_frames(latents, groups)
            check_finite(latents, stage)
            lap(stage)
        if callback is not None:
            callback("decoding", 0, 1)
        video = check_finite(self.decode_11(latents, settings, progress), "decoding")
        if callback is not None:
            callback("decoding", 1, 1)
        lap("decoding")
        stride = 4 ** FPS_PASSES[settings.fps]
        return VideoOutput(
            frames=to_output_type(video, output_type, rounded=False),
            fps=self.config.sampling.base_fps * stride,
            keyframe_indices=list(range(0, video.shape[0], stride)),
            settings=settings,  # type: ignore[arg-type]  # same interface (to_dict, num_frames)
            timings=timings,
        )


__all__ = [
    "DECODERS",
    "DEFAULTS_11",
    "MOTION_SCORES",
    "GenerationSettings11",
    "KandinskyVideo11Pipeline",
    "is_kandinsky_11",
    "validate_settings_11",
]
