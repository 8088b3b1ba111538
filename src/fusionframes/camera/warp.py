"""Camera warps of image tensors ``[B, C, H, W]`` (or ``[C, H, W]``) with one ``grid_sample`` each.

Every field of :class:`CameraMotion` is described by what it does to the picture on screen, so the
signs are the same in 2D and 3D: ``tx``/``ry`` > 0 move the content right, ``ty``/``rx`` > 0 move it
down, ``angle``/``rz`` > 0 rotate it counter-clockwise, ``zoom`` > 1 / ``tz`` > 0 enlarge it.

Geometry. Pixel ``(x, y)`` has its centre at integer coordinates, ``x`` to the right and ``y`` down; the
principal point is the image centre ``((W-1)/2, (H-1)/2)`` and the focal length follows from the
horizontal field of view. In 3D a source pixel with depth ``d`` is lifted to ``X = d K^-1 [x, y, 1]``,
the camera is rotated by ``R`` and moved by ``C = R T`` (``T`` given in the moved camera's frame) and
the point is projected with focal length ``zoom * f``. Warps are backward: for each output pixel the
source position is found analytically (flat depth: exact) or with a few fixed-point steps on the depth
map, then sampled once, so chained motions do not blur twice.

Units: ``tx``/``ty`` are pixels per frame at the reference depth (``REFERENCE_DEPTH`` = 1, the
distance of the built-in flat plane); ``tz`` is in the same depth units (``tz = 0.02`` moves the camera
2 % of the way to the plane); angles are degrees per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusionframes.camera.schedule import ScheduleLike, schedule_values

BORDER_MODES = ("reflect", "replicate", "wrap", "zeros")
SAMPLING_MODES = ("bilinear", "bicubic", "nearest")
DEFAULT_FOV_DEG = 40.0
REFERENCE_DEPTH = 1.0
_MIN_DEPTH = 1e-4
_DEPTH_ITERATIONS = 4


@dataclass(frozen=True)
class CameraMotion:
    """Camera move from one frame to the next (content-centred signs, see module docstring)."""

    zoom: float = 1.0
    angle: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    tz: float = 0.0
    rx: float = 0.0
    ry: float = 0.0
    rz: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.number)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{f.name}: must be a finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.zoom <= 0:
            raise ValueError(f"zoom: must be > 0, got {self.zoom}")

    @property
    def is_3d(self) -> bool:
        """True when the move needs the pinhole model (perspective or parallax)."""
        return any((self.tz, self.rx, self.ry, self.rz))

    @property
    def is_identity(self) -> bool:
        return self.zoom == 1.0 and not any(
            (self.angle, self.tx, self.ty, self.tz, self.rx, self.ry, self.rz)
        )

    def then(self, other: CameraMotion) -> CameraMotion:
        """Combines two simultaneous per-frame moves: zooms multiply, everything else adds.

        First-order composition: exact for pure zooms, pure rotations and pure translations, and the
        cross terms of mixed moves are negligible at per-frame magnitudes.
        """
        return CameraMotion(
            zoom=self.zoom * other.zoom,
            **{
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in fields(self)
                if f.name != "zoom"
            },
        )


def motion_schedule(
    num_frames: int,
    *,
    zoom: ScheduleLike = 1.0,
    angle: ScheduleLike = 0.0,
    tx: ScheduleLike = 0.0,
    ty: ScheduleLike = 0.0,
    tz: ScheduleLike = 0.0,
    rx: ScheduleLike = 0.0,
    ry: ScheduleLike = 0.0,
    rz: ScheduleLike = 0.0,
    interpolation: str = "linear",
) -> list[CameraMotion]:
    """Per-frame motions from schedules (keyframe strings, constants or per-frame sequences).

    ``motions[t]`` is the move applied to frame ``t - 1`` to start frame ``t``; ``motions[0]`` belongs
    to the text-generated first frame and is not applied by the animation pipeline.
    """
    given = {"zoom": zoom, "angle": angle, "tx": tx, "ty": ty, "tz": tz, "rx": rx, "ry": ry, "rz": rz}
    columns = {k: schedule_values(v, num_frames, interpolation, name=k) for k, v in given.items()}
    bad = np.flatnonzero(columns["zoom"] <= 0)
    if bad.size:
        raise ValueError(f"zoom: must be > 0 at every frame, got {columns['zoom'][bad[0]]} at frame {bad[0]}")
    return [CameraMotion(**{k: float(v[i]) for k, v in columns.items()}) for i in range(num_frames)]


# ----------------------------------------------------------------------------------------------- geometry


def focal_length(width: int, fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Focal length in pixels of a pinhole camera with horizontal field of view ``fov_deg``."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg: must be in (0, 180) degrees, got {fov_deg}")
    return (width / 2) / math.tan(math.radians(fov_deg) / 2)


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """Camera orientation (new camera axes in old camera coordinates) for content-centred angles.

    ``ry`` > 0 turns the camera left (content moves right), ``rx`` > 0 tilts it up (content moves down),
    ``rz`` > 0 rolls it clockwise (content turns counter-clockwise). Applied yaw, then pitch, then roll.
    """
    ax, ay, az = (math.radians(v) for v in (rx, -ry, rz))
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_y @ r_x @ r_z


@dataclass(frozen=True)
class _Pose:
    """Pinhole pose of one motion: ``X_old = R X_new + C``, ``C = R T``; new focal = ``zoom * f``."""

    rotation: np.ndarray
    offset: np.ndarray  # T, in the new camera's frame
    focal: float
    zoom: float
    centre: tuple[float, float]

    @classmethod
    def of(cls, motion: CameraMotion, height: int, width: int, fov_deg: float) -> _Pose:
        f = focal_length(width, fov_deg)
        scale = REFERENCE_DEPTH / (motion.zoom * f)
        rotation = rotation_matrix(motion.rx, motion.ry, motion.rz + motion.angle)
        offset = np.array([-motion.tx * scale, -motion.ty * scale, motion.tz])
        return cls(rotation, offset, f, motion.zoom, ((width - 1) / 2, (height - 1) / 2))


def pixel_grid(
    height: int, width: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Pixel-centre coordinates ``[1, H, W, 2]`` as ``(x, y)``."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)[None]


def _affine_source(motion: CameraMotion, coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``p_out = c + zoom * Rot(angle) (p_src - c) + (tx, ty)`` (Rot: CCW on screen)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a = math.radians(motion.angle)
    cos, sin = math.cos(a) / motion.zoom, math.sin(a) / motion.zoom
    x, y = coords[..., 0] - cx - motion.tx, coords[..., 1] - cy - motion.ty
    return torch.stack([cos * x - sin * y + cx, sin * x + cos * y + cy], dim=-1)


def _affine_target(motion: CameraMotion, coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where content at ``coords`` lands after the 2D move (forward map)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a = math.radians(motion.angle)
    cos, sin = math.cos(a) * motion.zoom, math.sin(a) * motion.zoom
    x, y = coords[..., 0] - cx, coords[..., 1] - cy
    return torch.stack([cos * x + sin * y + cx + motion.tx, -sin * x + cos * y + cy + motion.ty], dim=-1)


def _sample_depth(depth: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Depth at pixel coordinates (edge-clamped, bilinear) -> ``[B, H, W]``."""
    return sample(depth, coords, border="replicate", interpolation="bilinear")[:, 0].clamp_min(_MIN_DEPTH)


def _pinhole_source(pose: _Pose, coords: torch.Tensor, depth: torch.Tensor | float) -> torch.Tensor:
    """Backward map: output pixel -> source pixel whose lifted point projects onto it.

    The source point is ``X = s R r' + C`` on the output ray ``r'``; ``s`` is chosen so that ``X_z``
    equals the source depth there. With a depth map that depth is looked up at the current source
    estimate and refined a few times (a fixed point; exact for constant depth).
    """
    cx, cy = pose.centre
    fo = pose.focal * pose.zoom
    r = torch.as_tensor(pose.rotation, dtype=coords.dtype, device=coords.device)
    c = torch.as_tensor(pose.rotation @ pose.offset, dtype=coords.dtype, device=coords.device)
    ray = torch.stack(
        [(coords[..., 0] - cx) / fo, (coords[..., 1] - cy) / fo, torch.ones_like(coords[..., 0])], -1
    )
    direction = ray @ r.T
    dz = direction[..., 2]
    dz = torch.where(dz.abs() < 1e-8, torch.full_like(dz, 1e-8), dz)

    def project(d: torch.Tensor | float) -> torch.Tensor:
        s = ((d - c[2]) / dz).clamp_min(1e-6)  # points behind the camera go far out of view
        point = s[..., None] * direction + c
        z = point[..., 2].clamp_min(_MIN_DEPTH)
        return torch.stack([pose.focal * point[..., 0] / z + cx, pose.focal * point[..., 1] / z + cy], -1)

    if not isinstance(depth, torch.Tensor):
        return project(float(depth))
    source = coords.expand(depth.shape[0], *coords.shape[1:])
    for _ in range(_DEPTH_ITERATIONS):
        source = project(_sample_depth(depth, source))
    return source


def _pinhole_target(pose: _Pose, coords: torch.Tensor, depth: torch.Tensor | float) -> torch.Tensor:
    """Forward map: source pixel (with its depth) -> pixel in the moved camera."""
    cx, cy = pose.centre
    d = _sample_depth(depth, coords) if isinstance(depth, torch.Tensor) else float(depth)
    r = torch.as_tensor(pose.rotation, dtype=coords.dtype, device=coords.device)
    t = torch.as_tensor(pose.offset, dtype=coords.dtype, device=coords.device)
    x = (coords[..., 0] - cx) / pose.focal * d
    y = (coords[..., 1] - cy) / pose.focal * d
    point = torch.stack([x, y, torch.ones_like(x) * d], -1) @ r - t  # R^T X - T
    z = point[..., 2].clamp_min(_MIN_DEPTH)
    fo = pose.focal * pose.zoom
    return torch.stack([fo * point[..., 0] / z + cx, fo * point[..., 1] / z + cy], -1)


def source_coords(
    motion: CameraMotion,
    coords: torch.Tensor,
    height: int,
    width: int,
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> torch.Tensor:
    """Backward map of one motion: for output pixel coordinates ``[B, H', W', 2]``, the source ones.

    2D moves without a depth map use the exact affine inverse; anything else uses the pinhole model.
    """
    if depth is None and not motion.is_3d:
        return _affine_source(motion, coords, height, width)
    depth = REFERENCE_DEPTH if depth is None else depth
    return _pinhole_source(_Pose.of(motion, height, width, fov_deg), coords, depth)


def target_coords(
    motion: CameraMotion,
    coords: torch.Tensor,
    height: int,
    width: int,
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> torch.Tensor:
    """Forward map of one motion: where content at ``coords`` (source pixels) lands."""
    if depth is None and not motion.is_3d:
        return _affine_target(motion, coords, height, width)
    depth = REFERENCE_DEPTH if depth is None else depth
    return _pinhole_target(_Pose.of(motion, height, width, fov_deg), coords, depth)


# ----------------------------------------------------------------------------------------------- sampling


def _fold(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mirrors coordinates into ``[-0.5, n - 0.5]`` (half-sample symmetric: edge pixels repeat once)."""
    u = torch.remainder(x + 0.5, 2 * n)
    return torch.where(u > n, 2 * n - u, u) - 0.5


def check_image(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected a float tensor [B, C, H, W] or [C, H, W], got {shape}")
    return image if image.dim() == 4 else image[None]


def _check_mode(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")


def sample(
    image: torch.Tensor, coords: torch.Tensor, *, border: str = "reflect", interpolation: str = "bicubic"
) -> torch.Tensor:
    """Samples ``image [B, C, H, W]`` at pixel coordinates ``[B or 1, H', W', 2]``.

    ``bicubic`` (default) keeps sub-pixel moves of fine detail: bilinear filtering shifts the highest
    frequencies less than the requested fraction of a pixel and blurs a little more at every frame of a
    chained animation; cubic results are clamped to the input's value range. Border modes decide what
    is seen outside the frame: ``reflect`` mirrors (no seams, good default for
    zoom-out), ``replicate`` smears the edge pixels, ``wrap`` tiles the image (coordinates modulo size,
    on a circularly padded copy so interpolation crosses the seam), ``zeros`` is black.
    """
    _check_mode(border, BORDER_MODES, "border")
    _check_mode(interpolation, SAMPLING_MODES, "interpolation")
    b, _, h, w = image.shape
    work = image if image.dtype in (torch.float32, torch.float64) else image.float()
    coords = coords.to(work.dtype)
    x, y = coords[..., 0], coords[..., 1]
    padding = "zeros" if border == "zeros" else "border"
    if border == "reflect":
        x, y = _fold(x, w), _fold(y, h)
    elif border == "wrap":
        pad = 2 if min(h, w) >= 2 else 0
        work = F.pad(work, (pad, pad, pad, pad), mode="circular") if pad else work
        x, y = torch.remainder(x, w) + pad, torch.remainder(y, h) + pad
        h, w = h + 2 * pad, w + 2 * pad
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    if grid.shape[0] != b:
        grid = grid.expand(b, *grid.shape[1:])
    out = F.grid_sample(work, grid, mode=interpolation, padding_mode=padding, align_corners=False)
    if interpolation == "bicubic":  # cubic overshoot must not leave the input's value range
        lo, hi = work.amin(dim=(1, 2, 3), keepdim=True), work.amax(dim=(1, 2, 3), keepdim=True)
        if border == "zeros":
            lo, hi = lo.clamp_max(0), hi.clamp_min(0)
        out = torch.maximum(torch.minimum(out, hi), lo)
    return out.to(image.dtype)


def prepare_depth(depth: torch.Tensor | float | None, image: torch.Tensor) -> torch.Tensor | float:
    """Validates depth and brings a map to ``[B or 1, 1, H, W]`` at the image size."""
    if depth is None:
        return REFERENCE_DEPTH
    if not isinstance(depth, torch.Tensor):
        if not isinstance(depth, int | float) or not math.isfinite(depth) or depth <= 0:
            raise ValueError(f"depth: must be a positive number or a depth tensor, got {depth!r}")
        return float(depth)
    d = depth.to(device=image.device, dtype=torch.float64 if image.dtype == torch.float64 else torch.float32)
    while d.dim() < 4:
        d = d[None]
    if d.shape[1] != 1 or d.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"depth: expected shape [H, W], [1, H, W] or [B, 1, H, W], got {tuple(depth.shape)}")
    if not torch.isfinite(d).all() or (d <= 0).any():
        raise ValueError("depth: values must be finite and > 0")
    if d.shape[-2:] != image.shape[-2:]:
        d = F.interpolate(d, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return d


def warp_2d(
    image: torch.Tensor, motion: CameraMotion, *, border: str = "reflect", interpolation: str = "bicubic"
) -> torch.Tensor:
    """Zoom about the centre, rotate (``angle`` degrees, CCW on screen) and shift by ``(tx, ty)`` px."""
    if motion.is_3d:
        raise ValueError("motion: has 3D components (tz, rx, ry, rz); use warp_3d for those")
    x = check_image(image)
    h, w = x.shape[-2:]
    out = sample(
        x,
        _affine_source(motion, pixel_grid(h, w, device=x.device), h, w),
        border=border,
        interpolation=interpolation,
    )
    return out if image.dim() == 4 else out[0]


def warp_3d(
    image: torch.Tensor,
    depth: torch.Tensor | float | None,
    motion: CameraMotion,
    fov_deg: float = DEFAULT_FOV_DEG,
    *,
    border: str = "reflect",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Perspective move with a pinhole camera: all fields of ``motion`` apply, ``tx``/``ty`` with parallax.

    ``depth`` is a positive depth map (``[H, W]`` ... ``[B, 1, H, W]``, resized to the image) or a
    number / ``None`` for a flat plane at that depth (default ``REFERENCE_DEPTH``). With flat depth and
    no ``tz``/``rx``/``ry``/``rz`` the result equals :func:`warp_2d`.
    """
    x = check_image(image)
    h, w = x.shape[-2:]
    d = prepare_depth(depth, x)
    coords = _pinhole_source(_Pose.of(motion, h, w, fov_deg), pixel_grid(h, w, device=x.device), d)
    out = sample(x, coords, border=border, interpolation=interpolation)
    return out if image.dim() == 4 else out[0]


def warp(
    image: torch.Tensor,
    motion: CameraMotion,
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    border: str = "reflect",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Applies one frame's motion, choosing the 2D path when no depth or 3D component is involved."""
    if depth is None and not motion.is_3d:
        return warp_2d(image, motion, border=border, interpolation=interpolation)
    return warp_3d(image, depth, motion, fov_deg, border=border, interpolation=interpolation)


# ----------------------------------------------------------------------------------------------- depth


def flat_depth(height: int, width: int, value: float = REFERENCE_DEPTH) -> torch.Tensor:
    """Constant depth map ``[1, 1, H, W]``: the fallback when no depth image is given."""
    if not value > 0:
        raise ValueError(f"value: must be > 0, got {value}")
    return torch.full((1, 1, height, width), float(value))


def depth_from_image(
    source: str | Path | np.ndarray | torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    near: float = 0.5,
    far: float = 2.0,
    white_is_near: bool = True,
) -> torch.Tensor:
    """Loads a grayscale depth picture and maps it linearly to depths in ``[near, far]`` -> ``[1,1,H,W]``.

    Most monocular depth tools save nearer = brighter, hence ``white_is_near``. Values are min-max
    normalised first; a constant picture gives a flat plane at ``REFERENCE_DEPTH``. The default range
    brackets the reference depth so ``tx``/``ty`` keep their pixel meaning for mid-grey.
    """
    if not 0 < near < far:
        raise ValueError(f"near/far: need 0 < near < far, got near={near}, far={far}")
    if isinstance(source, str | Path):
        from PIL import Image

        path = Path(source)
        if not path.is_file():
            raise ValueError(f"source: depth image not found: {path}")
        with Image.open(path) as img:
            arr = np.asarray(img.convert("F"), dtype=np.float64)
    elif isinstance(source, torch.Tensor):
        arr = source.detach().cpu().double().numpy()
    elif isinstance(source, np.ndarray):
        arr = source.astype(np.float64)
    else:
        raise ValueError(f"source: expected a path, numpy array or tensor, got {type(source).__name__}")
    arr = np.squeeze(arr)
    if arr.ndim == 3:  # colour picture: channels last or first
        arr = arr.mean(axis=-1) if arr.shape[-1] in (3, 4) else arr.mean(axis=0)
    if arr.ndim != 2 or not np.all(np.isfinite(arr)):
        raise ValueError(f"source: expected a finite 2D grayscale image, got shape {arr.shape}")
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < 1e-12:
        depth = np.full(arr.shape, REFERENCE_DEPTH)
    else:
        v = (arr - lo) / (hi - lo)
        depth = far + (near - far) * v if white_is_near else near + (far - near) * v
    out = torch.from_numpy(depth.astype(np.float32))[None, None]
    if size is not None:
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
    return out
