"""Peak memory and FLOPs of the released models at full size, predicted without allocating them.

    python benchmarks/memory_model.py                         # 1.0 and 1.1, 512x512 and 640x384, every fps
    python benchmarks/memory_model.py --release 1.0 --size 512x512 --fps high --json out.json
    python benchmarks/memory_model.py --validate builtin      # predicted vs measured on this CPU
    python benchmarks/memory_model.py --validate mid          # the same for a mid-size random config

How: the networks are built on the ``meta`` device (shapes, no storage) in the run's dtype and every
stage runs on meta inputs of the real shapes. :class:`LiveTensors`, a ``TorchDispatchMode``, sees every
tensor an aten op creates and adds its storage's bytes to a running total when it appears and subtracts
them when the storage is freed (a ``weakref.finalize`` on the storage), so its peak is the peak of live
tensor bytes the stage adds on top of what was resident. Attention is routed to the fused kernel
(``_scaled_dot_product_flash_attention_for_cpu``, output plus log-sum-exp, like the GPU's flash and
memory-efficient kernels): on meta, ``scaled_dot_product_attention`` would otherwise take the math path
and hold the full score matrix, which no real run does. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` on the same meta run (matmuls, convolutions, attention).

What a stage's peak is made of: the weights resident on the device under the offload mode, plus the
stage's inputs and outputs, plus the peak of its transient tensors. Diffusion stages are run with one
sampler step: every step allocates the same, so one step's peak is the stage's peak, and FLOPs are one
network call times the number of calls. Not counted: the CUDA context (~0.3-0.5 GiB per process),
cuDNN/cuBLAS workspaces, and the caching allocator's rounding and fragmentation (``max_memory_allocated``
counts rounded blocks; ``nvidia-smi`` also shows reserved blocks).

Offload modes: ``none`` keeps every network on the device (the text encoder is freed after encoding, as
``fusionframes generate`` does); ``model`` keeps only the running stage's network (plus the small parts:
text projection, null embeddings, MoVQ quant convs); ``sequential`` keeps only the module whose forward
is running (the largest such module is what counts). Time at a share of an accelerator's dense bf16
peak: counted FLOPs / (share x peak); offload adds the weight copies at ``--pcie-gbps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
MIB = 2**20
ACCELERATORS = {"A100": 312e12, "H100": 989e12}  # dense bf16 tensor-core peak, FLOP/s (SXM datasheets)
SIZES = {"512x512": (512, 512), "640x384": (640, 384)}
FPS = ("low", "medium", "high")
FPS_PASSES = {"low": 0, "medium": 1, "high": 2}
PASS_SKIP_FRAMES = (3, 1)
TEXT_TOKENS = 128  # the released text length (prompt padded to 128 tokens)
# Flan-UL2's encoder, the released text encoder (google/flan-ul2 config.json; the encoder half only).
FLAN_UL2_ENCODER = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 256,
    "d_ff": 16384,
    "num_layers": 32,
    "num_heads": 16,
    "feed_forward_proj": "gated-silu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.0,
}


# ---------------------------------------------------------------------------------------------
# the tracker


class LiveTensors(TorchDispatchMode):
    """Running total and peak of the bytes of tensor storages created by aten ops while active.

    A storage counts from the op that creates it until it is freed. Outputs that alias an input (views,
    in-place ops) add nothing. ``live`` at exit is what the traced code kept (its outputs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in inputs or key in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._freed, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            id(t.untyped_storage())
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and not t.is_sparse
        }
        out = func(*args, **kwargs)
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and not tensor.is_sparse:
                self._track(tensor, inputs)
        return out


class FusedAttention(TorchFunctionMode):
    """Route ``F.scaled_dot_product_attention`` to the fused kernel on every device (see the module doc)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, key, value = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if mask is not None and mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill(
                    ~mask, float("-inf")
                )
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, attn_mask=mask
            )[0]
        return func(*args, **kwargs)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


@dataclass
class Usage:
    """What one traced call added: peak and kept bytes above what was resident, and counted FLOPs."""

    peak: int
    kept: int
    flops: int


def trace(fn: Callable[[], Any]) -> tuple[Any, Usage]:
    """Run ``fn`` under the tracker, fused attention and the FLOP counter; returns its result."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    live = LiveTensors()
    with torch.no_grad(), FusedAttention(), FlopCounterMode(display=False, custom_mapping=mapping) as flops:
        with live:
            out = fn()
    return out, Usage(live.peak, live.live, flops.get_total_flops())


# ---------------------------------------------------------------------------------------------
# the model on meta


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[id(storage)] = storage.nbytes()
    return sum(seen.values())


def module_bytes(module: nn.Module) -> int:
    return tensor_bytes([*module.parameters(), *module.buffers()])


def largest_leaf_bytes(module: nn.Module) -> int:
    """Bytes of the largest module holding parameters of its own: what sequential offload brings in at once
    (accelerate hooks every module with direct parameters)."""
    best = 0
    for sub in module.modules():
        own = [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]
        if own:
            best = max(best, tensor_bytes(own))
    return best


def int8_linear_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of ``module`` with every Linear weight in int8 plus one ``dtype`` scale per output channel
    (torchao ``Int8WeightOnlyConfig``, as ``--text-quantization int8``); everything else unchanged."""
    total = module_bytes(module)
    scale = torch.empty((), dtype=dtype).element_size()
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            weight = sub.weight
            total += weight.numel() * (1 - weight.element_size()) + weight.shape[0] * scale
    return total


def text_encoder_on_meta(sizes: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        return T5EncoderModel(T5Config(**sizes)).to(dtype).eval()


def text_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The pipeline's text encoder precision: float16 runs overflow in T5, so GPUs use bfloat16 there."""
    return torch.bfloat16 if dtype == torch.float16 else dtype


@dataclass
class Stage:
    """One stage's traced usage, the network it runs and how many network calls it makes."""

    name: str
    network: str  # key into Model.networks: whose weights model offload brings in
    usage: Usage
    calls: int = 1
    inputs: int = 0  # bytes of stage inputs resident before it starts (latents, context)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "network": self.network,
            "calls": self.calls,
            "inputs_bytes": self.inputs,
            "transient_peak_bytes": self.usage.peak,
            "kept_bytes": self.usage.kept,
            "flops": self.usage.flops * self.calls,
        }


@dataclass
class Model:
    """A release's networks on meta in one dtype, with the per-network byte counts offload needs."""

    release: str
    dtype: torch.dtype
    components: Any
    text_encoder: nn.Module
    networks: dict[str, nn.Module] = field(default_factory=dict)
    traced: dict[tuple, Any] = field(default_factory=dict)  # stages already traced, by their arguments

    def once(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(self, *args)``, traced once per argument tuple (fps settings share their first stages)."""
        key = (fn.__name__, *args)
        if key not in self.traced:
            self.traced[key] = fn(self, *args)
        return self.traced[key]

    @classmethod
    def build(
        cls, release: str, dtype: torch.dtype, config=None, text_sizes: dict[str, Any] | None = None
    ) -> Model:
        from fusionframes.components import build_components
        from fusionframes.config import preset

        config = config or preset(f"kandinsky-video-{release}")
        components = build_components(config, "meta", name=release, device="meta")
        components.to("meta", dtype)
        text = text_encoder_on_meta(text_sizes or FLAN_UL2_ENCODER, text_dtype_for(dtype))
        networks = {
            "text_encoder": text,
            "keyframe_unet": components.keyframe_unet,
            "interpolation_unet": components.interpolation_unet,
            "movq_decoder": (components.video_movq or components.movq).decoder,
            "movq_encoder": components.movq.encoder,
        }
        if components.video_movq is not None:
            networks["image_movq_decoder"] = components.movq.decoder
        return cls(release, dtype, components, text, networks)

    def small_bytes(self) -> int:
        """What stays on the device in every offload mode: projections, null embeddings, quant convs."""
        c = self.components
        parts: list[nn.Module] = [c.projection, c.movq.quant_conv, c.movq.post_quant_conv]
        if c.interpolation_projection is not None:
            parts.append(c.interpolation_projection)
        if c.video_movq is not None:
            parts += [c.video_movq.quant_conv, c.video_movq.post_quant_conv]
        if c.layout_prior is not None:
            parts.append(c.layout_prior)
        return sum(module_bytes(p) for p in parts) + tensor_bytes([c.keyframe_null, c.interpolation_null])

    def network_bytes(self, key: str, text_int8: bool = False) -> int:
        if key == "text_encoder" and text_int8:
            return int8_linear_bytes(self.text_encoder, text_dtype_for(self.dtype))
        return module_bytes(self.networks[key])

    def leaf_bytes(self, key: str) -> int:
        return largest_leaf_bytes(self.networks[key])

    def parameters(self) -> dict[str, int]:
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.networks.items()}


def meta_randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


# ---------------------------------------------------------------------------------------------
# stages


def text_stage(model: Model, batch: int = 2, tokens: int = TEXT_TOKENS) -> Stage:
    """Prompt and negative prompt in one batch through the T5 encoder and the projection."""
    ids = torch.zeros(batch, tokens, dtype=torch.long, device="meta")

    def run():  # no attention mask: a full 128-token batch (the mask's bias is L x L, negligible)
        hidden = model.text_encoder(input_ids=ids).last_hidden_state
        return model.components.projection(hidden.float())

    _, usage = trace(run)
    return Stage("text", "text_encoder", usage)


def latent_size(model: Model, width: int, height: int) -> tuple[int, int]:
    factor = model.components.config.movq.scale_factor
    return height // factor, width // factor


def keyframe_stage_10(model: Model, width: int, height: int, steps: int, num_frames: int) -> Stage:
    from fusionframes.diffusion.parameterisation import Parameterisation
    from fusionframes.pipelines.stages import KeyframeConditioning, TextBranches, generate_keyframes

    config = model.components.config
    h, w = latent_size(model, width, height)
    dim = config.text.context_dim
    context = meta_randn(1, TEXT_TOKENS, dim)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long, device="meta")
    shape = (config.keyframe_unet.num_channels, h, w)

    param = Parameterisation(config.keyframe_unet.training)

    def run():
        return generate_keyframes(
            model.components.keyframe_unet,
            param,
            KeyframeConditioning(TextBranches(context, mask, context, mask), 3.0),
            (num_frames, *shape),
            param.schedule(1),
        )

    _, usage = trace(run)
    return Stage("keyframes", "keyframe_unet", usage, steps, tensor_bytes([context, mask]))


def interpolation_stage_10(
    model: Model, width: int, height: int, steps: int, frames: int, index: int
) -> Stage:
    from fusionframes.diffusion.parameterisation import Parameterisation
    from fusionframes.pipelines.stages import InterpolationConditioning, interpolate_pass

    config = model.components.config
    h, w = latent_size(model, width, height)
    latents = meta_randn(frames, config.keyframe_unet.out_channels, h, w)

    param = Parameterisation(config.interpolation_unet.training)

    def run():
        return interpolate_pass(
            model.components.interpolation_unet,
            param,
            InterpolationConditioning(model.components.interpolation_null, 1.0),
            latents,
            PASS_SKIP_FRAMES[index],
            param.schedule(1),
        )

    _, usage = trace(run)
    return Stage(f"interpolation {index + 1}", "interpolation_unet", usage, steps, tensor_bytes([latents]))


def decoding_stage(model: Model, width: int, height: int, frames: int, chunk: int | None) -> Stage:
    """1.0: :func:`decode_latents` in chunks of ``chunk`` frames. 1.1: the temporal decoder in the
    reference's pieces (``chunk`` None) or in overlapped windows of ``chunk`` frames."""
    from fusionframes.models.movq import decode_clip
    from fusionframes.pipelines.stages import decode_latents

    h, w = latent_size(model, width, height)
    c = model.components
    latents = meta_randn(frames, c.config.movq.z_channels, h, w, dtype=model.dtype)
    if c.video_movq is None:

        def run():
            return decode_latents(c.movq, latents, chunk or 4, progress=False)

    else:

        def run():
            out = decode_clip(c.video_movq, latents, chunk, overlap=min(2, chunk - 1) if chunk else 0)
            return out.float().add(1.0).div(2.0).clamp(0.0, 1.0)

    _, usage = trace(run)
    return Stage("decoding", "movq_decoder", usage, 1, tensor_bytes([latents]))


def first_frame_stage_11(model: Model, width: int, height: int, steps: int) -> list[Stage]:
    """The first frame in image mode at twice the latent size (two rows), its image decode and its
    re-encoding at the video's size (the 1.1 pipeline's order)."""
    c = model.components
    h, w = latent_size(model, width, height)
    channels = c.config.keyframe_unet.num_channels
    context = meta_randn(2, TEXT_TOKENS, c.config.text.context_dim, dtype=model.dtype)
    mask = torch.ones(2, TEXT_TOKENS, dtype=torch.bool, device="meta")
    rows = meta_randn(2, channels, 2 * h, 2 * w, dtype=model.dtype)
    time_ = torch.zeros(2, dtype=model.dtype, device="meta")
    _, unet = trace(lambda: c.keyframe_unet(rows, time_, context, mask))
    latent = meta_randn(1, c.config.movq.z_channels, 2 * h, 2 * w, dtype=model.dtype)
    _, decode = trace(lambda: c.movq.decode(latent))
    image = meta_randn(1, 3, height, width, dtype=model.dtype)
    _, encode = trace(lambda: c.movq.encode(image))
    inputs = tensor_bytes([context, mask])
    return [
        Stage("first frame", "keyframe_unet", unet, steps, inputs),
        Stage("first frame decode", "image_movq_decoder", decode, 1, tensor_bytes([latent])),
        Stage("first frame encode", "movq_encoder", encode, 1, tensor_bytes([image])),
    ]


def keyframe_stage_11(model: Model, width: int, height: int, steps: int, num_frames: int) -> Stage:
    """Three blocks of N rows (prompt + image, null text + image, null text without image)."""
    c = model.components
    h, w = latent_size(model, width, height)
    rows = 3 * num_frames
    context = meta_randn(rows, TEXT_TOKENS, c.config.text.context_dim, dtype=model.dtype)
    mask = torch.ones(rows, TEXT_TOKENS, dtype=torch.bool, device="meta")
    x = meta_randn(num_frames, c.config.keyframe_unet.out_channels, h, w)
    extra = meta_randn(rows, c.config.keyframe_unet.num_channels - x.shape[1], h, w)
    positions = torch.zeros(rows, dtype=model.dtype, device="meta")
    scores = torch.zeros(rows, dtype=torch.int32, device="meta")

    def run():
        net_in = torch.cat([x.repeat(3, 1, 1, 1), extra], dim=1).to(model.dtype)
        out = c.keyframe_unet(
            net_in,
            positions,
            context,
            mask,
            temporal_positions=positions,
            num_frames=num_frames,
            noise_aug_time=scores,
            motion_score=scores,
        ).float()
        cond, image, uncond = out.chunk(3)
        return x + (uncond + 5.0 * (cond - image) + 2.0 * (image - uncond))  # the step's update

    _, usage = trace(run)
    return Stage("keyframes", "keyframe_unet", usage, steps, tensor_bytes([context, mask, x, extra]))


def interpolation_stage_11(
    model: Model, width: int, height: int, steps: int, frames: int, index: int
) -> Stage:
    """Two blocks of G = frames - 1 groups (prompt and neighbours; null text, no neighbours, temporal
    mask 0), as the 1.1 sampler lays them out."""
    c = model.components
    h, w = latent_size(model, width, height)
    groups = frames - 1
    channels = c.config.keyframe_unet.out_channels
    latents = meta_randn(frames, channels, h, w)
    context = meta_randn(2 * groups, TEXT_TOKENS, c.config.text.context_dim, dtype=model.dtype)
    mask = torch.ones(2 * groups, TEXT_TOKENS, dtype=torch.bool, device="meta")
    zeros = torch.zeros(2 * groups, dtype=torch.int32, device="meta")
    temporal_mask = torch.ones(2 * groups, dtype=model.dtype, device="meta")
    time_ = torch.zeros(2 * groups, dtype=torch.long, device="meta")

    def run():
        x = meta_randn(groups, 3 * channels, h, w)
        left, right = latents[:-1], latents[1:]
        both_left = torch.cat([left, torch.zeros_like(left)])
        both_right = torch.cat([right, torch.zeros_like(right)])
        rows = torch.cat([both_left, x.repeat(2, 1, 1, 1), both_right], dim=1).to(model.dtype)
        out = c.interpolation_unet(
            rows,
            time_,
            context,
            mask,
            num_temporal_groups=groups,
            perturbation_time=zeros,
            skip_frames=zeros,
            temporal_mask=temporal_mask,
        ).float()
        cond, uncond = out.chunk(2)
        groups_out = x + uncond + 0.5 * (cond - uncond)
        return torch.cat([latents[:-1, None], groups_out.reshape(groups, 3, channels, h, w)], 1)

    _, usage = trace(run)
    inputs = tensor_bytes([latents, context, mask])
    return Stage(f"interpolation {index + 1}", "interpolation_unet", usage, steps, inputs)


def video_stages(
    model: Model, width: int, height: int, fps: str, decode_chunk: int | None = None
) -> list[Stage]:
    """Every stage of one video, in order."""
    config = model.components.config
    sampling = config.sampling
    steps = sampling.num_inference_steps
    interp_steps = sampling.interpolation_steps or steps
    frames = config.keyframe_unet.num_frames
    stages = [model.once(text_stage)]
    if model.release == "1.1":
        stages += model.once(first_frame_stage_11, width, height, steps)
        stages.append(model.once(keyframe_stage_11, width, height, steps, frames))
        interpolation = interpolation_stage_11
    else:
        stages.append(model.once(keyframe_stage_10, width, height, steps, frames))
        interpolation = interpolation_stage_10
    for index in range(FPS_PASSES[fps]):
        stages.append(model.once(interpolation, width, height, interp_steps, frames, index))
        frames = 4 * frames - 3
    stages.append(model.once(decoding_stage, width, height, frames, decode_chunk))
    return stages


# ---------------------------------------------------------------------------------------------
# options -> peaks and times


@dataclass(frozen=True)
class Options:
    """The memory options of one run (dtype and decode chunk are part of the traced stages)."""

    offload: str = "none"  # none | model | sequential
    text_int8: bool = False

    @property
    def label(self) -> str:
        return self.offload + (" + int8 text" if self.text_int8 else "")


OPTIONS = (
    Options("none"),
    Options("none", True),
    Options("model"),
    Options("model", True),
    Options("sequential"),
)


def resident_bytes(model: Model, stage: Stage, options: Options) -> int:
    """Weights on the device while ``stage`` runs."""
    small = model.small_bytes()
    if options.offload == "none":
        # every network but the text encoder, which is released once the prompt is encoded
        nets = [k for k in model.networks if k != "text_encoder"]
        total = sum(model.network_bytes(k) for k in nets)
        if stage.network == "text_encoder":
            total += model.network_bytes("text_encoder", options.text_int8)
        return small + total
    if options.offload == "model":
        return small + model.network_bytes(stage.network, options.text_int8)
    return small + model.leaf_bytes(stage.network)


def stage_peak(model: Model, stage: Stage, options: Options) -> int:
    transient = stage.usage.peak
    if stage.network == "text_encoder" and options.text_int8:
        # the largest linear weight dequantised for its matmul
        linears = [m for m in model.text_encoder.modules() if isinstance(m, nn.Linear)]
        transient += max(module_bytes(m) for m in linears)
    return resident_bytes(model, stage, options) + stage.inputs + transient


def offload_copy_bytes(model: Model, stage: Stage, options: Options) -> int:
    """Bytes copied host -> device for the stage under the offload mode (once per stage for ``model``,
    once per network call for ``sequential``)."""
    if options.offload == "none":
        return 0
    weights = model.network_bytes(stage.network, options.text_int8)
    return weights if options.offload == "model" else weights * stage.calls


def seconds(flops: int, peak: float, share: float) -> float:
    return flops / (share * peak)


def summarise(model: Model, stages: list[Stage], share: float, pcie_gbps: float) -> list[dict[str, Any]]:
    rows = []
    for options in OPTIONS:
        peaks = {s.name: stage_peak(model, s, options) for s in stages}
        copies = sum(offload_copy_bytes(model, s, options) for s in stages)
        flops = sum(s.usage.flops * s.calls for s in stages)
        row: dict[str, Any] = {
            "options": options.label,
            "peak_bytes": max(peaks.values()),
            "peak_stage": max(peaks, key=peaks.get),
            "stage_peak_bytes": peaks,
            "flops": flops,
            "offload_copy_bytes": copies,
        }
        for name, peak in ACCELERATORS.items():
            row[f"{name}_s"] = seconds(flops, peak, share) + copies / (pcie_gbps * 1e9)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# checking the prediction on this CPU


@dataclass
class Check:
    stage: str
    resident: int  # bytes alive when the stage starts (weights + inputs), the same in both
    predicted: int  # transient peak predicted on meta
    measured: int  # transient peak measured from the CPU allocator

    @property
    def ratio(self) -> float:
        """(resident + predicted) / (resident + measured): the whole-process-tensor peak."""
        return (self.resident + self.predicted) / (self.resident + self.measured)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio_total": self.ratio}


def allocator_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Peak bytes allocated through PyTorch's CPU allocator during ``fn`` above its start, from the
    profiler's memory events (``profile_memory=True``: every allocation and free with its size)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return out, peak


def cpu_stage_calls(components, width: int, height: int, fps: str, decode_chunk: int):
    """(name, fn) for each 1.0-style stage with real tensors on CPU, in order; each fn returns its output
    and takes the previous stage's output."""
    from fusionframes.diffusion.parameterisation import Parameterisation
    from fusionframes.pipelines.stages import (
        InterpolationConditioning,
        KeyframeConditioning,
        TextBranches,
        decode_latents,
        generate_keyframes,
        interpolate_pass,
    )

    config = components.config
    keyframe_param = Parameterisation(config.keyframe_unet.training)
    interpolation_param = Parameterisation(config.interpolation_unet.training)
    factor = config.movq.scale_factor
    shape = (config.keyframe_unet.num_channels, height // factor, width // factor)
    gen = torch.Generator().manual_seed(0)
    dim = config.text.context_dim
    context = torch.randn(1, TEXT_TOKENS, dim, generator=gen)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    calls = [
        (
            "keyframes",
            lambda _: generate_keyframes(
                components.keyframe_unet,
                keyframe_param,
                KeyframeConditioning(TextBranches(context, mask, context, mask), 3.0),
                (config.keyframe_unet.num_frames, *shape),
                keyframe_param.schedule(1),
                gen,
            ),
        )
    ]
    for index in range(FPS_PASSES[fps]):
        calls.append(
            (
                f"interpolation {index + 1}",
                lambda x, i=index: interpolate_pass(
                    components.interpolation_unet,
                    interpolation_param,
                    InterpolationConditioning(components.interpolation_null, 1.0),
                    x,
                    PASS_SKIP_FRAMES[i],
                    interpolation_param.schedule(1),
                    gen,
                ),
            )
        )
    calls.append(("decoding", lambda x: decode_latents(components.movq, x, decode_chunk, progress=False)))
    return calls, (context, mask)


def validate(components, width: int, height: int, fps: str, decode_chunk: int = 4) -> list[Check]:
    """Each stage measured on CPU (float32) and predicted on meta at the same shapes and inputs."""
    components = components.eval()
    meta = Model.build("1.0", torch.float32, config=components.config, text_sizes=None)
    calls, inputs = cpu_stage_calls(components, width, height, fps, decode_chunk)
    checks = []
    weights = sum(module_bytes(m) for m in components.networks().values())
    weights += tensor_bytes([components.keyframe_null, components.interpolation_null])
    frames = config_frames = components.config.keyframe_unet.num_frames
    x = None
    for index, (name, fn) in enumerate(calls):
        with torch.no_grad():
            gc.collect()
            stage_inputs = tensor_bytes(inputs) if x is None else tensor_bytes([x])
            x, measured = allocator_peak(lambda fn=fn, x=x: fn(x))
        if name == "keyframes":
            stage = keyframe_stage_10(meta, width, height, 1, config_frames)
        elif name == "decoding":
            stage = decoding_stage(meta, width, height, frames, decode_chunk)
        else:
            stage = interpolation_stage_10(meta, width, height, 1, frames, index - 1)
            frames = 4 * frames - 3
        checks.append(Check(name, weights + stage_inputs, stage.usage.peak, measured))
    return checks


def mid_config():
    """A mid-size random configuration: 1.0's layout (4 levels, attention on the lower three, a MoVQ
    with spatial attention) at a sixth of its U-Net width, 8 keyframes at 256x256."""
    from fusionframes.config import MoVQConfig, small_config

    config = small_config(
        channels=64,
        context_dim=256,
        num_frames=8,
        levels=4,
        blocks=2,
        groups=32,
        head_dim=32,
        movq_channels=64,
        movq_levels=4,
        size=256,
    )
    return dataclasses.replace(
        config,
        movq=MoVQConfig(
            ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(32,), resolution=256
        ),
    )


def validation_components(which: str):
    from fusionframes.components import build_components
    from fusionframes.io.checkpoints import load_model

    if which == "builtin":
        return load_model(None)
    if which == "mid":
        torch.manual_seed(0)
        return build_components(mid_config(), "none", name="mid")
    raise SystemExit(f"--validate: unknown {which!r}; allowed: builtin, mid")


# ---------------------------------------------------------------------------------------------
# command line


def environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def print_prediction(release: str, size: str, fps: str, dtype: str, model: Model, stages, rows) -> None:
    print(f"\n## Kandinsky Video {release}, {size}, fps {fps}, {dtype}")
    print("| stage | calls | transient peak GiB | TFLOP |")
    print("|---|---:|---:|---:|")
    for s in stages:
        print(f"| {s.name} | {s.calls} | {gib(s.usage.peak)} | {s.usage.flops * s.calls / 1e12:.1f} |")
    print("| options | peak GiB | at stage | A100 s | H100 s |")
    print("|---|---:|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['options']} | {gib(row['peak_bytes'])} | {row['peak_stage']} | "
            f"{row['A100_s']:.0f} | {row['H100_s']:.0f} |"
        )


def run_predictions(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for release in args.release:
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            model = Model.build(release, dtype)
            params = model.parameters()
            for size in args.size:
                width, height = SIZES[size]
                for fps in args.fps:
                    for chunk in args.decode_chunk:
                        chunk_value = None if chunk == "reference" else int(chunk)
                        if release == "1.0" and chunk_value is None:
                            chunk_value = 4
                        start = time.perf_counter()
                        stages = video_stages(model, width, height, fps, chunk_value)
                        rows = summarise(model, stages, args.share, args.pcie_gbps)
                        label = f"{dtype_name}, decode chunk {chunk}"
                        print_prediction(release, size, fps, label, model, stages, rows)
                        results.append(
                            {
                                "release": release,
                                "size": size,
                                "fps": fps,
                                "dtype": dtype_name,
                                "decode_chunk": chunk,
                                "parameters": params,
                                "stages": [s.to_dict() for s in stages],
                                "options": rows,
                                "trace_s": time.perf_counter() - start,
                            }
                        )
            del model
    return {
        "environment": environment(),
        "share": args.share,
        "pcie_gbps": args.pcie_gbps,
        "accelerators": ACCELERATORS,
        "predictions": results,
    }


def run_validation(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    components = validation_components(args.validate)
    size = components.config.sampling.width, components.config.sampling.height
    fps = args.fps[0] if args.fps != list(FPS) else "medium"
    checks = validate(components, *size, fps)
    print(f"\n## Predicted vs measured, {args.validate} model, {size[0]}x{size[1]}, fps {fps}, float32, CPU")
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}")
    print("| stage | resident MiB | transient predicted MiB | measured MiB | total predicted / measured |")
    print("|---|---:|---:|---:|---:|")
    for c in checks:
        print(
            f"| {c.stage} | {c.resident / MIB:.1f} | {c.predicted / MIB:.1f} | {c.measured / MIB:.1f} | "
            f"{c.ratio:.3f} |"
        )
    return {"environment": environment(), "model": args.validate, "checks": [c.to_dict() for c in checks]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", nargs="+", default=["1.0", "1.1"], choices=["1.0", "1.1"])
    parser.add_argument("--size", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--fps", nargs="+", default=list(FPS), choices=list(FPS))
    dtypes = ["bfloat16", "float16", "float32"]
    parser.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=dtypes)
    parser.add_argument(
        "--decode-chunk",
        nargs="+",
        default=["reference"],
        help="frames per decoder call (1.0: 'reference' = the pipeline's 4; 1.1: 'reference' = its pieces "
        "of about 4, a number = overlapped windows of that many frames)",
    )
    parser.add_argument("--share", type=float, default=0.4, help="share of the dense bf16 peak achieved")
    parser.add_argument("--pcie-gbps", type=float, default=20.0, help="host-to-device copy rate, GB/s")
    parser.add_argument("--validate", choices=["builtin", "mid"], help="check against this CPU instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not 0.0 < args.share <= 1.0:
        parser.error(f"--share: must be in (0, 1], got {args.share}")
    for chunk in args.decode_chunk:
        if chunk != "reference" and (not chunk.isdigit() or int(chunk) < 1):
            parser.error(f"--decode-chunk: 'reference' or a whole number >= 1, got {chunk!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_validation(args) if args.validate else run_predictions(args)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
