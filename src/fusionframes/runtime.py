"""Device and precision choices, made from what the machine can actually do.

CPUs differ: with AMX or AVX-512 BF16, bfloat16 convolutions run several times faster than float32;
on AVX2-only CPUs bfloat16 is emulated and many times slower. ``auto`` therefore detects first and
only picks bfloat16 on CPUs that have native support.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Parse and check a device string; unknown or unavailable devices fail with the allowed list."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: unknown {device!r}; allowed: cpu, cuda, cuda:N, mps, auto") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available here; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} out of range; {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device: {device!r} requested but MPS is not available here; use --device cpu")
    elif parsed.type != "cpu":
        raise ValueError(f"device: unsupported {device!r}; allowed: cpu, cuda, cuda:N, mps, auto")
    return parsed


def cpu_features() -> dict[str, bool | str]:
    """What this CPU offers for reduced precision (detection only, no timing)."""
    # torch.cpu has the probes in recent releases; older ones only in torch._C._cpu.
    places = (getattr(torch, "cpu", None), getattr(torch._C, "_cpu", None))

    def probe(name: str) -> bool:
        for place in places:
            fn = getattr(place, name, None)
            if fn is not None:
                return bool(fn())
        return False

    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx": probe("_is_amx_tile_supported"),
        "avx512_bf16": probe("_is_avx512_bf16_supported"),
        "avx512_fp16": probe("_is_amx_fp16_supported"),
    }


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: torch.dtype
    reason: str


def resolve_dtype(name: str | None, device: torch.device) -> PrecisionChoice:
    """Map ``--dtype`` to a torch dtype; ``auto`` picks per device and says why."""
    name = name or "auto"
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype: unknown {name!r}; allowed: {', '.join(DTYPE_CHOICES)}")
    if name != "auto":
        dtype = DTYPES[name]
        if device.type == "cpu" and dtype == torch.float16:
            logger.warning("dtype: float16 on CPU is slow and lossy; bfloat16 or float32 are better there")
        return PrecisionChoice(dtype, f"requested {name}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(torch.bfloat16, "CUDA device supports bfloat16")
        return PrecisionChoice(torch.float16, "CUDA device without bfloat16: float16")
    if device.type == "mps":
        return PrecisionChoice(torch.float16, "MPS: float16")
    features = cpu_features()
    if features["amx"] or features["avx512_bf16"]:
        which = "AMX" if features["amx"] else "AVX-512 BF16"
        return PrecisionChoice(torch.bfloat16, f"CPU has native bfloat16 ({which})")
    return PrecisionChoice(
        torch.float32, f"CPU capability {features['capability']} has no native bfloat16: float32"
    )


def resolve_decoder_dtype(name: str | None, networks: torch.dtype) -> PrecisionChoice:
    """The MoVQs' precision next to U-Nets in ``networks``; ``auto`` keeps them out of float16.

    float16 tops out at 65504 and the released MoVQs were made and run in float32: the 1.1 reference
    keeps both of its MoVQs in float32 beside float16 U-Nets, so ``auto`` does the same. bfloat16 has
    float32's range, so ``auto`` leaves a bfloat16 run whole (decoding is the costliest CPU stage and
    runs much faster in bfloat16 on CPUs with native support; docs/benchmarks.md).
    """
    name = name or "auto"
    if name not in DTYPE_CHOICES:
        raise ValueError(f"decoder_dtype: unknown {name!r}; allowed: {', '.join(DTYPE_CHOICES)}")
    if name != "auto":
        return PrecisionChoice(DTYPES[name], f"requested {name}")
    if networks == torch.float16:
        return PrecisionChoice(torch.float32, "float16 U-Nets: decoders in float32 (float16 overflows)")
    return PrecisionChoice(networks, "same as the U-Nets")


def check_finite(tensor: torch.Tensor, stage: str) -> torch.Tensor:
    """Turn a silent black video into an error naming the stage that produced NaN/Inf."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise FloatingPointError(
            f"{stage}: produced {bad} non-finite values (NaN/Inf); try --dtype float32 or bfloat16"
        )
    return tensor


def finite_number(value: float, name: str, minimum: float | None = None) -> float:
    """Validate a float option (rejects NaN/Inf and values below ``minimum``)."""
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: must be a number, got {value!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value
