"""Colour coherence for redraw animation: keep each frame's palette on the first frame's.

Repeated image-to-image redraws drift in colour (saturation creeps up, tints accumulate). Matching each
new frame's per-channel histogram to the reference frame's pulls it back without touching structure.
Images are RGB tensors ``[B, 3, H, W]`` or ``[3, H, W]`` with values in ``[0, 1]``.

Modes: ``lab`` matches L*, a*, b* (CIE 1976, sRGB D65) - separates brightness from colour, the usual
choice; ``hsv`` matches saturation, value and hue, the last on the circle (:func:`match_hue`; matching
hue as a plain number would send reds across the 0/1 seam); ``rgb`` matches the three channels
directly; ``None`` turns matching off.
"""

from __future__ import annotations

import math

import torch

COLOUR_MODES = ("lab", "hsv", "rgb", None)

# sRGB (D65) linear RGB -> XYZ and the D65 white point.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_DELTA = 6 / 29


def _channels(image: torch.Tensor, name: str) -> torch.Tensor:
    """Validates an RGB tensor and returns it as ``[B, 3, H, W]``."""
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an RGB tensor [B, 3, H, W] or [3, H, W], got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected floating point values in [0, 1], got {image.dtype}")
    return image if image.dim() == 4 else image[None]


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in ``[0, 1]`` -> CIE L*a*b* (L in 0..100), channel dim -3."""
    x = _channels(rgb, "rgb")
    xyz = _mix(_RGB_TO_XYZ, srgb_to_linear(x)) / _WHITE.to(x).view(1, 3, 1, 1)
    f = torch.where(xyz > _DELTA**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    lab = torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)
    return lab if rgb.dim() == 4 else lab[0]


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* -> sRGB, clamped to ``[0, 1]`` (out-of-gamut colours are clipped)."""
    x = _channels(lab, "lab")
    fy = (x[:, 0] + 16) / 116
    f = torch.stack([fy + x[:, 1] / 500, fy, fy - x[:, 2] / 200], dim=1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29)) * _WHITE.to(x).view(1, 3, 1, 1)
    rgb = linear_to_srgb(_mix(torch.linalg.inv(_RGB_TO_XYZ), xyz)).clamp(0, 1)
    return rgb if lab.dim() == 4 else rgb[0]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV with hue in ``[0, 1)`` (fraction of a turn), saturation and value in ``[0, 1]``."""
    x = _channels(rgb, "rgb")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    value, arg = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(
        arg == 0, ((g - b) / safe) % 6, torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    sat = torch.where(
        value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), torch.zeros_like(value)
    )
    hsv = torch.stack([hue, sat, value], dim=1)
    return hsv if rgb.dim() == 4 else hsv[0]


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV (hue as a fraction of a turn) -> RGB."""
    x = _channels(hsv, "hsv")
    h, s, v = x[:, 0] % 1.0, x[:, 1].clamp(0, 1), x[:, 2].clamp(0, 1)

    def channel(n: float) -> torch.Tensor:
        k = (n + h * 6) % 6
        return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    rgb = torch.stack([channel(5), channel(3), channel(1)], dim=1)
    return rgb if hsv.dim() == 4 else rgb[0]


def match_histogram(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Maps values of ``source`` so their distribution equals ``reference``'s (any shapes, flattened).

    Exact quantile matching: each value's mid-rank in the source (ties share one) is looked up, with
    linear interpolation, in the sorted reference.
    """
    flat = source.reshape(-1)
    ref = torch.sort(reference.reshape(-1).to(flat.dtype)).values
    if flat.numel() < 2 or ref.numel() < 1:
        return source.clone()
    ordered = torch.sort(flat).values
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    quantile = (below + upto - 1).to(flat.dtype) / (2 * (flat.numel() - 1))
    pos = quantile * (ref.numel() - 1)
    lo = pos.floor().long().clamp(0, ref.numel() - 1)
    hi = (lo + 1).clamp_max(ref.numel() - 1)
    frac = pos - lo.to(pos.dtype)
    return (ref[lo] + (ref[hi] - ref[lo]) * frac).reshape(source.shape)


def _circular_mean(hsv: torch.Tensor) -> torch.Tensor:
    """Saturation-weighted mean hue in turns (grey pixels have no meaningful hue)."""
    angle = hsv[0] * 2 * math.pi
    return torch.atan2((hsv[1] * torch.sin(angle)).sum(), (hsv[1] * torch.cos(angle)).sum()) / (2 * math.pi)


def match_hue(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Matches the hue distributions of two ``[3, H, W]`` HSV images on the circle.

    Each distribution is cut opposite its own circular mean, so it is unwrapped into one interval
    without splitting its bulk; the unwrapped hues are rank-matched and wrapped back.
    """
    mu_src, mu_ref = _circular_mean(source), _circular_mean(reference)
    unwrapped_src = (source[0] - mu_src + 0.5) % 1.0 - 0.5
    unwrapped_ref = (reference[0] - mu_ref + 0.5) % 1.0 - 0.5
    return (match_histogram(unwrapped_src, unwrapped_ref) + mu_ref) % 1.0


def _match_one(image: torch.Tensor, reference: torch.Tensor, mode: str) -> torch.Tensor:
    """Matches one ``[3, H, W]`` image to one ``[3, h, w]`` reference."""
    if mode == "rgb":
        return torch.stack([match_histogram(image[c], reference[c]) for c in range(3)]).clamp(0, 1)
    if mode == "lab":
        src, ref = rgb_to_lab(image), rgb_to_lab(reference)
        return lab_to_rgb(torch.stack([match_histogram(src[c], ref[c]) for c in range(3)]))
    src, ref = rgb_to_hsv(image), rgb_to_hsv(reference)
    hue = match_hue(src, ref)
    return hsv_to_rgb(torch.stack([hue, match_histogram(src[1], ref[1]), match_histogram(src[2], ref[2])]))


def match_colours(
    image: torch.Tensor, reference: torch.Tensor, mode: str | None = "lab", strength: float = 1.0
) -> torch.Tensor:
    """Pulls ``image``'s colour distribution onto ``reference``'s (see module docstring for modes).

    ``reference`` may hold one image for the whole batch or one per image; sizes may differ.
    ``strength`` blends the matched result with the input (0 = unchanged, 1 = fully matched).
    """
    if mode not in COLOUR_MODES:
        raise ValueError(f"mode: must be one of lab, hsv, rgb, None, got {mode!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength: must be in [0, 1], got {strength}")
    x, ref = _channels(image, "image"), _channels(reference, "reference")
    if ref.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"reference: batch must be 1 or {x.shape[0]}, got {ref.shape[0]}")
    if mode is None or strength == 0.0:
        return image.clone()
    work, ref = x.to(torch.float64), ref.to(torch.float64)
    matched = torch.stack([_match_one(work[i], ref[i % ref.shape[0]], mode) for i in range(x.shape[0])])
    out = (work + (matched - work) * strength).to(image.dtype)
    return out if image.dim() == 4 else out[0]


def add_noise(
    image: torch.Tensor,
    amount: float,
    generator: torch.Generator | int | None = None,
    *,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Adds Gaussian noise of standard deviation ``amount`` (in image units) before a redraw.

    Fresh grain gives the denoiser detail to rebuild; without it repeated warps blur the animation.
    ``generator`` (a ``torch.Generator`` or an int seed) makes it reproducible; ``clamp`` keeps the
    value range (``None`` for latents or other unbounded data).
    """
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
        or amount < 0
    ):
        raise ValueError(f"amount: must be a finite number >= 0, got {amount!r}")
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ValueError(f"image: expected a floating point tensor, got {type(image).__name__}")
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator(device=image.device).manual_seed(generator)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    out = image + amount * noise
    return out.clamp(*clamp) if clamp is not None else out
