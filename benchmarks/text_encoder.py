"""Memory, speed and fidelity of the T5 text encoder in float32, bfloat16 and int8 weights (torchao).

    python benchmarks/text_encoder.py                      # a Flan-UL2-shaped encoder at reduced size
    python benchmarks/text_encoder.py --layers 4 --width 512 --json out.json

The encoder has Flan-UL2's layout (gated-SiLU feed-forward, d_ff = 4 x d_model, 128-token prompts) with
random weights, scaled down to fit this machine; ``--width 4096 --layers 32`` is the real size. Every row
reports the weight bytes, the median time to encode a prompt and a negative prompt, and the lowest
cosine similarity of the token embeddings to float32's. The last lines project the weight bytes to the
full Flan-UL2 encoder (8.6B parameters) from the same per-parameter costs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from fusionframes.cli import quiet_optional_library_logs
from fusionframes.runtime import cpu_features
from fusionframes.text.quantization import quantize_text_encoder, weight_bytes

UL2 = {"d_model": 4096, "layers": 32, "vocab": 32128}


def make_encoder(width: int, layers: int, vocab: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab,
        d_model=width,
        d_kv=64,
        num_heads=width // 64,
        d_ff=4 * width,
        num_layers=layers,
        feed_forward_proj="gated-silu",
    )
    return T5EncoderModel(config).eval()


def linear_params(width: int, layers: int) -> int:
    """Attention (q, k, v, o) and gated feed-forward (two in, one out) weights of every layer."""
    return layers * (4 * width * width + 3 * width * 4 * width)


def variants(encoder):
    yield "float32", encoder, torch.float32
    yield "bfloat16", copy.deepcopy(encoder).to(torch.bfloat16), torch.bfloat16
    yield "int8 weights, float32 activations", quantize_text_encoder(copy.deepcopy(encoder), "int8"), None
    int8_bf16 = quantize_text_encoder(copy.deepcopy(encoder).to(torch.bfloat16), "int8")
    yield "int8 weights, bfloat16 activations", int8_bf16, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1024, help="d_model (Flan-UL2: 4096)")
    parser.add_argument("--layers", type=int, default=8, help="encoder layers (Flan-UL2: 32)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    quiet_optional_library_logs()
    torch.set_num_threads(args.threads)
    features = cpu_features()
    print(
        f"CPU capability {features['capability']}, AMX {features['amx']}, AVX512-BF16 "
        f"{features['avx512_bf16']}, threads {args.threads}; encoder d_model {args.width}, "
        f"{args.layers} layers, {args.tokens} tokens x 2 prompts"
    )
    encoder = make_encoder(args.width, args.layers, UL2["vocab"])
    ids = torch.randint(0, UL2["vocab"], (2, args.tokens), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = encoder(input_ids=ids).last_hidden_state.float()
    embedding = encoder.shared.weight.numel()
    linears = linear_params(args.width, args.layers)
    full_linears, full_embedding = linear_params(UL2["d_model"], UL2["layers"]), UL2["vocab"] * UL2["d_model"]
    rows = []
    for name, model, _ in variants(encoder):
        times = []
        with torch.no_grad():
            for _ in range(args.repeats + 1):
                start = time.perf_counter()
                out = model(input_ids=ids).last_hidden_state.float()
                times.append(time.perf_counter() - start)
        similarity = torch.nn.functional.cosine_similarity(out, reference, dim=-1).min().item()
        size = weight_bytes(model)
        embedding_bytes = embedding * model.shared.weight.element_size()
        per_linear = (size - embedding_bytes - _norm_bytes(model)) / linears
        projected = full_linears * per_linear + full_embedding * model.shared.weight.element_size()
        row = {
            "variant": name,
            "weights_mb": size / 2**20,
            "encode_s": statistics.median(times[1:]),
            "min_cosine": similarity,
            "bytes_per_linear_param": per_linear,
            "flan_ul2_projected_gb": projected / 2**30,
        }
        rows.append(row)
        print(
            f"{name:36s} {row['weights_mb']:8.1f} MB  {row['encode_s']:7.3f} s  cos>={similarity:.5f}  "
            f"{per_linear:.3f} B/param -> Flan-UL2 encoder {row['flan_ul2_projected_gb']:.1f} GiB"
        )
    if args.json:
        from fusionframes.io.atomic import atomic_write

        text = json.dumps({"cpu": features, "args": vars(args), "rows": rows}, indent=2)
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(text))


def _norm_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "layer_norm" in n)


if __name__ == "__main__":
    main()
