"""The first frame of Kandinsky Video 1.1 between pixels and latents, exactly as its pipeline does it.

1.1 samples the first frame at ``(height // 4, width // 4)`` latents, twice the video's latent size
with the released MoVQ, decodes it to an 8-bit image, and encodes that image again at the video size
(the same path a user's image takes for image-to-video): resize so the image covers the target
(never enlarged), centre-crop with PIL's rounding, and scale to [-1, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fusionframes.models.movq import MoVQ
from fusionframes.pipelines.acceleration import memory_format_of

# Modes PIL converts to 8-bit RGB without losing meaning; 32-bit integer and float images do not.
IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")


def check_image(
    image: Any, width: int | None = None, height: int | None = None, name: str = "image"
) -> Image.Image:
    """A PIL image from a PIL image or a path; one-line errors for unreadable files and unusable modes,
    and a warning for an image smaller than the video (not enlarged: the crop pads it with black)."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                opened.load()
                image = opened.copy()
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{name}: cannot read {str(image)!r} as an image ({error})") from None
    if not isinstance(image, Image.Image):
        raise ValueError(
            f"{name}: must be a PIL image or the path of an image file, got {type(image).__name__}"
        )
    if image.mode not in IMAGE_MODES:
        raise ValueError(
            f"{name}: mode {image.mode!r} is not an 8-bit image; allowed: {', '.join(IMAGE_MODES)}"
        )
    if min(image.size) < 1:
        raise ValueError(f"{name}: is empty ({image.size[0]}x{image.size[1]})")
    if width is not None and height is not None and (image.size[0] < width or image.size[1] < height):
        warnings.warn(
            f"{name}: {image.size[0]}x{image.size[1]} is smaller than the video ({width}x{height}); "
            "as in the reference it is not enlarged, so the centre crop pads it with black",
            stacklevel=2,
        )
    return image


def to_uint8_image(decoded: torch.Tensor) -> Image.Image:
    """A decoded ``[3, H, W]`` image in about [-1, 1] -> RGB PIL image (clipped, x255, truncated)."""
    pixels = torch.clip((decoded.float() + 1.0) / 2.0, 0.0, 1.0)
    array = (255.0 * pixels.permute(1, 2, 0).cpu().numpy()).astype(np.uint8)
    return Image.fromarray(array)


def movq_inputs(movq: MoVQ, x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """``x`` on ``device`` (None: where the MoVQ's weights are; under offload the weights are in CPU
    memory or on meta, so the pipeline passes its device), in the MoVQ's dtype and, for a decoder
    stored channels-last, that layout (mixed layouts are slower than either)."""
    weight = next(movq.parameters())
    x = x.to(device=device if device is not None else weight.device, dtype=weight.dtype)
    return x.contiguous(memory_format=memory_format_of(movq.decoder))


def decode_image(movq: MoVQ, latent: torch.Tensor, device: torch.device | None = None) -> Image.Image:
    """``[1, z, h, w]`` latent -> PIL image (the reference ``decode_image``)."""
    with torch.no_grad():
        return to_uint8_image(movq.decode(movq_inputs(movq, latent, device))[0])


def fit_for_encoding(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize (PIL's default filter) so the image covers ``width`` x ``height``, then centre-crop.

    As in the reference, an image smaller than the target is not enlarged: the crop then reaches
    outside it and PIL fills that border with black.
    """
    image = image.convert("RGB") if image.mode != "RGB" else image
    reduce = max(1.0, min(image.size[0] / width, image.size[1] / height))
    image = image.resize((round(image.size[0] / reduce), round(image.size[1] / reduce)))
    w, h = image.size
    return image.crop(((w - width) / 2, (h - height) / 2, (w + width) / 2, (h + height) / 2))


def fitted_picture(image: Any, width: int, height: int) -> np.ndarray:
    """The image as the video takes it (:func:`fit_for_encoding`), uint8 ``[height, width, 3]``."""
    return np.asarray(fit_for_encoding(check_image(image).convert("RGB"), width, height))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``[3, H, W]`` in [-1, 1] (torchvision's ToTensor, then 2x - 1)."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return 2.0 * (array.permute(2, 0, 1).float() / 255.0) - 1.0


def encode_image(
    movq: MoVQ, image: Image.Image, width: int, height: int, device: torch.device | None = None
) -> torch.Tensor:
    """PIL image -> ``[z, height / f, width / f]`` latent (the reference ``encode_image``); ``device``
    as in :func:`decode_image`."""
    if width < 1 or height < 1:
        raise ValueError(f"width, height: must be >= 1, got {width}x{height}")
    pixels = image_to_tensor(fit_for_encoding(image, width, height))[None]
    weight = next(movq.parameters())
    with torch.no_grad():
        return movq.encode(pixels.to(device=device or weight.device, dtype=weight.dtype))[0]
