"""The optional 8-bit text encoder: int8 linear weights through torchao, checked before loading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fusionframes import TextToVideoPipeline, cli
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.text.quantization import quantize_text_encoder, validate_text_quantization, weight_bytes

pytest.importorskip("torchao", reason="the int8 text encoder needs the optional torchao")

PROMPT = "a red circle moving right on a gray background"
RUN = {
    "prompt": PROMPT,
    "num_inference_steps": 2,
    "fps": "low",
    "seed": 3,
    "output_type": "pt",
    "progress": False,
}


def make_pipe(model_dir: Path, **kwargs) -> TextToVideoPipeline:
    return TextToVideoPipeline(load_model_folder(model_dir), device="cpu", dtype="float32", **kwargs)


def small_t5() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=200,
        d_model=256,
        d_kv=32,
        d_ff=768,
        num_layers=2,
        num_heads=8,
        feed_forward_proj="gated-gelu",
    )
    return T5EncoderModel(config).eval()


def test_unknown_mode_names_the_parameter() -> None:
    assert validate_text_quantization(None) == "none"
    with pytest.raises(ValueError, match="text_quantization: unknown 'int4'; allowed: none, int8"):
        validate_text_quantization("int4")


def test_missing_torchao_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ImportError, match=r"pip install 'fusionframes\[quant\]'"):
        validate_text_quantization("int8")
    assert validate_text_quantization("none") == "none"


def test_int8_linear_weights_quarter_the_float32_bytes_and_keep_the_embedding() -> None:
    encoder = small_t5()
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = encoder(input_ids=ids).last_hidden_state
    linear_bytes = sum(m.weight.numel() * 4 for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    before = weight_bytes(encoder)
    assert quantize_text_encoder(encoder, "int8") is encoder
    after = weight_bytes(encoder)
    # int8 data plus per-channel scales: the linear part shrinks to about a quarter
    assert before - after == pytest.approx(linear_bytes * 0.75, rel=0.02)
    query = encoder.encoder.block[0].layer[0].SelfAttention.q.weight
    assert type(query) is not torch.nn.Parameter and type(query) is not torch.Tensor
    with torch.no_grad():
        quantized = encoder(input_ids=ids).last_hidden_state
    similarity = torch.nn.functional.cosine_similarity(quantized, reference, dim=-1)
    assert similarity.min() > 0.995
    assert not torch.equal(quantized, reference)


@pytest.mark.slow
def test_pipeline_encodes_with_int8_and_still_makes_the_video(tiny_model_dir: Path) -> None:
    plain = make_pipe(tiny_model_dir)
    quant = make_pipe(tiny_model_dir, text_quantization="int8")
    context, _, _, _ = plain.encode_prompts(PROMPT, None)
    context8, _, _, _ = quant.encode_prompts(PROMPT, None)
    assert context8.shape == context.shape
    torch.testing.assert_close(context8, context, atol=0.05, rtol=0.05)
    video = quant(**RUN).frames
    assert video.shape == plain(**RUN).frames.shape and torch.isfinite(video).all()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_int8_encoder_runs_under_the_offload_hooks(tiny_model_dir: Path, monkeypatch, mode: str) -> None:
    """The hooks move the quantised weights like any others (CPU stands in for the GPU here)."""
    from fusionframes.pipelines import offload

    monkeypatch.setattr(offload, "validate_offload", lambda mode, device: mode)
    expected = make_pipe(tiny_model_dir, text_quantization="int8")(**RUN).frames
    hooked = make_pipe(tiny_model_dir, text_quantization="int8", offload=mode)
    assert torch.equal(hooked(**RUN).frames, expected)
    assert hasattr(hooked.text.encoder, "_hf_hook")


def test_cli_rejects_an_unknown_mode_before_loading(tiny_model_dir: Path, monkeypatch, capsys) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    code = cli.main(["generate", "x", "--model", str(tiny_model_dir), "--text-quantization", "fp8"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "text_quantization: unknown 'fp8'" in err and "\n" not in err
