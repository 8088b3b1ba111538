"""Parity of the Kandinsky Video 1.1 sampling loops with the reference ``BaseDiffusion``.

Cases come from ``FUSIONFRAMES_PARITY_KV11_DIR`` (default ``../shared/parity_kv11``), picked up by name
prefix. These tests need no network weights: a replay network hands back the reference's recorded
outputs (and checks, at step 0, that it gets exactly the reference's inputs), so they pin the scheduler,
the row layout, the guidance combination and the order of every random draw. The same loops with the
real 1.1 networks are checked in ``tests/test_parity_kv11.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fusionframes.diffusion.branches import cond_uncond, text_image
from fusionframes.diffusion.scheduled_ddpm import DDPMSettings, interpolation_settings_11
from fusionframes.pipelines.stages11 import (
    KeyframeControls,
    TextBranches,
    generate_first_frame,
    generate_keyframes_11,
    interpolate_groups_11,
)

ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("FUSIONFRAMES_PARITY_KV11_DIR", ROOT.parent / "shared" / "parity_kv11"))
TOLERANCE = 1e-4

if not PARITY_DIR.is_dir():
    pytest.skip(f"no Kandinsky Video 1.1 parity cases at {PARITY_DIR}", allow_module_level=True)


def case_dirs(kind: str) -> list[Path]:
    return sorted(p for p in PARITY_DIR.iterdir() if p.is_dir() and p.name.startswith(kind))


def load_io(case: Path) -> dict:
    return torch.load(case / "io.pt", map_location="cpu", weights_only=True)


def config_of(case: Path) -> dict:
    return json.loads((case / "config.json").read_text())


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm().clamp(min=1e-12)).item()


class ReplayNetwork(nn.Module):
    """Returns the recorded network output of each step in turn; checks step 0's inputs."""

    def __init__(
        self, steps: list[dict], expected_inputs: dict[str, Any], names: tuple[str, ...], latent: slice
    ) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the stages read the dtype from the parameters
        self.outputs = [s["model_output"] for s in steps]
        self.x_t = [s["x_t"] for s in steps]
        self.latent = latent  # where the noisy latent sits in the input channels
        self.errors: list[float] = []
        self.expected = expected_inputs
        self.names = names
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        given = dict(zip(self.names, args, strict=False))
        given |= {REFERENCE_NAMES.get(k, k): v for k, v in kwargs.items()}
        if self.calls == 0:
            assert set(given) == set(self.expected), (sorted(given), sorted(self.expected))
            for name, want in self.expected.items():
                got = given[name]
                if torch.is_tensor(want):
                    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
                    assert got.shape == want.shape, (name, got.shape, want.shape)
                    same = rel_err(got, want) <= 1e-6 if got.is_floating_point() else torch.equal(got, want)
                    assert same, name
                else:
                    assert got == want, (name, got, want)
        rows = len(self.x_t[self.calls])
        self.errors.append(rel_err(given["x"][:rows, self.latent], self.x_t[self.calls]))
        assert self.errors[-1] <= TOLERANCE, (self.calls, self.errors[-1])
        output = self.outputs[self.calls]
        self.calls += 1
        return output


# Our U-Net's argument names -> the reference's (the recorded model_inputs use the latter).
REFERENCE_NAMES = {"temporal_positions": "temporal_embed", "num_temporal_groups": "num_predicted_groups"}
POSITIONAL = ("x", "time", "context", "context_mask")


def settings_of(kind: str) -> DDPMSettings:
    """The sampler settings recorded in the schedules case (the reference's defaults otherwise)."""
    cases = case_dirs("diffusion_schedules")
    if cases:
        return DDPMSettings.from_dict(config_of(cases[0])[f"{kind}_sampler"])
    return DDPMSettings() if kind == "keyframe" else interpolation_settings_11()


def record_steps(schedule) -> tuple[list[torch.Tensor], Any]:
    """Wrap ``schedule.step`` to collect each step's input ``x``."""
    seen: list[torch.Tensor] = []
    original = schedule.step

    def step(index, x, output, noise):
        seen.append(x.clone())
        return original(index, x, output, noise)

    object.__setattr__(schedule, "step", step)
    return seen, schedule


# -- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", case_dirs("diffusion_schedules"), ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["keyframe", "interpolation"])
def test_diffusion_schedules(case: Path, kind: str) -> None:
    config, io = config_of(case), load_io(case)
    settings = DDPMSettings.from_dict(config[f"{kind}_sampler"])
    record = io[kind]
    schedule = settings.schedule()
    assert rel_err(settings.scheduler().betas, record["betas"]) <= 1e-5
    assert rel_err(schedule.alphas_cumprod, record["alphas_cumprod"]) <= 1e-5
    assert torch.equal(schedule.timesteps, record["timesteps"])
    assert torch.equal(settings.schedule(config["case"]["short_steps"]).timesteps, record["timesteps_short"])
    for step in record["steps"]:
        index = int((schedule.timesteps == step["t"]).nonzero())
        noise = step["noise"] if schedule.draws_noise(index) else None
        prev, x0 = schedule.step(index, step["sample"], step["model_output"], noise)
        assert rel_err(x0, step["pred_original_sample"]) <= TOLERANCE
        assert rel_err(prev, step["prev_sample"]) <= TOLERANCE
    augment = io["add_noise"]
    noisy = settings_of("keyframe").schedule().add_noise(augment["x"], augment["noise"], augment["t"])
    assert rel_err(noisy, augment["noisy"]) <= 1e-6


# -- loops with replayed network outputs --------------------------------------------------------


def text_of(io: dict, rows: int, null: torch.Tensor) -> TextBranches:
    """The reference repeats one prompt's context per row; the stages take it once."""
    context, mask = io["context"][:1], io["context_mask"][:1]
    assert torch.equal(io["context"], context.expand(rows, -1, -1))
    return TextBranches.with_null(context, mask, null)


def null_of(inputs: dict, rows: int) -> torch.Tensor:
    """The null embedding as the reference placed it: slot 0 of the first unconditional row."""
    return inputs["context"][rows, 0]


def run_first_frame(io: dict, run: dict, steps: int | None, network: nn.Module) -> torch.Tensor:
    inputs = run["steps"][0]["model_inputs"] if "steps" in run else run["step0"]["model_inputs"]
    text = text_of(io, 1, null_of(inputs, 1))
    schedule = settings_of("keyframe").schedule(steps)
    generator = torch.Generator().manual_seed(io["seed"])
    return generate_first_frame(
        network, text, tuple(io["shape"][1:]), io["guidance_weight"], schedule, generator
    )


def run_keyframes(io: dict, run: dict, steps: int | None, network: nn.Module) -> torch.Tensor:
    frames = io["num_frames"]
    inputs = run["steps"][0]["model_inputs"] if "steps" in run else run["step0"]["model_inputs"]
    text = text_of(io, frames, null_of(inputs, frames))
    controls = KeyframeControls(
        prompt_weight=io["guidance_weight"],
        image_weight=io["guidance_weight_image"],
        motion_score=io["motion_score"],
        noise_augmentation=io["noise_augmentation"],
    )
    schedule = settings_of("keyframe").schedule(steps)
    generator = torch.Generator().manual_seed(io["seed"])
    return generate_keyframes_11(network, text, io["key_frame"], frames, controls, schedule, generator)


def run_interpolation(io: dict, run: dict, steps: int | None, network: nn.Module) -> torch.Tensor:
    groups = io["shape"][0]
    inputs = run["steps"][0]["model_inputs"] if "steps" in run else run["step0"]["model_inputs"]
    text = text_of(io, groups, null_of(inputs, groups))
    schedule = settings_of("interpolation").schedule(steps)
    generator = torch.Generator().manual_seed(io["seed"])
    return interpolate_groups_11(
        network, text, io["key_frames"], io["skip_frames"], io["guidance_weight"], schedule, generator
    )


LOOPS = {  # the loop, the network's positional argument names, where x_t sits in its input channels
    "diffusion_first_frame": (run_first_frame, POSITIONAL, lambda io: slice(0, io["shape"][1])),
    "diffusion_keyframes": (run_keyframes, POSITIONAL, lambda io: slice(0, io["shape"][1])),
    "diffusion_interpolation": (
        run_interpolation,
        POSITIONAL,
        lambda io: slice(io["key_frames"].shape[1], io["key_frames"].shape[1] + io["shape"][1]),
    ),
}
LOOP_CASES = [case for prefix in LOOPS for case in case_dirs(prefix)]


def loop_of(case: Path):
    return next(value for prefix, value in LOOPS.items() if case.name.startswith(prefix))


@pytest.mark.parametrize("case", LOOP_CASES, ids=lambda p: p.name)
def test_short_loop_replayed(case: Path) -> None:
    """The short run from the seed, network outputs replayed: every step's x_t, then the output."""
    io = load_io(case)
    run, names, latent = loop_of(case)
    short = io["short"]
    network = ReplayNetwork(short["steps"], short["steps"][0]["model_inputs"], names, latent(io))
    assert [
        int(t)
        for t in settings_of(
            "interpolation" if case.name.startswith("diffusion_interpolation") else "keyframe"
        )
        .schedule(config_of(case)["case"]["short_steps"])
        .timesteps
    ] == list(short["timesteps"])
    output = run(io, short, config_of(case)["case"]["short_steps"], network)
    assert network.calls == len(short["steps"])
    assert rel_err(output, short["output"]) <= TOLERANCE


@pytest.mark.parametrize("case", case_dirs("diffusion_keyframes"), ids=lambda p: p.name)
def test_keyframe_augmentation_draw(case: Path) -> None:
    """The first-frame augmentation is uniform noise drawn right after the initial latent."""
    io = load_io(case)
    generator = torch.Generator().manual_seed(io["seed"])
    torch.randn((io["num_frames"], *io["key_frame"].shape), generator=generator)
    noise = torch.rand(io["key_frame"].shape, generator=generator)
    assert torch.equal(noise, io["key_frame_noise"])
    schedule = settings_of("keyframe").schedule()
    noised = schedule.add_noise(io["key_frame"], noise, io["noise_augmentation"])
    assert rel_err(noised, io["noised_key_frame"]) <= 1e-6


def guidance_of(case: Path, io: dict):
    if case.name.startswith("diffusion_keyframes"):
        return text_image(io["guidance_weight"], io["guidance_weight_image"])
    return cond_uncond(io["guidance_weight"])


@pytest.mark.parametrize("case", LOOP_CASES, ids=lambda p: p.name)
def test_full_loop_steps(case: Path) -> None:
    """The full run step by step from the recorded x_t: guidance of step 0's branches, then every
    scheduler step with the recorded guided output and noise lands on the next recorded x_t."""
    io = load_io(case)
    full = io["full"]
    kind = "interpolation" if case.name.startswith("diffusion_interpolation") else "keyframe"
    schedule = settings_of(kind).schedule()
    assert [int(t) for t in schedule.timesteps] == list(full["timesteps"])
    step0 = full["step0"]
    assert rel_err(guidance_of(case, io).combine(step0["model_output"]), step0["guided_output"]) <= 1e-6
    for index in range(len(schedule)):
        assert bool(full["noise_drawn"][index]) == schedule.draws_noise(index)
        noise = full["noise"][index] if schedule.draws_noise(index) else None
        prev, _ = schedule.step(index, full["x_t"][index], full["guided_output"][index], noise)
        expected = full["x_t"][index + 1] if index + 1 < len(schedule) else full["output"]
        assert rel_err(prev, expected) <= TOLERANCE, index
    # The loop draws the same noise from the seed: the initial latent and each step's.
    generator = torch.Generator().manual_seed(io["seed"])
    assert torch.equal(torch.randn(full["x_t"][0].shape, generator=generator), full["x_t"][0])
