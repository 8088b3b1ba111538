"""The full-size memory model's mechanics (benchmarks/memory_model.py), checked on tiny configurations."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from fusionframes.components import build_components

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mm():
    spec = importlib.util.spec_from_file_location("memory_model", ROOT / "benchmarks" / "memory_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_model"] = module
    spec.loader.exec_module(module)
    return module


def test_live_tensors_counts_allocations_frees_and_not_views(mm) -> None:
    def run():
        a = torch.empty(1000, device="meta")  # 4000 bytes
        b = a * 2  # +4000: peak 8000
        view = b.view(10, 100)  # a view: nothing new
        del a  # -4000
        c = view + 1  # +4000: 8000 again
        return c

    out, usage = mm.trace(run)
    assert usage.peak == 8000
    assert usage.kept == 4000  # only ``c`` survives the call
    assert out.shape == (10, 100)


def test_attention_is_counted_as_the_fused_kernel(mm) -> None:
    q = torch.empty(2, 4, 256, 32, device="meta")
    _, fused = mm.trace(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    # output [2, 4, 256, 32] float32 plus the log-sum-exp [2, 4, 256]; never the 256 x 256 scores
    assert fused.peak == 2 * 4 * 256 * 32 * 4 + 2 * 4 * 256 * 4
    assert fused.flops == 2 * (2 * 2 * 4 * 256 * 256 * 32)  # two matmuls, 2 FLOPs per multiply-add


def test_prediction_matches_the_cpu_allocator_on_a_tiny_model(mm) -> None:
    torch.manual_seed(0)
    components = build_components(tiny_config(), "none", name="tiny")
    checks = mm.validate(components, 64, 64, "medium")
    assert [c.stage for c in checks] == ["keyframes", "interpolation 1", "decoding"]
    for check in checks:
        assert check.predicted > 0 and check.measured > 0
        assert 0.85 <= check.ratio <= 1.15, check


def test_offload_options_order_and_int8_text(mm) -> None:
    config = tiny_config()
    t5 = {"vocab_size": 64, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2}
    model = mm.Model.build("1.0", torch.bfloat16, config=config, text_sizes=t5)
    stages = mm.video_stages(model, 64, 64, "medium")
    assert [s.name for s in stages] == ["text", "keyframes", "interpolation 1", "decoding"]
    assert all(s.usage.flops > 0 for s in stages)
    peaks = {o.label: max(mm.stage_peak(model, s, o) for s in stages) for o in mm.OPTIONS}
    assert peaks["sequential"] < peaks["model"] < peaks["none"]
    assert peaks["model + int8 text"] <= peaks["model"]
    bf16 = model.network_bytes("text_encoder")
    int8 = model.network_bytes("text_encoder", text_int8=True)
    assert int8 < bf16
    # weights in bfloat16: two bytes per parameter
    params = sum(p.numel() for p in model.networks["keyframe_unet"].parameters())
    assert model.network_bytes("keyframe_unet") == 2 * params
