"""Camera motion for animation mode: schedules, warps, presets, colour coherence, cadence, estimators."""

from __future__ import annotations

import colorsys
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusionframes.camera import (
    BORDER_MODES,
    PRESET_NAMES,
    CameraMotion,
    add_noise,
    blend_cadence,
    custom_motion,
    depth_from_image,
    estimate_similarity,
    estimate_translation,
    evaluate_expression,
    fit_similarity,
    flat_depth,
    focal_length,
    get_preset,
    hsv_to_rgb,
    lab_to_rgb,
    match_colours,
    match_histogram,
    motion_schedule,
    parse_keyframes,
    parse_schedule,
    rgb_to_hsv,
    rgb_to_lab,
    schedule_values,
    warp,
    warp_2d,
    warp_3d,
)

# --- helpers


def texture(h: int = 192, w: int = 192, seed: int = 0, sigma: float = 2.0) -> torch.Tensor:
    """Smooth random RGB texture [1, 3, H, W] in [0, 1] (periodic Gaussian-blurred noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    r = int(3 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), k.view(3, 1, 1, -1), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), k.view(3, 1, -1, 1), groups=3)
    x = (x - x.mean()) / x.std() * 0.15 + 0.5
    return x.clamp(0, 1).float()


def rel_err(estimate: float, truth: float) -> float:
    return abs(estimate - truth) / abs(truth)


def chain(image: torch.Tensor, motions: list[CameraMotion], **kw) -> list[torch.Tensor]:
    frames = [image]
    for m in motions:
        frames.append(warp(frames[-1], m, **kw))
    return frames


# --- schedules


def test_linear_schedule_holds_ends_and_interpolates() -> None:
    v = parse_schedule("10:(2), 20:(4)", 30)
    assert v.shape == (30,) and v.dtype == np.float64
    np.testing.assert_allclose(v[:11], 2.0)
    np.testing.assert_allclose(v[15], 3.0)
    np.testing.assert_allclose(v[20:], 4.0)
    np.testing.assert_allclose(
        parse_schedule("0:(1.0), 24:(1.05), 48:(1.0)", 49)[[12, 24, 36]], [1.025, 1.05, 1.025]
    )


def test_keys_in_any_order_and_trailing_comma() -> None:
    a = parse_schedule("0:(0), 10:(1), 20:(0)", 21)
    np.testing.assert_array_equal(a, parse_schedule(" 20 : ( 0 ) ,10:(1),0:(0), ", 21))


def test_smooth_schedule_passes_keys_and_eases() -> None:
    v = parse_schedule("0:(0), 10:(1), 20:(0), 30:(2)", 31, "smooth")
    np.testing.assert_allclose(v[[0, 10, 20, 30]], [0, 1, 0, 2], atol=1e-12)
    two = parse_schedule("0:(0), 10:(1)", 11, "smooth")
    np.testing.assert_allclose(two[5], 0.5)  # smoothstep midpoint
    np.testing.assert_allclose(two[1], 3 * 0.01 - 2 * 0.001)  # zero slope at the first key
    assert np.all(np.diff(two) >= 0)
    # Catmull-Rom tangent at an interior key: central difference of its neighbours.
    mid = parse_schedule("0:(0), 10:(1), 20:(2)", 21, "smooth")
    np.testing.assert_allclose(mid[9:12], [0.9, 1.0, 1.1], atol=0.02)


def test_expression_values_follow_t() -> None:
    np.testing.assert_allclose(parse_schedule("0:(1 + 0.002*t)", 10), 1 + 0.002 * np.arange(10))
    v = parse_schedule("0:(1 + 0.002*t), 30:(sin(t/10))", 40)
    np.testing.assert_allclose(v[0], 1.0)
    np.testing.assert_allclose(v[30], math.sin(3.0))
    np.testing.assert_allclose(v[35], math.sin(3.5))  # after the last key its expression keeps running
    np.testing.assert_allclose(v[15], 0.5 * (1 + 0.002 * 15) + 0.5 * math.sin(1.5))


def test_expression_functions_and_constants() -> None:
    t = np.arange(5.0)
    np.testing.assert_allclose(
        evaluate_expression("max(t, 2, 1) + min(t, 1)", t), np.maximum(t, 2) + np.minimum(t, 1)
    )
    np.testing.assert_allclose(evaluate_expression("floor(t/2) + ceil(t/3) + abs(-t)", t), [0, 2, 4, 5, 8])
    np.testing.assert_allclose(
        evaluate_expression("pi + e + sqrt(4) + exp(0) + log(e) + 2**3 % 5", 0.0), math.pi + math.e + 7
    )
    np.testing.assert_allclose(evaluate_expression("log(8, 2) + clamp(t, 1, 3)", t), 3 + np.clip(t, 1, 3))
    # Commas inside a call do not split keys.
    assert [k.frame for k in parse_keyframes("0:(max(1, 2)), 5:(min(3,(4)))")] == [0, 5]


BAD_SCHEDULES = [
    ("0 (1.0)", "schedule: expected ':' at position 3 in '0 (1.0)'"),
    ("", "empty schedule"),
    ("   ", "empty schedule"),
    ("x:(1)", "expected a frame number at position 1"),
    ("0:1.0", "expected '(' at position 3"),
    ("0:(1.0) 5:(2)", "expected ',' or end of schedule at position 9"),
    ("0:((1)", "unclosed '(' at position 3"),
    ("0:()", "empty value at position 3"),
    ("0:(1), 10:(2), 0:(3)", "duplicate frame 0"),
    ("-1:(1)", "frame -1 is out of range 0..49"),
    ("0:(1), 50:(1)", "frame 50 is out of range 0..49 at position 8"),
    ("0:(foo + 1)", "unknown name 'foo'"),
    ("0:(bar(1))", "unknown function 'bar'"),
    ("0:(__import__('os'))", "unknown function '__import__' (allowed: abs"),
    ("0:(__import__('os').system('ls'))", "attribute access is not allowed at position 4"),
    ("0:(t.real)", "attribute access is not allowed at position 4"),
    ("0:(().__class__)", "attribute access is not allowed"),
    ("0:(1 + (2).__class__)", "attribute access is not allowed at position 8"),
    ("0:(lambda: 1)", "Lambda is not allowed"),
    ("0:('a')", "only numbers are allowed"),
    ("0:(True)", "only numbers are allowed"),
    ("0:(t < 1)", "Compare is not allowed"),
    ("0:([1][0])", "is not allowed"),
    ("0:(1 // 2)", "operator FloorDiv is not allowed"),
    ("0:(min(t, key=1))", "keyword arguments are not allowed"),
    ("0:(sin)", "function 'sin' must be called"),
    ("0:(sin(1, 2))", "'sin' takes 1 argument(s), got 2"),
    ("0:(1 +)", "invalid expression syntax at position"),
    ("0:(1), 5:(1/(t-7))", "value is not finite at frame 7"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SCHEDULES)
def test_bad_schedules_name_the_problem_and_position(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(text, 50)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("schedule: ")


def test_error_position_counts_from_one_over_the_whole_text() -> None:
    with pytest.raises(ValueError, match=r"unknown name 'q' \(allowed: t, e, pi, tau\) at position 18 in"):
        parse_schedule("0:(1), 10:(1 + 2*q)", 20)


def test_schedule_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="interpolation: must be one of linear, smooth"):
        parse_schedule("0:(1)", 5, "cubic")
    with pytest.raises(ValueError, match="num_frames: must be an integer >= 1"):
        parse_schedule("0:(1)", 0)
    with pytest.raises(ValueError, match="expected a string"):
        parse_keyframes(1.0)  # type: ignore[arg-type]


def test_schedule_values_accepts_constants_and_sequences() -> None:
    np.testing.assert_array_equal(schedule_values(2, 3), [2, 2, 2])
    np.testing.assert_array_equal(schedule_values([1, 2, 3], 3), [1, 2, 3])
    with pytest.raises(ValueError, match=r"zoom: expected 3 per-frame values, got shape \(2,\)"):
        schedule_values([1, 2], 3, name="zoom")
    with pytest.raises(ValueError, match="zoom: must be finite"):
        schedule_values(float("nan"), 3, name="zoom")


# --- warps


def test_identity_motion_is_identity() -> None:
    img = texture(64, 80)
    for interp in ("bilinear", "bicubic"):
        torch.testing.assert_close(warp_2d(img, CameraMotion(), interpolation=interp), img, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            warp_3d(img, None, CameraMotion(), interpolation=interp), img, atol=1e-5, rtol=0
        )
    depth = depth_from_image(np.random.default_rng(0).random((16, 20)), size=(64, 80))
    torch.testing.assert_close(warp_3d(img, depth, CameraMotion()), img, atol=1e-5, rtol=0)
    torch.testing.assert_close(warp_3d(img[0], flat_depth(64, 80), CameraMotion()), img[0], atol=1e-5, rtol=0)


def test_flat_depth_3d_matches_2d_and_dolly_is_zoom() -> None:
    img = texture(64, 64)
    m = CameraMotion(zoom=1.03, angle=4.0, tx=2.5, ty=-1.5)
    torch.testing.assert_close(warp_3d(img, None, m), warp_2d(img, m), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        warp_3d(img, None, CameraMotion(rz=4.0)), warp_2d(img, CameraMotion(angle=4.0)), atol=1e-4, rtol=0
    )
    tz = 0.05  # a plane at depth 1 seen from 0.05 closer grows by 1 / 0.95
    torch.testing.assert_close(
        warp_3d(img, None, CameraMotion(tz=tz)),
        warp_2d(img, CameraMotion(zoom=1 / (1 - tz))),
        atol=1e-4,
        rtol=0,
    )
    assert warp(img, CameraMotion(tz=tz)).shape == img.shape


def test_warp_2d_rejects_3d_motion_and_bad_arguments() -> None:
    img = texture(16, 16)
    with pytest.raises(ValueError, match="use warp_3d"):
        warp_2d(img, CameraMotion(ry=1.0))
    with pytest.raises(
        ValueError, match="border: must be one of reflect, replicate, wrap, zeros, got 'mirror'"
    ):
        warp_2d(img, CameraMotion(tx=1), border="mirror")
    with pytest.raises(ValueError, match="interpolation: must be one of"):
        warp_2d(img, CameraMotion(tx=1), interpolation="lanczos")
    with pytest.raises(ValueError, match=r"image: expected a float tensor"):
        warp_2d(torch.zeros(16, 16), CameraMotion())
    with pytest.raises(ValueError, match="fov_deg: must be in"):
        warp_3d(img, None, CameraMotion(tz=0.1), fov_deg=180)
    with pytest.raises(ValueError, match="depth: values must be finite and > 0"):
        warp_3d(img, torch.zeros(16, 16), CameraMotion(tz=0.1))
    with pytest.raises(ValueError, match="zoom: must be > 0"):
        CameraMotion(zoom=0)
    with pytest.raises(ValueError, match="angle: must be a finite number"):
        CameraMotion(angle=float("nan"))


@pytest.mark.parametrize("border", BORDER_MODES)
def test_border_modes_fill_uncovered_pixels(border: str) -> None:
    img = texture(32, 40)
    k = 5
    out = warp_2d(img, CameraMotion(tx=k), border=border)
    torch.testing.assert_close(out[..., k:], img[..., :-k], atol=1e-5, rtol=0)
    expected = {
        "reflect": img[..., :k].flip(-1),
        "replicate": img[..., :1].expand(-1, -1, -1, k),
        "wrap": img[..., -k:],
        "zeros": torch.zeros_like(img[..., :k]),
    }[border]
    torch.testing.assert_close(out[..., :k], expected, atol=1e-5, rtol=0)


def test_wrap_interpolates_across_the_seam() -> None:
    img = texture(24, 24)
    out = warp_2d(img, CameraMotion(tx=0.5, ty=-7.0), border="wrap", interpolation="bilinear")
    rolled = torch.roll(img, shifts=-7, dims=-2)
    expected = 0.5 * (rolled + torch.roll(rolled, shifts=1, dims=-1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_signs_of_3d_rotations_and_parallax() -> None:
    img = texture(128, 128)
    f = focal_length(128)
    crop = (slice(None), slice(None), slice(32, 96), slice(32, 96))
    dx, dy = estimate_translation(img[crop], warp_3d(img, None, CameraMotion(ry=1.0))[crop])
    assert abs(dx - f * math.tan(math.radians(1.0))) < 0.3 and abs(dy) < 0.3  # turn left: content right
    dx, dy = estimate_translation(img[crop], warp_3d(img, None, CameraMotion(rx=1.0))[crop])
    assert abs(dy - f * math.tan(math.radians(1.0))) < 0.3 and abs(dx) < 0.3  # tilt up: content down
    # Parallax: near content (depth 0.5) moves twice tx, far content (depth 2) half of it.
    depth = torch.ones(128, 128)
    depth[:64], depth[64:] = 0.5, 2.0
    moved = warp_3d(img, depth, CameraMotion(tx=4.0), border="replicate")
    near, far = (
        (slice(None), slice(None), slice(8, 56), slice(24, 104)),
        (slice(None), slice(None), slice(72, 120), slice(24, 104)),
    )
    assert abs(estimate_translation(img[near], moved[near])[0] - 8.0) < 0.5
    assert abs(estimate_translation(img[far], moved[far])[0] - 2.0) < 0.5


def test_depth_from_image(tmp_path) -> None:
    from PIL import Image

    grey = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    path = tmp_path / "depth.png"
    Image.fromarray(grey).save(path)
    d = depth_from_image(path)
    assert d.shape == (1, 1, 16, 32)
    torch.testing.assert_close(d[0, 0, 0, [0, -1]], torch.tensor([2.0, 0.5]))  # white is near
    d = depth_from_image(path, size=(8, 8), white_is_near=False, near=1.0, far=3.0)
    assert d.shape == (1, 1, 8, 8) and 1.0 <= d.min() < d.max() <= 3.0
    torch.testing.assert_close(depth_from_image(np.full((4, 4, 3), 7.0)), flat_depth(4, 4))
    with pytest.raises(ValueError, match="near/far: need 0 < near < far"):
        depth_from_image(grey, near=2.0, far=1.0)
    with pytest.raises(ValueError, match="source: depth image not found"):
        depth_from_image(tmp_path / "missing.png")


def test_motion_schedule_builds_per_frame_motions() -> None:
    ms = motion_schedule(5, zoom="0:(1.0), 4:(1.04)", tx=2.0, ry=[0, 1, 2, 3, 4])
    assert len(ms) == 5 and all(isinstance(m, CameraMotion) for m in ms)
    assert ms[2] == CameraMotion(zoom=1.02, tx=2.0, ry=2.0)
    with pytest.raises(ValueError, match="zoom: must be > 0 at every frame"):
        motion_schedule(3, zoom="0:(1 - t)")
    with pytest.raises(ValueError, match="tz: expected ':' at position 2"):
        motion_schedule(3, tz="0(1)")


# --- measured motion


def test_pan_speed_is_recovered() -> None:
    img = texture()
    fps, frames = 8, 4
    for name, axis, sign in (("pan_right", 0, -1), ("pan_up", 1, 1)):
        motions = get_preset(name, frames + 1, fps, speed=0.6)
        want = sign * 64 * 0.6 / fps  # content px per frame
        video = chain(img, motions[1:])
        got = [estimate_translation(a, b)[axis] for a, b in zip(video[:-1], video[1:], strict=True)]
        assert all(abs(g - want) < 0.5 for g in got), (name, got, want)
        assert abs(np.mean(got) - want) < 0.1


@pytest.mark.slow
def test_zoom_and_rotation_are_recovered_within_two_percent() -> None:
    img = texture()
    zoom = get_preset("zoom_in", 2, 8)[1]
    rot = get_preset("rotate_ccw", 2, 8, speed=1.5)[1]
    both = get_preset("zoom_out+rotate_cw", 2, 8)[1]
    e = estimate_similarity(img, warp(img, zoom))
    assert rel_err(e.zoom - 1, zoom.zoom - 1) < 0.02 and abs(e.angle) < 0.02
    e = estimate_similarity(img, warp(img, rot))
    assert rel_err(e.angle, rot.angle) < 0.02 and abs(e.zoom - 1) < 1e-3
    e = estimate_similarity(img, warp(img, both))
    assert rel_err(e.zoom - 1, both.zoom - 1) < 0.02 and rel_err(e.angle, both.angle) < 0.02


def test_large_similarity_is_recovered_coarse_to_fine() -> None:
    img = texture(160, 224, seed=3)
    m = CameraMotion(zoom=1.1, angle=-8.0, tx=6.0, ty=-4.0)
    e = estimate_similarity(img, warp(img, m))
    assert rel_err(e.zoom - 1, 0.1) < 0.02 and rel_err(e.angle, -8.0) < 0.02
    assert abs(e.tx - 6.0) < 0.2 and abs(e.ty + 4.0) < 0.2


def test_fit_similarity_is_exact_on_points() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 100, size=(12, 2))
    m = CameraMotion(zoom=0.93, angle=-12.0, tx=3.0, ty=7.0)
    from fusionframes.camera import target_coords

    moved = target_coords(m, torch.from_numpy(pts), 101, 101).numpy()
    fit = fit_similarity(pts, moved, (50.0, 50.0))
    assert abs(fit.zoom - 0.93) < 1e-9 and abs(fit.angle + 12.0) < 1e-9 and abs(fit.tx - 3) < 1e-9


# --- presets


def test_presets_exist_and_have_one_motion_per_frame() -> None:
    required = {
        "zoom_in",
        "zoom_out",
        "pan_left",
        "pan_right",
        "pan_up",
        "pan_down",
        "rotate_cw",
        "rotate_ccw",
    }
    assert required | {"dolly", "orbit", "shake"} <= set(PRESET_NAMES)
    for name in PRESET_NAMES:
        ms = get_preset(name, 7, 12)
        assert len(ms) == 7 and all(isinstance(m, CameraMotion) for m in ms)
    assert get_preset("dolly", 2, 8)[1].tz > 0 and get_preset("dolly", 2, 8)[1].is_3d
    orbit = get_preset("orbit", 2, 8)[1]
    assert orbit.ry > 0 and orbit.tx < 0


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        get_preset("zoom_in+spin", 10, 8)
    message = str(info.value)
    assert message.startswith("preset: unknown 'spin'") and all(name in message for name in PRESET_NAMES)
    with pytest.raises(ValueError, match="fps: must be a finite number > 0"):
        get_preset("zoom_in", 10, 0)
    with pytest.raises(ValueError, match="num_frames: must be an integer >= 1"):
        get_preset("zoom_in", 0, 8)


def test_preset_rates_follow_fps_speed_and_width() -> None:
    assert get_preset("zoom_in", 2, 10)[1].zoom ** 10 == pytest.approx(1.25)
    assert get_preset("zoom_in", 2, 10)[1].zoom * get_preset("zoom_out", 2, 10)[1].zoom == pytest.approx(1.0)
    assert get_preset("pan_left", 2, 8, speed=2.0)[1].tx == pytest.approx(16.0)
    assert get_preset("pan_left", 2, 8, width=1024)[1].tx == pytest.approx(16.0)
    assert get_preset("rotate_cw", 2, 12)[1].angle == pytest.approx(-1.0)
    combo = get_preset("zoom_in+rotate_cw", 3, 8)[1]
    assert (
        combo.zoom == get_preset("zoom_in", 3, 8)[1].zoom
        and combo.angle == get_preset("rotate_cw", 3, 8)[1].angle
    )


def test_shake_is_seeded_and_stays_near_start() -> None:
    a, b, c = (get_preset("shake", 48, 24, seed=s) for s in (1, 1, 2))
    assert a == b and a != c and a[0].is_identity
    drift = np.cumsum([m.tx for m in a])
    assert np.abs(drift).max() < 13.0 and np.abs(np.diff(drift)).max() > 0.05


def test_custom_motion_uses_named_schedules() -> None:
    ms = custom_motion(zoom="0:(1.0), 10:(1.1)", translation_x="0:(2*t)", rotation_3d_y=0.5, num_frames=11)
    assert ms[5] == CameraMotion(zoom=1.05, tx=10.0, ry=0.5)
    with pytest.raises(ValueError, match=re.escape("translation_y: expected ':' at position 3 in '0 (1)'")):
        custom_motion(translation_y="0 (1)", num_frames=11)
    with pytest.raises(ValueError, match="rotation_3d_z: frame 11 is out of range 0..10"):
        custom_motion(rotation_3d_z="11:(1)", num_frames=11)


# --- colour


def test_colour_space_conversions() -> None:
    rgb = torch.tensor([[1.0, 0, 0], [1, 1, 1], [0.2, 0.5, 0.8]], dtype=torch.float64).T[:, :, None]
    lab = rgb_to_lab(rgb)[:, :, 0].T
    torch.testing.assert_close(
        lab[0], torch.tensor([53.2408, 80.0925, 67.2032], dtype=torch.float64), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(lab[1], torch.tensor([100.0, 0, 0], dtype=torch.float64), atol=1e-3, rtol=0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    hsv = rgb_to_hsv(x)[0, :, :2, :2].permute(1, 2, 0).reshape(-1, 3)
    ref = torch.tensor([colorsys.rgb_to_hsv(*x[0, :, i, j].tolist()) for i in range(2) for j in range(2)])
    torch.testing.assert_close(hsv, ref, atol=1e-5, rtol=0)


def _histogram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-channel 1-Wasserstein distance between value distributions (quantiles compared)."""
    q = torch.linspace(0, 1, 101, dtype=torch.float64)

    def quantiles(x: torch.Tensor, c: int) -> torch.Tensor:
        return torch.quantile(x[:, c].double().flatten(), q)

    return float(
        sum((quantiles(a, c) - quantiles(b, c)).abs().mean() for c in range(a.shape[1])) / a.shape[1]
    )


SPACES = {
    "lab": lambda x: rgb_to_lab(x) / torch.tensor([100.0, 128.0, 128.0]).view(1, 3, 1, 1),
    "hsv": lambda x: rgb_to_hsv(x)[:, 1:],  # saturation and value (hue is circular)
    "rgb": lambda x: x,
}


@pytest.mark.parametrize("mode", ["lab", "hsv", "rgb"])
def test_match_colours_moves_histograms_to_reference(mode: str) -> None:
    ref = texture(48, 48, seed=1)
    drifted = (texture(64, 64, seed=2) * torch.tensor([1.3, 0.9, 0.6]).view(1, 3, 1, 1) + 0.05).clamp(0, 1)
    out = match_colours(drifted, ref, mode)
    assert out.shape == drifted.shape and out.dtype == drifted.dtype
    space = SPACES[mode]
    before, after = (
        _histogram_distance(space(drifted), space(ref)),
        _histogram_distance(space(out), space(ref)),
    )
    assert after < 0.1 * before, (before, after)
    assert _histogram_distance(out, ref) < 0.5 * _histogram_distance(drifted, ref)  # and in RGB too
    half = _histogram_distance(space(match_colours(drifted, ref, mode, strength=0.5)), space(ref))
    assert after < half < before


def test_match_colours_arguments() -> None:
    img, ref = texture(16, 16), texture(16, 16, seed=1)
    torch.testing.assert_close(match_colours(img, ref, None), img)
    torch.testing.assert_close(match_colours(img[0], ref[0], "rgb", strength=0.0), img[0])
    torch.testing.assert_close(match_colours(img, img, "rgb"), img, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mode: must be one of lab, hsv, rgb, None, got 'xyz'"):
        match_colours(img, ref, "xyz")
    with pytest.raises(ValueError, match="reference: batch must be 1 or 1"):
        match_colours(img, ref.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match=r"image: expected an RGB tensor"):
        match_colours(img[:, :2], ref)


def test_match_histogram_is_exact_for_equal_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    src, ref = (
        torch.rand(500, generator=g, dtype=torch.float64),
        torch.randn(500, generator=g, dtype=torch.float64),
    )
    out = match_histogram(src, ref)
    torch.testing.assert_close(out.sort().values, ref.sort().values)
    assert torch.equal(out.argsort(), src.argsort())  # order is kept


def test_add_noise() -> None:
    img = torch.full((1, 3, 64, 64), 0.5)
    a, b = add_noise(img, 0.1, 7), add_noise(img, 0.1, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, add_noise(img, 0.1, 8))
    assert abs(float((a - img).std()) - 0.1) < 0.01
    assert torch.equal(add_noise(img, 0.0), img)
    assert add_noise(img, 5.0, 0).max() <= 1 and add_noise(img, 5.0, 0, clamp=None).max() > 1
    with pytest.raises(ValueError, match="amount: must be a finite number >= 0"):
        add_noise(img, -0.1)


# --- cadence


def test_cadence_follows_the_camera_between_redraws() -> None:
    img = texture(128, 128)
    motions = [CameraMotion(tx=1.5, ty=-0.5)] * 4
    nxt = chain(img, motions)[-1]
    between = blend_cadence(img, nxt, motions)
    assert len(between) == 3 and between[0].shape == img.shape
    for j, frame in enumerate(between, start=1):
        dx, dy = estimate_translation(img, frame)
        assert abs(dx - 1.5 * j) < 0.3 and abs(dy + 0.5 * j) < 0.3


def test_cadence_cross_fades_redraw_changes() -> None:
    a, b = texture(32, 32), texture(32, 32, seed=5)
    between = blend_cadence(a, b, [CameraMotion()] * 4)
    torch.testing.assert_close(between[1], 0.5 * (a + b), atol=1e-5, rtol=0)
    assert blend_cadence(a, b, [CameraMotion()]) == []
    with pytest.raises(ValueError, match="next_frame: must match"):
        blend_cadence(a, b[..., :16], [CameraMotion()] * 2)
    with pytest.raises(ValueError, match="motions: expected a non-empty sequence"):
        blend_cadence(a, b, [])
