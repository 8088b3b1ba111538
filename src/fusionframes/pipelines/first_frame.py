"""The first frame of a Kandinsky Video 1.1 video as an image: reading it, fitting it, MoVQ round trip.

The keyframe U-Net is conditioned on the image-MoVQ latent of the first frame at the video's size.
That frame is either the user's image (image-to-video) or the U-Net's own image-mode sample, which the
reference draws at twice the video's latent size, decodes to an 8-bit image and encodes again after
fitting it to the video's size. Both paths fit the image the reference's way: scale it down (never up)
until it just covers ``width x height``, then crop the centre; an image smaller than the video is not
enlarged, so the crop pads it with black (as released; :func:`check_image` warns about it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# Modes PIL converts to 8-bit RGB without losing meaning; 32-bit integer and float images do not.
IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")


def check_image(image: Any, width: int | None = None, height: int | None = None, name: str = "image"):
    """A PIL image from a PIL image or a path; one-line errors for unreadable files and unusable modes."""
    from PIL import Image, UnidentifiedImageError

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


def fit_to_size(image, width: int, height: int):
    """The reference's fit: shrink by ``max(1, min(w / width, h / height))`` (PIL's default filter),
    then crop ``width x height`` from the centre (PIL rounds the fractional box)."""
    factor = max(1.0, min(image.size[0] / width, image.size[1] / height))
    image = image.resize((round(image.size[0] / factor), round(image.size[1] / factor)))
    w, h = image.size
    return image.crop(((w - width) / 2, (h - height) / 2, (w + width) / 2, (h + height) / 2))


def image_to_tensor(image) -> torch.Tensor:
    """An image as ``[3, H, W]`` in [-1, 1] (RGB, the uint8 values over 255, as torchvision's ToTensor)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    array = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return 2.0 * array.float().div(255) - 1.0


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype


@torch.no_grad()
def encode_image(
    movq: nn.Module, image, width: int, height: int, device: torch.device | None = None
) -> torch.Tensor:
    """An image -> its MoVQ latent ``[C, height / f, width / f]`` (float32) after :func:`fit_to_size`."""
    param_device, dtype = _device_dtype(movq)
    pixels = image_to_tensor(fit_to_size(image, width, height))[None]
    return movq.encode(pixels.to(device or param_device, dtype))[0].float()


@torch.no_grad()
def decode_image(movq: nn.Module, latent: torch.Tensor, device: torch.device | None = None):
    """A latent ``[1, C, h, w]`` -> an RGB PIL image: clipped to [0, 1], times 255, truncated to uint8
    (as the reference does it; the truncation is part of what the keyframes are conditioned on)."""
    from PIL import Image

    param_device, dtype = _device_dtype(movq)
    decoded = movq.decode(latent.to(device or param_device, dtype)).float()
    pixels = torch.clip((decoded + 1.0) / 2.0, 0.0, 1.0)
    array = (255.0 * pixels.permute(0, 2, 3, 1).cpu().numpy()[0]).astype(np.uint8)
    return Image.fromarray(array)
