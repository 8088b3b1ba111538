"""The sampling core's seams: starts, anchors, guidance branches and how results are delivered."""

from __future__ import annotations

import pytest
import torch

from fusionframes.config import TrainedWith
from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.pipelines.outputs import split_delivery
from fusionframes.pipelines.stages import KeyframeConditioning, Start, TextBranches, generate_keyframes


class Echo(torch.nn.Module):
    """A keyframe "U-Net" whose epsilon is zero: every step keeps the rescaled input."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(x)


def _cond() -> KeyframeConditioning:
    context, mask = torch.zeros(1, 3, 4), torch.ones(1, 3)
    return KeyframeConditioning(TextBranches(context, mask, context, mask), 2.0)


def test_a_start_is_init_latents_or_an_anchor() -> None:
    with pytest.raises(ValueError, match="start: give init latents or an anchor, not both"):
        Start(init=torch.zeros(1), anchor=torch.zeros(1))


def test_anchored_keyframes_end_on_the_anchor_and_need_ddpm() -> None:
    param = Parameterisation(TrainedWith(thresholding=None))
    anchor = torch.randn(1, 2, 4, 4)
    start = Start(anchor=anchor)
    out = generate_keyframes(Echo(), param, _cond(), (3, 2, 4, 4), param.schedule(4), start=start)
    assert out.shape == (3, 2, 4, 4) and torch.equal(out[:1], anchor)
    with pytest.raises(ValueError, match="scheduler: an anchored first keyframe needs 'ddpm', not 'ddim'"):
        generate_keyframes(
            Echo(), param, _cond(), (3, 2, 4, 4), param.schedule(4, scheduler="ddim"), start=start
        )


def test_same_seed_same_keyframes_for_every_scheduler() -> None:
    param = Parameterisation(TrainedWith(thresholding=None))
    for name in ("ddpm", "ddim", "dpm++2m", "unipc"):
        runs = [
            generate_keyframes(
                Echo(),
                param,
                _cond(),
                (2, 2, 4, 4),
                param.schedule(3, scheduler=name),
                torch.Generator().manual_seed(1),
            )
            for _ in range(2)
        ]
        assert torch.equal(runs[0], runs[1]), name


def test_delivery_options_are_taken_out_and_checked() -> None:
    options = {"output_type": "np", "progress": False, "width": 64}
    assert split_delivery(options) == {"output_type": "np", "progress": False}
    assert options == {"width": 64}
    with pytest.raises(ValueError, match="output_type: unknown 'gif'; allowed: pil, np, pt"):
        split_delivery({"output_type": "gif"})
