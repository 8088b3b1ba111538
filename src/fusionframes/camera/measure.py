"""Motion estimators for checking camera moves on rendered frames (tests and acceptance checks).

* :func:`estimate_translation` - global phase correlation with a sub-pixel peak, refined once on the
  shift-compensated pair (the parabola fit is least biased near zero shift).
* :func:`estimate_similarity` - zoom, angle and shift: local shifts of windowed tiles (phase
  correlation) fitted by weighted least squares to ``p' = c + zoom Rot(angle) (p - c) + t``; the pair is
  re-aligned with the current fit and the residual re-measured a few times, so the final local shifts
  are small and the estimate converges well below a pixel.

Results use the :class:`~fusionframes.camera.warp.CameraMotion` convention (content right/down
positive, angle counter-clockwise positive), so they compare directly with the requested motion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fusionframes.camera.warp import CameraMotion, pixel_grid, sample, target_coords

ImageLike = np.ndarray | torch.Tensor


def to_gray(image: ImageLike) -> np.ndarray:
    """Float64 ``[H, W]`` channel mean of ``[H, W]``, ``[H, W, C]``, ``[C, H, W]`` or ``[1, C, H, W]``."""
    arr = (
        image.detach().cpu().double().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image, np.float64)
    )
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3:
        channels_first = arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4)
        arr = arr.mean(axis=0) if channels_first or isinstance(image, torch.Tensor) else arr.mean(axis=-1)
    if arr.ndim != 2:
        raise ValueError(
            f"image: expected [H, W], [H, W, C], [C, H, W] or [1, C, H, W], got {np.shape(image)}"
        )
    return arr


def _hann(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w))


def _peak_offset(m: float, c: float, p: float) -> float:
    """Sub-sample vertex through (-1, m), (0, c), (1, p): Gaussian (log) fit, parabola as fallback.

    The low-passed correlation peak is close to a Gaussian, for which the log fit is unbiased.
    """
    if m > 0 and p > 0 and c > 0:
        m, c, p = np.log(m), np.log(c), np.log(p)
    denom = m - 2 * c + p
    return 0.0 if abs(denom) < 1e-12 else float(np.clip(0.5 * (m - p) / denom, -0.5, 0.5))


def phase_correlation(
    a: np.ndarray, b: np.ndarray, *, window: bool = True, lowpass: float | None = 0.15
) -> tuple[float, float, float]:
    """Shift ``(dx, dy)`` with ``b(x) ~ a(x - d)`` and the correlation peak height (confidence, 0..1).

    The whitened cross-power spectrum is weighted by a Gaussian of ``lowpass`` cycles/pixel: the phase
    of the highest frequencies is the part most distorted by interpolation and noise, and dropping it
    removes the pull of the estimate toward whole pixels.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a/b: expected two 2D arrays of equal shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    win = _hann(h, w) if window else 1.0
    fa = np.fft.fft2((a - a.mean()) * win)
    fb = np.fft.fft2((b - b.mean()) * win)
    cross = np.conj(fa) * fb
    cross /= np.abs(cross) + 1e-12 * np.abs(cross).max() + 1e-30
    if lowpass is not None:
        ky, kx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        gauss = np.exp(-(kx**2 + ky**2) / (2 * lowpass**2))
        cross *= gauss / gauss.mean()
    surface = np.fft.ifft2(cross).real
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    peak = float(surface[iy, ix])
    dx = ix + _peak_offset(surface[iy, ix - 1], peak, surface[iy, (ix + 1) % w])
    dy = iy + _peak_offset(surface[iy - 1, ix], peak, surface[(iy + 1) % h, ix])
    dx = dx - w if dx > w / 2 else dx
    dy = dy - h if dy > h / 2 else dy
    return float(dx), float(dy), peak


def _fourier_shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Moves content by ``(dx, dy)`` px (periodic), exact for band-limited images."""
    h, w = image.shape
    ky, kx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2j * np.pi * (kx * dx + ky * dy))).real


def estimate_translation(a: ImageLike, b: ImageLike) -> tuple[float, float]:
    """Global content shift ``(dx, dy)`` in pixels from frame ``a`` to frame ``b``."""
    ga, gb = to_gray(a), to_gray(b)
    dx, dy, _ = phase_correlation(ga, gb)
    rx, ry, _ = phase_correlation(ga, _fourier_shift(gb, -dx, -dy))
    return dx + rx, dy + ry


def fit_similarity(
    points: np.ndarray, moved: np.ndarray, centre: tuple[float, float], weights: np.ndarray | None = None
) -> CameraMotion:
    """Weighted least squares ``moved = c + zoom Rot(angle) (points - c) + t`` for ``[N, 2]`` point pairs.

    In complex form ``w = A u + B`` with ``A = zoom * exp(-i angle)`` (y points down, so a
    counter-clockwise turn on screen is a negative complex angle).
    """
    if len(points) < 2:
        raise ValueError(f"points: need at least 2 point pairs, got {len(points)}")
    u = (points[:, 0] - centre[0]) + 1j * (points[:, 1] - centre[1])
    v = (moved[:, 0] - centre[0]) + 1j * (moved[:, 1] - centre[1])
    sw = np.sqrt(np.ones(len(u)) if weights is None else weights)
    design = np.stack([u, np.ones_like(u)], axis=1) * sw[:, None]
    (scale_rot, shift), *_ = np.linalg.lstsq(design, v * sw, rcond=None)
    return CameraMotion(
        zoom=float(abs(scale_rot)),
        angle=float(-np.degrees(np.angle(scale_rot))),
        tx=float(shift.real),
        ty=float(shift.imag),
    )


def _apply(motion: CameraMotion, points: np.ndarray, h: int, w: int) -> np.ndarray:
    return target_coords(motion, torch.from_numpy(points), h, w).numpy()


def _default_tile(h: int, w: int) -> int:
    tile = 16
    while tile * 2 <= min(h, w) // 4:
        tile *= 2
    return tile


def _downsample(image: np.ndarray) -> np.ndarray:
    """2x2 box average; keeps offsets from the image centre exactly halved."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    x = image[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def _refine(
    ga: np.ndarray, gb: np.ndarray, motion: CameraMotion, tile: int, iterations: int, min_peak: float
) -> CameraMotion:
    """Re-aligns ``b`` onto ``a`` with ``motion``, measures tile residual shifts and refits, repeatedly."""
    h, w = ga.shape
    centre = ((w - 1) / 2, (h - 1) / 2)
    tb = torch.from_numpy(gb)[None, None]
    grid = pixel_grid(h, w, dtype=torch.float64)
    step = max(tile // 2, 1)
    for _ in range(max(iterations, 1)):
        coords = target_coords(motion, grid, h, w)[0]
        aligned = sample(tb, coords[None], border="replicate", interpolation="bicubic")[0, 0].numpy()
        inside = (
            ((coords >= 0) & (coords <= torch.tensor([w - 1, h - 1], dtype=coords.dtype))).all(-1).numpy()
        )
        pts, shifts, weights = [], [], []
        for y0 in range(0, h - tile + 1, step):
            for x0 in range(0, w - tile + 1, step):
                if not inside[y0 : y0 + tile, x0 : x0 + tile].all():
                    continue
                window = (slice(y0, y0 + tile), slice(x0, x0 + tile))
                sx, sy, peak = phase_correlation(ga[window], aligned[window])
                if peak >= min_peak:
                    pts.append((x0 + (tile - 1) / 2, y0 + (tile - 1) / 2))
                    shifts.append((sx, sy))
                    weights.append(peak)
        if len(pts) < 3:
            raise ValueError(
                "a/b: too few matching tiles to estimate zoom and rotation (frames too different?)"
            )
        p, s, wt = np.array(pts), np.array(shifts), np.array(weights)
        moved = _apply(motion, p + s, h, w)
        fit = fit_similarity(p, moved, centre, wt)
        residual = np.linalg.norm(_apply(fit, p, h, w) - moved, axis=1)
        keep = residual <= max(3 * float(np.median(residual)), 0.25)
        if keep.sum() >= 3 and not keep.all():
            fit = fit_similarity(p[keep], moved[keep], centre, wt[keep])
        motion = fit
    return motion


def estimate_similarity(
    a: ImageLike, b: ImageLike, *, tile: int | None = None, iterations: int = 3, min_peak: float = 0.05
) -> CameraMotion:
    """Zoom, angle (degrees, CCW positive) and shift ``(tx, ty)`` px taking frame ``a`` to frame ``b``.

    Coarse to fine: the estimate from a 2x smaller copy (down to about 64 px) starts the next level, so
    corner displacements of a few tile sizes are fine (tested to zoom 1.1 with 8 degrees per frame).
    Only tiles whose re-aligned pixels all come from inside ``b`` and whose correlation peak exceeds
    ``min_peak`` are used; tiles off by more than three times the median residual are dropped.
    """
    ga, gb = to_gray(a), to_gray(b)
    if ga.shape != gb.shape:
        raise ValueError(f"a/b: frames must have the same size, got {ga.shape} and {gb.shape}")
    if tile is not None and not 8 <= tile <= min(ga.shape):
        raise ValueError(f"tile: must be between 8 and the smaller image side {min(ga.shape)}, got {tile}")
    levels = [(ga, gb)]
    while min(levels[-1][0].shape) >= 128:
        levels.append((_downsample(levels[-1][0]), _downsample(levels[-1][1])))
    ca, cb = levels[-1]
    dx, dy, peak = phase_correlation(ca, cb)
    motion = CameraMotion(tx=dx, ty=dy) if peak >= 0.1 else CameraMotion()
    for depth, (la, lb) in reversed(list(enumerate(levels))):
        if depth < len(levels) - 1:
            motion = CameraMotion(zoom=motion.zoom, angle=motion.angle, tx=2 * motion.tx, ty=2 * motion.ty)
        level_tile = tile if depth == 0 and tile else _default_tile(*la.shape)
        motion = _refine(la, lb, motion, level_tile, iterations if depth == 0 else 2, min_peak)
    return motion


def estimate_motions(frames: Sequence[ImageLike], model: str = "similarity") -> list[CameraMotion]:
    """Motion between each pair of consecutive frames (``len(frames) - 1`` entries)."""
    if model not in ("similarity", "translation"):
        raise ValueError(f"model: must be one of similarity, translation, got {model!r}")
    out = []
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        if model == "translation":
            dx, dy = estimate_translation(a, b)
            out.append(CameraMotion(tx=dx, ty=dy))
        else:
            out.append(estimate_similarity(a, b))
    return out
