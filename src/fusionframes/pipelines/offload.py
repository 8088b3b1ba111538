"""Where a pipeline's networks live: all on the device, or in CPU memory and brought in when they run.

``none``: every network on the device (fastest; the released model needs ~40 GB of GPU memory for it).

``model``: the big networks (text encoder, keyframe U-Net, interpolation U-Net, MoVQ encoder and decoder)
are kept in CPU memory and the one whose ``forward`` starts is moved to the GPU, sending the previous one
back, so at most one of them is resident. The moving is an accelerate ``ModelHook``. It is not
accelerate's ``cpu_offload_with_hook`` chain, for two reasons: ``MoVQ.decode`` is not a ``forward`` (so
the hook sits on the decoder), and a fixed chain would hold a reference to a released text encoder and
assume one stage order; one shared record of the resident network has neither problem.

``sequential``: accelerate's ``cpu_offload`` per module: weights stay in CPU memory and each submodule's
are copied in for its own forward only. The smallest footprint, and the slowest (every step re-copies).

Small parts (text projection, null embeddings, the MoVQ 1x1 quant convs) always stay on the device.
Offload trades transfer time for GPU memory, so it only means something with an accelerator: on CPU it
is an error, not a silent no-op.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from fusionframes.components import ModelComponents

OFFLOAD_MODES = ("none", "model", "sequential")
# Modules that read a child's weights directly (not through the child's forward); sequential offload
# must load their whole subtree before their forward runs.
PRELOAD_CLASSES = ["SpatialNorm"]


def validate_offload(mode: str | None, device: torch.device) -> str:
    """Check ``--offload`` against the device; ``None`` means ``none``."""
    mode = mode or "none"
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"offload: unknown {mode!r}; allowed: {', '.join(OFFLOAD_MODES)}")
    if mode != "none" and device.type == "cpu":
        raise ValueError(
            f"offload: {mode!r} keeps weights in CPU memory and moves them to a GPU as they run; "
            "with device cpu they are already there, so use --offload none (or --device cuda)"
        )
    return mode


def _hook_classes():
    from accelerate.hooks import ModelHook

    class ResidentHook(ModelHook):
        """Make the hooked module the one resident on the device before its forward runs."""

        def __init__(self, placement: Placement) -> None:
            self.placement = placement

        def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any):
            from accelerate.utils import send_to_device

            self.placement.activate(module)
            device = self.placement.device
            return send_to_device(args, device), send_to_device(kwargs, device)

    return ResidentHook


class Placement:
    """Puts networks where an offload mode wants them; ``model`` mode tracks which one is resident."""

    def __init__(self, mode: str | None, device: torch.device, storage: str | torch.device = "cpu") -> None:
        self.mode = validate_offload(mode, device)
        self.device = device
        self.storage = torch.device(storage)
        self._resident: weakref.ref[nn.Module] | None = None

    def place_components(
        self, components: ModelComponents, dtype: torch.dtype, decoder_dtype: torch.dtype | None = None
    ) -> ModelComponents:
        """Move ``components`` (in place) to the device, or to CPU memory with offload hooks attached;
        the MoVQs in ``decoder_dtype`` (None: ``dtype``)."""
        if self.mode == "none":
            return components.to(self.device, dtype, decoder_dtype)
        components.to(self.storage, dtype, decoder_dtype)
        components.projection.to(self.device)
        if components.layout_prior is not None:
            components.layout_prior.to(self.device)
        components.keyframe_null = components.keyframe_null.to(self.device)
        components.interpolation_null = components.interpolation_null.to(self.device)
        movq = components.movq
        movq.quant_conv.to(self.device)
        movq.post_quant_conv.to(self.device)
        for module in (components.keyframe_unet, components.interpolation_unet, movq.encoder, movq.decoder):
            self.place(module)
        return components

    def place(self, module: nn.Module) -> nn.Module:
        """Place one big network (also used for the text encoder, which is loaded on first use)."""
        if self.mode == "none":
            return module.to(self.device)
        if self.mode == "sequential":
            from accelerate import cpu_offload

            return cpu_offload(module, execution_device=self.device, preload_module_classes=PRELOAD_CLASSES)
        from accelerate.hooks import add_hook_to_module

        module.to(self.storage)
        return add_hook_to_module(module, _hook_classes()(self))

    def activate(self, module: nn.Module) -> None:
        """Send the resident network back to CPU memory and bring ``module`` in (no-op if it is there)."""
        resident = self._resident() if self._resident is not None else None
        if resident is module:
            return
        if resident is not None:
            resident.to(self.storage)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        module.to(self.device)
        self._resident = weakref.ref(module)

    @property
    def resident(self) -> nn.Module | None:
        """The network now on the device (``model`` mode), or None."""
        return self._resident() if self._resident is not None else None
