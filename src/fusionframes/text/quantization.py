"""Optional 8-bit text encoder: int8 linear weights through torchao.

The released model's Flan-UL2 encoder has about 8.6B parameters: 17 GB in bfloat16, the largest single
network in the system, and it runs once per prompt. Storing its linear weights in int8 (one scale per
output channel, activations unchanged) halves that memory for a small change in the embeddings.
torchao is PyTorch's maintained quantisation library; it is an optional extra (``fusionframes[quant]``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch import nn

TEXT_QUANTIZATION = ("none", "int8")


def validate_text_quantization(mode: str | None) -> str:
    """Check ``text_quantization`` (``None`` means ``none``) and that torchao is there for ``int8``."""
    mode = "none" if mode is None else mode
    if mode not in TEXT_QUANTIZATION:
        raise ValueError(f"text_quantization: unknown {mode!r}; allowed: {', '.join(TEXT_QUANTIZATION)}")
    if mode == "int8":
        _torchao()
    return mode


@contextmanager
def _quiet_torchao_import():
    # torchao's wheel carries CUDA kernels; on a CPU-only torch it logs a warning per library it
    # cannot load, which says nothing about the CPU path used here.
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _torchao():
    try:
        with _quiet_torchao_import():
            import torchao.quantization as quantization
    except ImportError as error:
        raise ImportError(
            "text_quantization: 'int8' needs torchao; install it with pip install 'fusionframes[quant]' "
            "(or pip install torchao), or use text_quantization='none'"
        ) from error
    return quantization


def _is_linear(module: nn.Module, name: str) -> bool:
    return isinstance(module, nn.Linear)


def quantize_text_encoder(encoder: nn.Module, mode: str) -> nn.Module:
    """Quantise ``encoder``'s linear weights in place (``int8``) or leave it as it is (``none``).

    Embeddings and norms stay in their dtype; activations keep the encoder's dtype, so the pipeline's
    float32 handling of the T5 output is unchanged.
    """
    if validate_text_quantization(mode) == "none":
        return encoder
    quantization = _torchao()
    quantization.quantize_(encoder, quantization.Int8WeightOnlyConfig(), filter_fn=_is_linear)
    return encoder


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters and buffers, counting a quantised tensor's parts."""

    def size(tensor: torch.Tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__") and type(tensor) is not torch.Tensor:
            names, _ = tensor.__tensor_flatten__()
            return sum(size(getattr(tensor, name)) for name in names)
        return tensor.numel() * tensor.element_size()

    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(size(t) for t in tensors.values())
