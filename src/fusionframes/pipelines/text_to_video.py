"""Prompt -> video: text encoding, keyframes, interpolation passes, chunked decoding.

Every option is validated by :func:`validate_settings` against the model's config before any weights
are loaded, so a typo costs milliseconds, not a model load.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch

from fusionframes.components import ModelComponents
from fusionframes.config import ModelConfig, check_layout_prior_strength
from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.diffusion.samplers import check_clamp_support, check_scheduler
from fusionframes.diffusion.sampling import denoise_steps
from fusionframes.layout_prior.start import draws_objects, keyframe_start, objects_start
from fusionframes.lora.pipeline import LoraMixin
from fusionframes.pipelines.acceleration import (
    compile_components,
    to_channels_last,
    use_channels_last,
    validate_compile,
)
from fusionframes.pipelines.branch_split import split_branches as split_guidance_branches
from fusionframes.pipelines.builtin11 import (
    align_layout,
    check_decoder,
    check_image_start,
    decode_frames,
    image_keyframe_unet,
    image_latent,
    image_name,
    picture_objects,
)
from fusionframes.pipelines.first_frame import fitted_picture
from fusionframes.pipelines.moved_objects import moved_start
from fusionframes.pipelines.offload import Placement, validate_offload
from fusionframes.pipelines.outputs import (
    Delivery,
    PlayableOutput,
    ProgressCallback,
    delivered,
    split_delivery,
)
from fusionframes.pipelines.stages import (
    InterpolationConditioning,
    KeyframeConditioning,
    Start,
    TextBranches,
    generate_keyframes,
    interpolate_pass,
    progress_bar,
)
from fusionframes.runtime import (
    check_finite,
    finite_number,
    resolve_decoder_dtype,
    resolve_device,
    resolve_dtype,
)
from fusionframes.text.conditioning import TextConditioner, null_context
from fusionframes.text.quantization import quantize_text_encoder, validate_text_quantization
from fusionframes.text.tokenizer import words

logger = logging.getLogger(__name__)

FPS_PASSES = {"low": 0, "medium": 1, "high": 2}
PASS_SKIP_FRAMES = (3, 1)  # the skip-frames code the interpolation U-Net gets in pass 1 and pass 2
MIN_SIZE, MAX_SIZE = 64, 2048


def video_frames(num_keyframes: int, fps: str) -> int:
    """N, 4N-3 or 16N-15 frames from N keyframes for fps low, medium, high."""
    n = num_keyframes
    for _ in range(FPS_PASSES[fps]):
        n = 4 * n - 3
    return n


class GenerationCancelled(RuntimeError):
    """Raised from a progress callback to stop generation between denoising steps."""


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that determines a video; stored as its metadata so a result can be re-made."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    fps: str
    num_inference_steps: int
    interpolation_steps: int
    guidance_scale: float
    interpolation_guidance_scale: float
    seed: int | None  # None: the caller passed its own torch.Generator
    num_keyframes: int
    scheduler: str = "ddpm"
    decode_chunk_size: int = 4
    layout_prior_strength: float = 1.0  # used only by models with a layout prior
    decoder: str = "image"  # "video": the temporal MoVQ (models with one; see pipelines.builtin11)
    image: str | None = None  # the first frame's file, for image-to-video (recorded, not read again)
    image_strength: float = 1.0  # with an image: keyframes start from it held still, redrawn at this
    image_start: str = "moved"  # with an image and a layout prior: "moved" (the image's own objects moved
    # along the prior's tracks for the text), "objects" (the prior drawing the image's objects along those
    # tracks), "layout" (the prior's drawing moved onto the image; also where no object is found or the
    # prior has no labelled object slots) or "image" (held still, redrawn at image_strength)

    @property
    def num_frames(self) -> int:
        return video_frames(self.num_keyframes, self.fps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    return int(value)


def validate_size(value: Any, name: str, multiple: int) -> int:
    value = _int(value, name)
    if not MIN_SIZE <= value <= MAX_SIZE or value % multiple:
        raise ValueError(
            f"{name}: {value} is not allowed; use a multiple of {multiple} between {MIN_SIZE} and {MAX_SIZE}"
        )
    return value


def resolve_seed(seed: Any, draw: bool) -> int | None:
    """A checked seed; without one a seed is drawn at random (``draw``) so the result can be re-made."""
    if seed is None and draw:
        seed = secrets.randbelow(2**31)
    if seed is not None:
        seed = _int(seed, "seed")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed: must be between 0 and 2**63 - 1, got {seed}")
    return seed


def validate_settings(
    config: ModelConfig,
    prompt: str,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: str | None = None,
    num_inference_steps: int | None = None,
    interpolation_steps: int | None = None,
    guidance_scale: float | None = None,
    interpolation_guidance_scale: float | None = None,
    seed: int | None = None,
    num_keyframes: int | None = None,
    scheduler: str | None = None,
    decode_chunk_size: int = 4,
    draw_seed: bool = True,
    layout_prior_strength: float | None = None,
    decoder: str | None = None,
    image: Any = None,
    image_strength: float = 1.0,
    image_start: str = "moved",
) -> GenerationSettings:
    """Check every option against ``config`` and fill the gaps from the model's sampling defaults.

    Without a ``seed`` one is drawn at random (``draw_seed``) and recorded, so any result can be re-made.
    """
    defaults = config.sampling
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt: must be a non-empty string")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt: must be a string or None, got {type(negative_prompt).__name__}")
    if negative_prompt is not None and not negative_prompt.strip():
        negative_prompt = None
    fps = fps or defaults.fps
    if fps not in FPS_PASSES:
        raise ValueError(f"fps: unknown {fps!r}; allowed: {', '.join(FPS_PASSES)}")
    steps = _int(
        num_inference_steps if num_inference_steps is not None else defaults.num_inference_steps,
        "num_inference_steps",
    )
    if steps < 1:
        raise ValueError(f"num_inference_steps: must be >= 1, got {steps}")
    interp_steps = interpolation_steps if interpolation_steps is not None else defaults.interpolation_steps
    interp_steps = _int(interp_steps if interp_steps is not None else steps, "interpolation_steps")
    if interp_steps < 1:
        raise ValueError(f"interpolation_steps: must be >= 1, got {interp_steps}")
    scheduler = check_scheduler(scheduler or defaults.scheduler)
    for unet in (config.keyframe_unet, config.interpolation_unet):
        check_clamp_support(scheduler, unet.training.thresholding)
    keyframes = _int(
        num_keyframes if num_keyframes is not None else config.keyframe_unet.num_frames, "num_keyframes"
    )
    if keyframes < 2:
        raise ValueError(f"num_keyframes: must be >= 2, got {keyframes}")
    strength = layout_prior_strength if layout_prior_strength is not None else defaults.layout_prior_strength
    seed = resolve_seed(seed, draw_seed)
    return GenerationSettings(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=validate_size(width if width is not None else defaults.width, "width", config.pixel_multiple),
        height=validate_size(
            height if height is not None else defaults.height, "height", config.pixel_multiple
        ),
        fps=fps,
        num_inference_steps=steps,
        interpolation_steps=interp_steps,
        guidance_scale=finite_number(
            guidance_scale if guidance_scale is not None else defaults.guidance_scale, "guidance_scale", 0.0
        ),
        interpolation_guidance_scale=finite_number(
            interpolation_guidance_scale
            if interpolation_guidance_scale is not None
            else defaults.interpolation_guidance_scale,
            "interpolation_guidance_scale",
            0.0,
        ),
        seed=seed,
        num_keyframes=keyframes,
        scheduler=scheduler,
        decode_chunk_size=_int(decode_chunk_size, "decode_chunk_size"),
        layout_prior_strength=check_layout_prior_strength(finite_number(strength, "layout_prior_strength")),
        decoder=check_decoder(config, decoder),
        image=image_name(config, image),
        image_strength=check_layout_prior_strength(finite_number(image_strength, "image_strength")),
        image_start=check_image_start(image_start),
    )


@dataclass
class VideoOutput(PlayableOutput):
    """Frames plus what is needed to play and reproduce them."""

    frames: Any  # list[PIL.Image] | np.ndarray [T, H, W, 3] uint8 | torch.Tensor [T, 3, H, W] in [0, 1]
    fps: float
    keyframe_indices: list[int]
    settings: GenerationSettings
    timings: dict[str, float] = field(default_factory=dict)


def to_output_type(video: torch.Tensor, output_type: str, rounded: bool = True):
    """``[T, 3, H, W]`` float in [0, 1] -> the requested representation. 8-bit frames are rounded, or
    (``rounded`` False) truncated like torchvision's ``ToPILImage`` on float input, as 1.1's reference
    makes its frames."""
    if output_type == "pt":
        return video.cpu()
    scaled = video.permute(0, 2, 3, 1).cpu().numpy() * 255.0
    array = (scaled.round() if rounded else scaled).astype(np.uint8)
    if output_type == "np":
        return array
    from PIL import Image

    return [Image.fromarray(frame) for frame in array]


def check_load_options(device: Any, dtype: str, options: dict[str, Any]) -> None:
    """Refuse a bad device, precision or memory option before any weights are read."""
    resolved = resolve_device(device)
    resolve_decoder_dtype(options.get("decoder_dtype"), resolve_dtype(dtype, resolved).dtype)
    validate_compile(options.get("compile"), validate_offload(options.get("offload"), resolved))
    validate_text_quantization(options.get("text_quantization"))
    if not isinstance(options.get("split_branches", False), bool):
        raise ValueError(f"split_branches: must be True or False, got {options['split_branches']!r}")


def pipeline_class_for(config: ModelConfig, requested: type, model: Any = None) -> type:
    """The pipeline class for a model of ``config`` when ``requested`` was asked for: a 1.1 model
    needs :class:`KandinskyVideo11Pipeline` (or a subclass), any other model not that one."""
    from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline, is_kandinsky_11

    if is_kandinsky_11(config):
        if issubclass(requested, KandinskyVideo11Pipeline):
            return requested
        if requested is TextToVideoPipeline:
            return KandinskyVideo11Pipeline
        raise ValueError(
            f"model: {str(model)!r} is a Kandinsky Video 1.1 model, which {requested.__name__} cannot "
            "run; load it with KandinskyVideo11Pipeline.from_pretrained"
        )
    if issubclass(requested, KandinskyVideo11Pipeline):
        raise ValueError(
            f"model: {str(model)!r} is not a Kandinsky Video 1.1 model; load it with "
            "TextToVideoPipeline.from_pretrained"
        )
    return requested


class TextToVideoPipeline(LoraMixin):
    """Text-to-video with any FusionFrames model (the built-in one, a folder, or the released weights)."""

    def __init__(
        self,
        components: ModelComponents,
        device: str | torch.device | None = "cpu",
        dtype: str = "auto",
        text_conditioner: TextConditioner | None = None,
        release_text_encoder: bool = False,
        offload: str = "none",
        compile: bool | str = False,
        channels_last: bool | None = None,
        text_quantization: str = "none",
        decoder_dtype: str = "auto",
        split_branches: bool = False,
    ) -> None:
        """``offload``: none | model | sequential (GPU only, see :mod:`.offload`); ``compile``: False |
        True/"unets" | "all" (adds the MoVQ decoder); ``channels_last``: None = auto (MoVQ decoder on CPU);
        ``text_quantization``: none | int8 (the T5's linear weights in int8; see
        :mod:`fusionframes.text.quantization`); ``decoder_dtype``: the MoVQs' precision, auto = float32
        beside float16 U-Nets, else the U-Nets' (:func:`~fusionframes.runtime.resolve_decoder_dtype`);
        ``split_branches``: each guidance branch of a U-Net call as its own call (the chunked
        interpolation: a stage's activation peak / 2 or 3, same video; :mod:`.branch_split`)."""
        if not isinstance(split_branches, bool):
            raise ValueError(f"split_branches: must be True or False, got {split_branches!r}")
        self.text_quantization = validate_text_quantization(text_quantization)
        self.device = resolve_device(device)
        self.precision = resolve_dtype(dtype, self.device)
        self.decoder_precision = resolve_decoder_dtype(decoder_dtype, self.precision.dtype)
        logger.info("precision: %s (%s)", self.precision.dtype, self.precision.reason)
        self.placement = Placement(offload, self.device)
        self.compiled = validate_compile(compile, self.placement.mode)
        self.channels_last = use_channels_last(self.device, channels_last)
        if self.channels_last:
            to_channels_last(components.movq.decoder)
        self.components = self.placement.place_components(
            components, self.precision.dtype, self.decoder_precision.dtype
        ).eval()
        compile_components(self.components, self.compiled)
        self.split_branches = split_branches
        if split_branches:
            split_guidance_branches(self.components)
        self.config = components.config
        self.text = text_conditioner
        if text_conditioner is not None:
            self.placement.place(text_conditioner.encoder)
        self.release_text_encoder = release_text_encoder
        self._warned_words: set[str] = set()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str = "auto",
        cache_dir: str | Path | None = None,
        text_encoder: str | Path | None = None,
        **kwargs: Any,
    ) -> TextToVideoPipeline:
        """``model``: None/"builtin", "kandinsky-video-1.0" / "kandinsky-video-1.1" (Hub), a model
        folder, or a folder of the 1.1 released files; ``text_encoder``: a T5 folder or Hub id to use
        instead of the model's. As diffusers' ``DiffusionPipeline.from_pretrained`` picks the pipeline
        class from the model, a Kandinsky Video 1.1 model gives a :class:`KandinskyVideo11Pipeline`
        (a subclass: ``pipe(prompt, image=..., motion=...)``). Every option is checked before loading."""
        from fusionframes.io.official_kv11 import load_release_or_folder

        check_load_options(device, dtype, kwargs)
        components = load_release_or_folder(model, cache_dir, text_encoder)
        target = pipeline_class_for(components.config, cls, model)
        return target(components, device=device, dtype=dtype, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype

    # -- text ------------------------------------------------------------------------------------

    def _text_conditioner(self) -> TextConditioner:
        if self.text is None:
            text_dtype = self.dtype if self.dtype != torch.float16 else torch.float32
            if self.device.type == "cuda" and self.dtype == torch.float16 and torch.cuda.is_bf16_supported():
                text_dtype = torch.bfloat16  # T5 overflows in float16
            self.text = TextConditioner.from_pretrained(
                self.components.text_encoder,
                self.components.projection,
                max_length=self.config.text.max_length,
                dtype=text_dtype,
            )
            quantize_text_encoder(self.text.encoder, self.text_quantization)
            self.placement.place(self.text.encoder)
        return self.text

    def warn_unknown_words(self, prompt: str) -> set[str]:
        """Models trained on a small vocabulary say which prompt words they never saw (once per word)."""
        vocabulary = self.components.vocabulary
        if not vocabulary:
            return set()
        unknown = words(prompt) - vocabulary
        new = unknown - self._warned_words
        if new:
            self._warned_words |= new
            warnings.warn(
                f"prompt: the model {self.components.name!r} never saw the word(s) {sorted(new)} "
                "in training; "
                "they will be ignored or misread (`fusionframes models` lists its vocabulary)",
                stacklevel=3,
            )
        return unknown

    @torch.no_grad()
    def encode_prompts(
        self, prompt: str, negative_prompt: str | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Context for the prompt and for the unconditional branch (negative prompt or null embedding).

        Prompt and negative prompt are encoded in one batch so both are trimmed to the same length;
        each keeps its own attention mask.
        """
        text = self._text_conditioner()
        prompts = [prompt] if negative_prompt is None else [prompt, negative_prompt]
        context, mask = text(prompts)
        if self.release_text_encoder:
            self.text = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if negative_prompt is not None:
            return context[:1], mask[:1], context[1:], mask[1:]
        uncond, uncond_mask = null_context(self.components.keyframe_null, 1, context.shape[1])
        return context, mask, uncond, uncond_mask

    # -- generation ------------------------------------------------------------------------------

    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> VideoOutput:
        """Generate one video; ``options`` are those of :func:`validate_settings` (width, height, fps,
        num_inference_steps, guidance_scale, seed, scheduler, ...), each defaulting to the model's.
        ``generator`` wins over ``seed``; with neither, a random seed is drawn and recorded in
        ``output.settings.seed`` so the result can be reproduced. ``layout_prior_strength`` (models with
        a layout prior): how much of the keyframe sampling runs from the prior's layout, in (0, 1].
        ``output_type``, ``callback`` and ``progress``: see :class:`~.outputs.Delivery`."""
        delivery = split_delivery(options)
        settings = validate_settings(
            self.config, prompt, negative_prompt, draw_seed=generator is None, **options
        )
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(settings.seed)
        return self.generate(settings, generator, **delivery)

    @torch.no_grad()
    def keyframe_layout(
        self, context: torch.Tensor, mask: torch.Tensor, num_frames: int, latent_shape: tuple[int, int, int]
    ) -> torch.Tensor | None:
        """The layout prior's keyframe latents for the prompt, where keyframe sampling starts; None for
        a model without a prior (see :mod:`fusionframes.layout_prior.start`)."""
        return keyframe_start(self.components.layout_prior, context, mask, num_frames, latent_shape)

    def parameterisations(self) -> tuple[Parameterisation, Parameterisation]:
        """(keyframe, interpolation): how each U-Net was trained, as its sampling parameterisation."""
        return (
            Parameterisation(self.config.keyframe_unet.training),
            Parameterisation(self.config.interpolation_unet.training),
        )

    @torch.no_grad()
    def video_latents(
        self,
        settings: GenerationSettings,
        generator: torch.Generator,
        callback: ProgressCallback | None = None,
        progress: bool = True,
        *,
        anchor: torch.Tensor | None = None,
        timings: dict[str, float] | None = None,
        image: Any = None,
    ) -> torch.Tensor:
        """The text -> keyframes -> interpolation chain every 1.0-layout video takes (text-to-video,
        image-to-video with a built-in 1.1 part, movie scenes): latents ``[T, C, h, w]``. ``anchor``: a
        clean latent the first keyframe is pinned to (a movie scene continuing the previous one);
        ``image`` (a PIL image or path; models with an image-to-video U-Net): the first frame the
        keyframes continue (see :mod:`fusionframes.pipelines.builtin11`); otherwise keyframe sampling
        starts from the model's layout prior, if it has one. ``timings`` collects each stage's seconds."""
        import time

        timings = {} if timings is None else timings

        def report(stage: str, total: int) -> Callable[[int, int], None] | None:
            if callback is None:
                return progress_bar(stage, progress)
            callback(stage, 0, total)
            return progress_bar(stage, progress, lambda step, steps: callback(stage, step, steps))

        start = time.perf_counter()
        self.warn_unknown_words(settings.prompt)
        text = TextBranches(*self.encode_prompts(settings.prompt, settings.negative_prompt))
        timings["text"] = time.perf_counter() - start
        keyframe_param, interpolation_param = self.parameterisations()
        factor = self.config.movq.scale_factor
        latent_shape = (
            self.config.keyframe_unet.num_channels,
            settings.height // factor,
            settings.width // factor,
        )
        n, steps = settings.num_keyframes, settings.num_inference_steps
        start = time.perf_counter()
        unet, first, init = self.components.keyframe_unet, None, None
        strength = settings.layout_prior_strength
        if image is not None:
            first = image_latent(self.components, image, settings.width, settings.height)
            first = first.to(text.context.device)
            unet = image_keyframe_unet(self.components, first, generator)
            prior = self.components.layout_prior
            picture, seen = None, []
            if settings.image_start in ("objects", "moved") and draws_objects(prior):
                picture = fitted_picture(image, settings.width, settings.height)
                seen = picture_objects(picture)
            if seen and settings.image_start == "moved":
                init = moved_start(prior, self.components.movq, text.context, text.mask, picture, seen, n)
            if init is not None:
                init = init.to(first.device)
            elif seen:
                init = objects_start(prior, text.context, text.mask, n, latent_shape, seen).to(first.device)
            elif settings.image_start != "image" and prior is not None:
                layout = self.keyframe_layout(text.context, text.mask, n, latent_shape)
                init = align_layout(layout.to(first.device), first)
            else:
                init, strength = first.expand(n, -1, -1, -1), settings.image_strength
        elif anchor is None:
            init = self.keyframe_layout(text.context, text.mask, n, latent_shape)
        run = denoise_steps(strength, steps) if init is not None else None
        latents = generate_keyframes(
            unet,
            keyframe_param,
            KeyframeConditioning(text, settings.guidance_scale),
            (n, *latent_shape),
            keyframe_param.schedule(steps, run, settings.scheduler),
            generator,
            report("keyframes", steps),
            Start(init=init, anchor=anchor.to(self.device) if anchor is not None else None),
        )
        if first is not None:
            latents[0] = first.to(latents)  # the video starts on the given image
        check_finite(latents, "keyframes")
        timings["keyframes"] = time.perf_counter() - start

        cond = InterpolationConditioning(
            self.components.interpolation_null, settings.interpolation_guidance_scale
        )
        schedule = interpolation_param.schedule(settings.interpolation_steps, None, settings.scheduler)
        for index in range(FPS_PASSES[settings.fps]):
            stage = f"interpolation {index + 1}"
            start = time.perf_counter()
            latents = interpolate_pass(
                self.components.interpolation_unet,
                interpolation_param,
                cond,
                latents,
                PASS_SKIP_FRAMES[index],
                schedule,
                generator,
                report(stage, settings.interpolation_steps),
            )
            check_finite(latents, stage)
            timings[stage] = time.perf_counter() - start
        return latents

    @torch.no_grad()
    def generate(
        self,
        settings: GenerationSettings,
        generator: torch.Generator,
        *,
        image: Any = None,
        **delivery: Unpack[Delivery],
    ) -> VideoOutput:
        """One video for validated ``settings``: :meth:`video_latents`, then decoding (the image MoVQ
        in chunks, or the temporal one: ``settings.decoder``). ``image``: see :meth:`video_latents`."""
        import time

        output_type, callback, progress = delivered(delivery)
        timings: dict[str, float] = {}
        latents = self.video_latents(settings, generator, callback, progress, timings=timings, image=image)
        if callback is not None:
            callback("decoding", 0, 1)
        start = time.perf_counter()
        video = decode_frames(
            self.components, latents, settings.decoder, settings.decode_chunk_size, progress
        )
        check_finite(video, "decoding")
        timings["decoding"] = time.perf_counter() - start
        if callback is not None:
            callback("decoding", 1, 1)

        stride = 4 ** FPS_PASSES[settings.fps]
        return VideoOutput(
            frames=to_output_type(video, output_type),
            fps=self.config.sampling.base_fps * stride,
            keyframe_indices=list(range(0, video.shape[0], stride)),
            settings=settings,
            timings=timings,
        )
