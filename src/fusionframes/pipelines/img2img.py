"""Image-to-image and text-to-image with the keyframe U-Net run on single frames.

Animation redraws one frame at a time, so the keyframe U-Net serves as an image model: every row is a
one-frame video (``num_frames=1``, temporal position 0). The first animation frame is made the same
way from pure noise (text-to-image), so it and every later redraw come from the same model mode, and
one frame costs one frame's compute instead of a whole set of keyframes.

A redraw at ``strength`` s with a ``steps``-step cosine schedule encodes the image with MoVQ, noises
the latent to step index ``n - 1`` with ``n = round(s * steps)`` (at least 1 for s > 0), and runs the
official ancestral DDPM with classifier-free guidance for the remaining ``n`` steps. Strength 0
returns the input unchanged: no diffusion and no MoVQ round trip.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.diffusion.sampling import StepCallback, denoise_steps, sample_ddpm
from fusionframes.models import UNet3D
from fusionframes.pipelines.outputs import OUTPUT_TYPES
from fusionframes.pipelines.stages import KeyframeConditioning, TextBranches, decode_latents, frames_model
from fusionframes.pipelines.text_to_video import TextToVideoPipeline, to_output_type
from fusionframes.runtime import check_finite, finite_number

ImageLike = Any  # path, PIL image, uint8/float array [H, W, C], or float tensor [3, H, W] / [1, 3, H, W]


# Encoded prompt and unconditional branch (negative prompt or null embedding), ``[1, L, D]`` each.
PromptEmbedding = TextBranches


# --------------------------------------------------------------------------------------------- checks


def check_strength(value: Any, name: str = "strength") -> float:
    """A redraw strength in [0, 1] (0 keeps the image, 1 redraws from noise)."""
    value = finite_number(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be between 0 and 1, got {value:g}")
    return value


def check_steps(value: Any, name: str = "steps") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- images


def _pil_to_rgb(img: Any) -> Any:
    """Any Pillow mode -> RGB: transparency is composited on white, 16-bit grey is scaled, not clipped."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0 * 255.0
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max(initial=0.0) > 255.0 else 255.0
        return Image.fromarray((arr.clip(0, scale) / scale * 255.0).round().astype(np.uint8), "L").convert(
            "RGB"
        )
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _read_image(path: Path, name: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{name}: file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({error})") from None


def _array_to_tensor(arr: np.ndarray, name: str) -> torch.Tensor:
    """``[H, W]``, ``[H, W, 1|3|4]`` (uint8 or float in [0, 1]) -> ``[1, 3, H, W]`` float32."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an array [H, W], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        values = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(f"{name}: float arrays must hold finite values in [0, 1]")
    else:
        raise ValueError(f"{name}: expected uint8 or float values, got {arr.dtype}")
    if values.shape[-1] == 4:  # composite on white, as for RGBA files
        values = values[..., :3] * values[..., 3:] + (1.0 - values[..., 3:])
    elif values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)[None]


def _tensor_image(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [3, H, W] or [1, 3, H, W], got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{name}: tensor values must be finite and in [0, 1]")
    return x.detach().float().cpu()


def load_image(source: ImageLike, name: str = "image") -> torch.Tensor:
    """Read a picture into RGB ``[1, 3, H, W]`` float32 in [0, 1] (RGBA/LA/P/L/16-bit converted)."""
    from PIL import Image

    if isinstance(source, str | Path):
        source = _read_image(Path(source).expanduser(), name)
    if isinstance(source, Image.Image):
        return _array_to_tensor(np.asarray(_pil_to_rgb(source)), name)
    if isinstance(source, np.ndarray):
        return _array_to_tensor(source, name)
    if isinstance(source, torch.Tensor):
        return _tensor_image(source, name)
    raise ValueError(
        f"{name}: expected a file path, PIL image, numpy array or tensor, got {type(source).__name__}"
    )


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Centre-crop to the target aspect ratio, then resize (antialiased); exact sizes pass untouched."""
    _, _, h, w = image.shape
    if (h, w) == (height, width):
        return image
    target = width / height
    if w / h > target:  # too wide: crop the sides
        crop = max(1, round(h * target))
        image = image[..., :, (w - crop) // 2 : (w - crop) // 2 + crop]
    elif w / h < target:
        crop = max(1, round(w / target))
        image = image[..., (h - crop) // 2 : (h - crop) // 2 + crop, :]
    out = torch.nn.functional.interpolate(
        image, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
    return out.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------- diffusion


@dataclass(frozen=True)
class FrameRequest:
    """One single-frame sampling request: the prompt's text branches, the schedule's step count, the
    guidance weight, and the generator and step callback the sampler uses."""

    prompt: PromptEmbedding
    steps: int
    guidance_scale: float
    generator: torch.Generator | None
    callback: StepCallback | None


class FrameModel(ABC):
    """Text-to-image and image-to-image as animation calls them, whatever draws the frames: a model
    gives :meth:`draw` (one frame from pure noise) and :meth:`redraw` (frames over the last ``count``
    steps of the schedule): :class:`ImageToImagePipeline` for 1.0-layout models,
    :class:`~fusionframes.pipelines.image_mode11.ImageMode11` for 1.1 ones."""

    @abstractmethod
    def draw(self, request: FrameRequest, width: int, height: int) -> torch.Tensor:
        """One frame ``[1, 3, height, width]`` in [0, 1] from pure noise over all the steps."""

    @abstractmethod
    def redraw(self, image: torch.Tensor, request: FrameRequest, count: int) -> torch.Tensor:
        """``image [B, 3, H, W]`` in [0, 1] redrawn over the last ``count`` (>= 1) steps."""

    @torch.no_grad()
    def text_to_image(
        self,
        prompt: PromptEmbedding,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """One frame from pure noise with all ``steps`` steps -> ``[1, 3, H, W]`` in [0, 1]."""
        return self.draw(FrameRequest(prompt, steps, guidance_scale, generator, callback), width, height)

    @torch.no_grad()
    def image_to_image(
        self,
        image: torch.Tensor,
        prompt: PromptEmbedding,
        strength: float,
        steps: int,
        guidance_scale: float,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Redraw ``image [B, 3, H, W]`` over the last ``round(strength * steps)`` steps (at least one
        for a strength above 0); strength 0 returns the input itself."""
        count = denoise_steps(strength, steps)
        if count == 0:
            return image
        request = FrameRequest(prompt, steps, guidance_scale, generator, callback)
        return self.redraw(image, request, count).to(image.dtype)


class ImageToImagePipeline(FrameModel):
    """Single-frame text-to-image and image-to-image with the keyframe U-Net and MoVQ of a T2V model.

    Built on a loaded :class:`TextToVideoPipeline` (``ImageToImagePipeline(t2v)``), so nothing is
    loaded twice. Tensors are RGB ``[B, 3, H, W]`` in [0, 1]; H and W must be multiples of the
    model's ``pixel_multiple``.
    """

    def __init__(self, t2v: TextToVideoPipeline) -> None:
        self.t2v = t2v
        self.config = t2v.config
        self.device = t2v.device
        self._prompts: dict[tuple[str, str | None], PromptEmbedding] = {}

    @classmethod
    def from_pretrained(
        cls, model: str | Path | None = None, device: str | torch.device | None = "cpu", dtype: str = "auto"
    ) -> ImageToImagePipeline:
        return cls(TextToVideoPipeline.from_pretrained(model, device=device, dtype=dtype))

    @property
    def unet(self) -> UNet3D:
        return self.t2v.components.keyframe_unet

    @property
    def default_steps(self) -> int:
        return self.config.sampling.num_inference_steps

    @property
    def default_guidance(self) -> float:
        return self.config.sampling.guidance_scale

    # -- text / latents ---------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> PromptEmbedding:
        """Encode once per (prompt, negative) pair; animations reuse the result for every frame."""
        key = (prompt, negative_prompt)
        if key not in self._prompts:
            self.t2v.warn_unknown_words(prompt)
            self._prompts[key] = PromptEmbedding(*self.t2v.encode_prompts(prompt, negative_prompt))
        return self._prompts[key]

    def encode_all(self, prompts: Iterable[str], negative_prompt: str | None = None) -> None:
        """Encode every prompt of a schedule up front and release the text encoder once afterwards (when
        the T2V pipeline releases it), instead of reloading it for each new prompt."""
        release = self.t2v.release_text_encoder
        self.t2v.release_text_encoder = False
        try:
            for prompt in prompts:
                self.encode_prompt(prompt, negative_prompt)
        finally:
            self.t2v.release_text_encoder = release
        if release:
            self.t2v.text = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> MoVQ latents (float32)."""
        movq = self.t2v.components.movq
        dtype = next(movq.parameters()).dtype
        return movq.encode((images.to(self.device) * 2.0 - 1.0).to(dtype)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """MoVQ latents -> RGB in [0, 1] float32, on the CPU."""
        return decode_latents(self.t2v.components.movq, latents, chunk_size=4, progress=False).cpu()

    def _latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        factor = self.config.movq.scale_factor
        return (self.config.keyframe_unet.num_channels, height // factor, width // factor)

    def _check_size(self, width: int, height: int) -> None:
        multiple = self.config.pixel_multiple
        if width % multiple or height % multiple:
            raise ValueError(f"image: size {width}x{height} is not a multiple of {multiple}")

    # -- generation -------------------------------------------------------------------------------

    def redraw_latents(
        self,
        latents: torch.Tensor | None,
        shape: tuple[int, ...],
        prompt: PromptEmbedding,
        steps: int,
        run: int | None,
        guidance_scale: float,
        generator: torch.Generator | None,
        callback: StepCallback | None,
    ) -> torch.Tensor:
        """Single-frame sampling of ``shape`` ``[B, C, h, w]``: from pure noise over all ``steps``
        (``latents`` None), or ``latents`` noised to the level of the last ``run`` steps (a redraw).

        A redraw starts from a finished picture, so it walks the plain ``steps``-step cosine schedule
        (:meth:`Parameterisation.image_schedule`); every row is a one-frame video with its own noise.
        """
        param = Parameterisation(self.config.keyframe_unet.training)
        schedule = param.image_schedule(steps, run) if latents is not None else param.frame_schedule(steps)
        model = frames_model(self.unet, KeyframeConditioning(prompt, guidance_scale), 1, batch=shape[0])
        x = schedule.start(schedule.noise(tuple(shape), generator, self.device), latents)
        return sample_ddpm(param.denoiser(model, schedule), x, schedule, generator, callback)

    def draw(self, request: FrameRequest, width: int, height: int) -> torch.Tensor:
        self._check_size(width, height)
        shape = (1, *self._latent_shape(width, height))
        r = request
        latents = self.redraw_latents(
            None, shape, r.prompt, r.steps, None, r.guidance_scale, r.generator, r.callback
        )
        return self.decode(check_finite(latents, "text-to-image"))

    def redraw(self, image: torch.Tensor, request: FrameRequest, count: int) -> torch.Tensor:
        self._check_size(image.shape[-1], image.shape[-2])
        latents, r = self.encode(image), request
        latents = self.redraw_latents(
            latents, tuple(latents.shape), r.prompt, r.steps, count, r.guidance_scale, r.generator, r.callback
        )
        return self.decode(check_finite(latents, "image-to-image"))

    def __call__(
        self,
        prompt: str,
        image: ImageLike | None = None,
        strength: float = 0.6,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> Any:
        """One picture: ``image`` redrawn at ``strength`` with ``prompt``, or made from text alone.

        The image is centre-cropped and resized to ``width`` x ``height`` (default: its own size
        rounded down to the model's multiple, or the model's default size without an image).
        """
        from fusionframes.pipelines.text_to_video import validate_size

        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt: must be a non-empty string")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: unknown {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        strength = check_strength(strength)
        steps = check_steps(num_inference_steps if num_inference_steps is not None else self.default_steps)
        guidance = finite_number(
            guidance_scale if guidance_scale is not None else self.default_guidance, "guidance_scale", 0.0
        )
        picture = load_image(image) if image is not None else None
        multiple = self.config.pixel_multiple
        if width is None:
            own = picture.shape[-1] if picture is not None else self.config.sampling.width
            width = max(multiple, own // multiple * multiple)
        if height is None:
            own = picture.shape[-2] if picture is not None else self.config.sampling.height
            height = max(multiple, own // multiple * multiple)
        width = validate_size(width, "width", multiple)
        height = validate_size(height, "height", multiple)
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(
                secrets.randbelow(2**31) if seed is None else int(seed)
            )
        embedding = self.encode_prompt(prompt, negative_prompt)
        if picture is None:
            out = self.text_to_image(embedding, width, height, steps, guidance, generator)
        else:
            out = self.image_to_image(
                fit_image(picture, width, height), embedding, strength, steps, guidance, generator
            )
        return to_output_type(out, output_type)[0]
