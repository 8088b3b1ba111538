"""Automatic precision: detection of native bfloat16 on CPUs, and the reason given."""

from __future__ import annotations

import pytest
import torch

from fusionframes.runtime import cpu_features, resolve_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "amx, bf16, expected, reason",
    [
        (True, False, torch.bfloat16, "AMX"),
        (False, True, torch.bfloat16, "AVX-512 BF16"),
        (False, False, torch.float32, "no native bfloat16"),
    ],
)
def test_auto_dtype_follows_cpu_features(monkeypatch, amx, bf16, expected, reason) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    choice = resolve_dtype("auto", CPU)
    assert choice.dtype == expected and reason in choice.reason
    assert cpu_features()["avx512_bf16"] is bf16


def test_explicit_dtype_and_bad_name() -> None:
    assert resolve_dtype("float32", CPU).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype: unknown 'fp8'"):
        resolve_dtype("fp8", CPU)
