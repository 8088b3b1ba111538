"""Optional speed-ups applied to a placed model: ``torch.compile`` and channels-last convolutions.

Both are decided by measurement (docs/benchmarks.md). On a 2-core AVX-512 CPU with the ``small``
preset, channels-last weights make the MoVQ decoder about 20% faster in float32 and the U-Nets about
8% slower, so ``channels_last=None`` (auto) converts the MoVQ decoder on CPU only. ``torch.compile``
did not pay there (see the doc), so it is off by default.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionframes.components import ModelComponents

COMPILE_CHOICES = ("none", "unets", "all")


def validate_compile(value: bool | str | None, offload: str = "none") -> str:
    """``False``/None -> "none", ``True`` -> "unets"; "all" also compiles the MoVQ decoder."""
    if value is None or value is False:
        choice = "none"
    elif value is True:
        choice = "unets"
    else:
        choice = value
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile: unknown {value!r}; allowed: {', '.join(COMPILE_CHOICES)} (or True/False)")
    if choice != "none" and offload != "none":
        # Offload hooks move weights inside forward; tracing through them breaks the graph every call.
        raise ValueError(f"compile: cannot be combined with offload {offload!r}; use one or the other")
    return choice


def compile_components(components: ModelComponents, choice: str) -> list[str]:
    """Compile in place (``nn.Module.compile`` keeps the module and its state-dict keys); names done."""
    targets: dict[str, nn.Module] = {}
    if choice in ("unets", "all"):
        targets["keyframe_unet"] = components.keyframe_unet
        targets["interpolation_unet"] = components.interpolation_unet
    if choice == "all":
        targets["movq.decoder"] = components.movq.decoder
        if components.video_movq is not None:  # 1.1's temporal decoder
            targets["video_movq.decoder"] = components.video_movq.decoder
    for module in targets.values():
        module.compile()
    return list(targets)


def use_channels_last(device: torch.device, requested: bool | None) -> bool:
    """``None`` (auto): on CPU only, where it was measured to pay for the MoVQ decoder."""
    if requested is None:
        return device.type == "cpu"
    if not isinstance(requested, bool):
        raise ValueError(f"channels_last: must be True, False or None (auto), got {requested!r}")
    return requested


def to_channels_last(module: nn.Module) -> int:
    """Store every 2D convolution weight of ``module`` channels-last; returns how many were converted.

    ``module.to(memory_format=...)`` cannot be used: the U-Nets also hold 5D Conv3d weights. Feed such a
    module channels-last inputs (:func:`memory_format_of`): with channels-first inputs the MoVQ decoder
    mixes layouts (its norms take the raw latent) and ends up slower than without conversion.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.weight.dim() == 4:
            layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)
            count += 1
    return count


def memory_format_of(module: nn.Module) -> torch.memory_format:
    """The layout ``module``'s convolutions were stored in (judged by its first k x k 2D kernel, k > 1)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.weight.dim() == 4 and layer.weight.shape[-1] > 1:
            weight = layer.weight
            if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
                return torch.channels_last
            return torch.contiguous_format
    return torch.contiguous_format
