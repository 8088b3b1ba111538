"""The keyframe objective's loss: epsilon prediction, the target rebuilt from what the network saw."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusionframes.io.checkpoints import load_model_folder
from fusionframes.training.config import config_from_dict


class _Recorder(nn.Module):
    """Stands in for the keyframe U-Net: remembers its inputs and answers zero."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, time, *args, **kwargs) -> torch.Tensor:
        self.calls.append((x.detach().clone(), time.detach().clone()))
        return torch.zeros_like(x)


def test_keyframe_objective_targets_the_noise(tiny_model_dir) -> None:
    """With a network answering zero, the loss is the mean squared noise per video; the noise is
    rebuilt here from the noisy input the network saw, so a wrong target or timestep fails."""
    from fusionframes.training.stages import build_objective

    cfg = config_from_dict({"text_dropout": 0.0})
    objective, tokenizer = build_objective(cfg, load_model_folder(tiny_model_dir))
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
    per_video = noise.pow(2).reshape(b, -1).mean(1)
    assert float(loss) == pytest.approx(float(per_video.mean()), rel=1e-4)
