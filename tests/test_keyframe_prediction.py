"""A keyframe U-Net that predicts v instead of epsilon (``keyframe_prediction``): the training target and
weights, and every keyframe sampler reading the model folder's setting. The released model predicts
epsilon, so nothing changes for it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fusionframes import TextToVideoPipeline
from fusionframes.config import SamplingDefaults
from fusionframes.diffusion.sampling import predict_x0
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.pipelines.img2img import ddpm_from
from fusionframes.pipelines.movie import sample_anchored_keyframes
from fusionframes.training.config import config_from_dict
from fusionframes.training.objectives import signal_to_noise, v_to_epsilon_scale


def test_scaled_v_error_is_the_epsilon_error_of_the_same_x0_estimate() -> None:
    schedule = DiffusionSchedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([5, 300, 700, 990])
    x0, noise, v_hat = (torch.randn(4, 3, 5, 5, generator=g) for _ in range(3))
    x_t = schedule.add_noise(x0, noise, t)
    x0_hat = predict_x0(schedule, x_t, t, v_hat, "v")
    a = schedule.at("sqrt_alphas_cumprod", t, 4)
    s = schedule.at("sqrt_one_minus_alphas_cumprod", t, 4)
    eps_hat = (x_t - a * x0_hat) / s
    v_error = (v_hat - schedule.velocity(x0, noise, t)).pow(2).flatten(1).mean(1)
    eps_error = (eps_hat - noise).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(v_error * v_to_epsilon_scale(schedule, t), eps_error, rtol=1e-4, atol=1e-7)


class _Recorder(nn.Module):
    """Stands in for the keyframe U-Net: remembers its inputs and answers zero."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, time, *args, **kwargs) -> torch.Tensor:
        self.calls.append((x.detach().clone(), time.detach().clone()))
        return torch.zeros_like(x)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_keyframe_objective_targets_what_the_network_predicts(tiny_model_dir, prediction: str) -> None:
    """With a network answering zero, the loss is the mean squared target (noise or v) per video,
    times SNR / (1 + SNR) for v; the target is rebuilt here from the noisy input the network saw."""
    from fusionframes.training.stages import build_objective

    cfg = config_from_dict({"keyframe_prediction": prediction, "text_dropout": 0.0})
    objective, tokenizer = build_objective(cfg, load_model_folder(tiny_model_dir))
    assert objective.prediction == prediction
    objective.unet = _Recorder()
    b, f = 3, 4
    latents = torch.randn(b, f, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(["a red circle moving right"] * b, padding="longest", return_tensors="pt")
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        loss = objective(latents, tokens["input_ids"], tokens["attention_mask"], g)
    x_t, time = objective.unet.calls[0]
    schedule = objective.schedule
    t = (time / schedule.time_scale).round().long()
    x0 = latents.flatten(0, 1)
    a = schedule.at("sqrt_alphas_cumprod", t, 4)
    s = schedule.at("sqrt_one_minus_alphas_cumprod", t, 4)
    noise = (x_t - a * x0) / s
    target = noise if prediction == "epsilon" else schedule.velocity(x0, noise, t)
    per_video = target.pow(2).reshape(b, -1).mean(1)
    if prediction == "v":
        snr = signal_to_noise(schedule, t[::f])
        per_video = per_video * (snr / (1.0 + snr)).float()
    assert float(loss) == pytest.approx(float(per_video.mean()), rel=1e-4)


def _pointing_at(target: torch.Tensor, schedule: DiffusionSchedule, steps: int):
    """A v model that always says the clean latent is ``target`` (the official network times)."""

    def denoise(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        t = torch.div(time, 1000 // steps, rounding_mode="floor").long()
        a = schedule.at("sqrt_alphas_cumprod", t, x.ndim)
        s = schedule.at("sqrt_one_minus_alphas_cumprod", t, x.ndim)
        return (a * x - target) / s

    return denoise


def test_image_and_anchored_samplers_read_v_as_v() -> None:
    """Read as v, a model pointing at ``target`` ends on it; read as epsilon, it ends elsewhere."""
    steps = 10
    schedule = DiffusionSchedule.cosine(steps)
    g = torch.Generator().manual_seed(2)
    target = torch.randn(3, 2, 4, 4, generator=g)
    start = torch.randn(3, 2, 4, 4, generator=g)
    denoise = _pointing_at(target, schedule, steps)
    out = ddpm_from(denoise, start, schedule, steps - 1, g, percentile=None, prediction="v")
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)
    wrong = ddpm_from(denoise, start, schedule, steps - 1, g, percentile=None)
    assert (wrong - target).abs().max() > 0.1

    anchor = target[:1]
    out = sample_anchored_keyframes(
        denoise, start, schedule, anchor, g, False, percentile=None, prediction="v"
    )
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)


def test_pipeline_samples_keyframes_with_the_folders_prediction(tiny_model_dir) -> None:
    fast = {"num_inference_steps": 3, "progress": False, "output_type": "pt", "fps": "low"}
    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    assert pipe.config.sampling.keyframe_prediction == "epsilon"
    plain = pipe("a red star", seed=2, **fast).frames
    pipe.config = dataclasses.replace(
        pipe.config, sampling=dataclasses.replace(pipe.config.sampling, keyframe_prediction="v")
    )
    as_v = pipe("a red star", seed=2, **fast).frames
    assert torch.isfinite(as_v).all() and (as_v - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="keyframe_prediction: unknown 'x0'; allowed: 'epsilon', 'v'"):
        SamplingDefaults(keyframe_prediction="x0")
