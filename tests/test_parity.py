"""Parity with the official Kandinsky Video 1.0 code on the cases in FUSIONFRAMES_PARITY_DIR.

Each case folder holds the official constructor config, a checkpoint in the released layout and the
official inputs/outputs; we load the checkpoint unchanged (strict) and compare outputs.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from fusionframes.config import MoVQConfig, TrainedWith, UNetConfig
from fusionframes.diffusion.guidance import guided
from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.diffusion.sampling import CosineSteps
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.io.checkpoints import load_strict, read_official_file
from fusionframes.models import MoVQ, UNet3D
from fusionframes.pipelines.stages import InterpolationConditioning, interpolation_model, scatter_frames
from fusionframes.text.conditioning import TextProjection, project_text

ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("FUSIONFRAMES_PARITY_DIR", ROOT.parent / "shared" / "parity"))
TOLERANCE = 1e-4


def case_dirs(kind: str) -> list:
    """Every case folder whose name starts with ``kind`` (more cases in the same format are picked up).

    None found: one skipped case whose reason names the folder looked in, and a warning in pytest's
    summary, so a missing or misplaced parity folder is seen rather than passing quietly."""
    found = (
        sorted(p for p in PARITY_DIR.iterdir() if p.is_dir() and p.name.startswith(kind))
        if PARITY_DIR.is_dir()
        else []
    )
    if found:
        return found
    state = "has no such case" if PARITY_DIR.is_dir() else "does not exist"
    reason = f"no {kind}* parity case: {PARITY_DIR} {state} (set FUSIONFRAMES_PARITY_DIR)"
    warnings.warn(f"test_parity: {reason}", stacklevel=2)
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id=f"no-{kind}-case")]


def load_io(case: Path) -> dict:
    return torch.load(case / "io.pt", map_location="cpu", weights_only=True)


def config_of(case: Path) -> dict:
    return json.loads((case / "config.json").read_text())


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm().clamp(min=1e-12)).item()


def load_unet(case: Path) -> tuple[UNet3D, dict]:
    unet = UNet3D(UNetConfig.from_dict(config_of(case)["official_unet_kwargs"]))
    checkpoint = read_official_file(case / "checkpoint.pt", case.name)
    load_strict(unet, checkpoint["unet"], case.name)
    return unet.eval(), checkpoint


@pytest.mark.parametrize("case", case_dirs("keyframe_unet"), ids=lambda p: p.name)
def test_keyframe_unet(case: Path) -> None:
    unet, checkpoint = load_unet(case)
    assert set(checkpoint) == {"unet", "null_embedding", "projections"}
    io = load_io(case)
    num_frames = unet.config.num_frames
    with torch.no_grad():
        out = unet(
            io["x"],
            io["time"],
            io["context"],
            io["context_mask"],
            io["temporal_positions"],
            num_frames=num_frames,
        )
    assert rel_err(out, io["output"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("interpolation_unet"), ids=lambda p: p.name)
def test_interpolation_unet(case: Path) -> None:
    unet, checkpoint = load_unet(case)
    assert set(checkpoint) == {"unet", "null_embedding"}
    io = load_io(case)
    with torch.no_grad():
        out = unet(
            io["x"],
            io["time"],
            io["context"],
            io["context_mask"].bool(),
            skip_frames=io["skip_frames"],
            num_temporal_groups=int(io["num_temporal_groups"]),
        )
    assert rel_err(out, io["output"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("movq"), ids=lambda p: p.name)
def test_movq(case: Path) -> None:
    movq = MoVQ(MoVQConfig.from_dict(config_of(case)["generator_params"]))
    load_strict(movq, read_official_file(case / "checkpoint.pt", case.name), case.name)
    io = load_io(case)
    with torch.no_grad():
        assert rel_err(movq.eval().encode(io["image"]), io["encoded"]) <= TOLERANCE
        assert rel_err(movq.decode(io["latent"]), io["decoded"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("text_projection"), ids=lambda p: p.name)
def test_text_projection(case: Path) -> None:
    cfg = config_of(case)
    io = load_io(case)
    projection = TextProjection(cfg["encoder_dim"], cfg["context_dim"])
    load_strict(projection, io["projections"], case.name)
    context, mask = project_text(projection, io["encoder_hidden_states"], io["attention_mask"])
    assert context.shape == io["context"].shape
    assert torch.equal(mask.bool(), io["context_mask"].bool())
    assert rel_err(context, io["context"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("frame_scatter"), ids=lambda p: p.name)
def test_frame_scatter(case: Path) -> None:
    io = load_io(case)
    assert torch.equal(scatter_frames(io["keyframes"], io["groups"]), io["output"])


@pytest.mark.parametrize("case", case_dirs("diffusion"), ids=lambda p: p.name)
def test_diffusion_schedule(case: Path) -> None:
    cfg = config_of(case)
    io = load_io(case)
    schedule = DiffusionSchedule.cosine(cfg["steps"])
    assert schedule.time_scale == cfg["time_scale"]
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance"):
        assert rel_err(getattr(schedule, name), io[name]) <= TOLERANCE, name


def _posterior(
    schedule: DiffusionSchedule, model, x: torch.Tensor, t: torch.Tensor, prediction: str, percentile: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of one official DDPM step at step index ``t`` (the same for every row)."""
    assert (t == t[0]).all()
    steps = CosineSteps(schedule, int(t[0]))
    param = Parameterisation(TrainedWith(prediction=prediction, thresholding=percentile))
    x0 = param.denoiser(model, steps)(x, 0)
    return steps.step(0, x.float(), x0, None), steps.log_variance(0, x)


def _keyframe_step(
    case: Path, unet: UNet3D, io: dict, uncond: tuple[torch.Tensor, torch.Tensor] | None, null: torch.Tensor
):
    cfg = config_of(case)
    schedule = DiffusionSchedule.cosine(cfg["steps"])
    kf = io["keyframe"]
    if uncond is None:
        uncond_context = torch.zeros_like(kf["context"])
        uncond_context[:, 0] = null
        uncond_mask = torch.zeros_like(kf["context_mask"])
        uncond_mask[:, 0] = True
    else:
        uncond_context, uncond_mask = uncond
    context = torch.cat([kf["context"], uncond_context])
    mask = torch.cat([kf["context_mask"], uncond_mask]).bool()
    positions = kf["temporal_positions"].repeat(2)

    def run_both(x, time):
        return unet(
            x.repeat(2, 1, 1, 1), time.repeat(2), context, mask, positions, num_frames=unet.config.num_frames
        )

    denoise = guided(run_both, cfg["guidance_weight"])
    with torch.no_grad():
        return _posterior(schedule, denoise, kf["x"], kf["t"], "epsilon", cfg["percentile"])


@pytest.mark.parametrize("case", case_dirs("diffusion"), ids=lambda p: p.name)
def test_guided_keyframe_step(case: Path) -> None:
    unet, checkpoint = load_unet(PARITY_DIR / "keyframe_unet")
    io = load_io(case)
    mean, log_var = _keyframe_step(case, unet, io, None, checkpoint["null_embedding"])
    assert rel_err(mean, io["keyframe"]["mean"]) <= TOLERANCE
    assert rel_err(log_var, io["keyframe"]["log_variance"]) <= TOLERANCE

    negative = io["keyframe_negative"]
    mean, log_var = _keyframe_step(
        case, unet, io, (negative["negative_context"], negative["negative_context_mask"]), None
    )
    assert rel_err(mean, negative["mean"]) <= TOLERANCE
    assert rel_err(log_var, negative["log_variance"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("diffusion"), ids=lambda p: p.name)
def test_guided_interpolation_step(case: Path) -> None:
    cfg = config_of(case)
    unet, checkpoint = load_unet(PARITY_DIR / "interpolation_unet")
    io = load_io(case)["interpolation"]
    skip = int(io["skip_frames"][0])
    assert (io["skip_frames"] == skip).all()
    cond = InterpolationConditioning(checkpoint["null_embedding"], cfg["interpolation_guidance_weight"])
    denoise = interpolation_model(unet, cond, io["left"], io["right"], skip)
    schedule = DiffusionSchedule.cosine(cfg["steps"])
    with torch.no_grad():
        mean, log_var = _posterior(schedule, denoise, io["x"], io["t"], "v", cfg["percentile"])
    assert rel_err(mean, io["mean"]) <= TOLERANCE
    assert rel_err(log_var, io["log_variance"]) <= TOLERANCE
