"""The faster forms of the U-Net layers compute what the plain PyTorch modules compute.

``TemporalConv.frames`` (taps as batched products on the frame layout) against the Conv3d it stands
for, the 1x1 ``Conv2d`` path (both memory layouts) against ``nn.Conv2d``, and the fused AdaGN against
its written-out formula; gradients still flow through all of them (training uses the same modules).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.models.layers import (
    ConditionalGroupNorm,
    Conv2d,
    TemporalConv,
    channels_time_to_frames,
    frames_to_channels_time,
    use_fast_convs,
)


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_temporal_conv_on_frames_matches_conv3d(kernel: int, frames: int) -> None:
    torch.manual_seed(0)
    conv = TemporalConv(8, 6, kernel)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    x = torch.randn(2 * frames, 8, 3, 4)
    expected = channels_time_to_frames(
        F.conv3d(frames_to_channels_time(x, frames), conv.weight, conv.bias, padding=conv.padding)
    )
    with torch.no_grad():
        actual = conv.frames(x, frames)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # A frame of the second video never reads the first one's frames (the padding is per video).
    assert actual.shape == expected.shape


def test_temporal_conv_frames_backward_matches() -> None:
    torch.manual_seed(1)
    conv = TemporalConv(4, 4, 3)
    nn.init.normal_(conv.weight)
    x = torch.randn(6, 4, 2, 2, requires_grad=True)
    conv.frames(x, 3).square().sum().backward()
    fast_grad, weight_grad = x.grad.clone(), conv.weight.grad.clone()
    x.grad, conv.weight.grad = None, None
    channels_time_to_frames(conv(frames_to_channels_time(x, 3))).square().sum().backward()
    torch.testing.assert_close(fast_grad, x.grad)
    torch.testing.assert_close(weight_grad, conv.weight.grad)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_matches_nn_conv2d(layout: torch.memory_format, bias: bool) -> None:
    torch.manual_seed(2)
    plain = nn.Conv2d(8, 5, kernel_size=1, bias=bias)
    fast = Conv2d(8, 5, kernel_size=1, bias=bias)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8, 4, 6).contiguous(memory_format=layout)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-6)


def test_use_fast_convs_swaps_only_plain_1x1_convs_and_keeps_keys() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 1))
    keys = list(net.state_dict())
    use_fast_convs(net)
    assert [type(m) for m in net] == [Conv2d, nn.Conv2d, nn.ConvTranspose2d]
    assert list(net.state_dict()) == keys


def test_conditional_group_norm_is_the_adagn_formula() -> None:
    torch.manual_seed(3)
    norm = ConditionalGroupNorm(4, 8, 16)
    nn.init.normal_(norm.context_mlp[1].weight)
    x, embed = torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    scale, shift = norm.context_mlp(embed).chunk(2, dim=1)
    expected = F.group_norm(x, 4) * (1 + scale[..., None, None]) + shift[..., None, None]
    torch.testing.assert_close(norm(x, embed), expected, rtol=1e-5, atol=1e-5)
