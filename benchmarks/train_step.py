"""Time one training step (forward, backward, AdamW) of a diffusion stage, to pick precision and threads.

    python benchmarks/train_step.py                              # built-in model, both stages, fp32 + bf16
    python benchmarks/train_step.py --stage keyframes --threads 1 --precision float32 bfloat16
    python benchmarks/train_step.py --conv3d                     # also time the old Conv3d temporal path

Networks are the built-in model's (or ``--model DIR``) with random latents and captions of typical length,
at the batch sizes of ``configs/builtin``. Prints the median step of ``--repeats`` after two warm-up steps,
with the CPU capability, so figures from machines of different kinds are not mixed up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

from fusionframes.io.checkpoints import load_model
from fusionframes.models.layers import TemporalConv
from fusionframes.runtime import cpu_features
from fusionframes.training.objectives import InterpolationObjective, KeyframeObjective, TextEncoding
from fusionframes.training.setup import load_text_encoder

BATCH = {"keyframes": 8, "interpolation": 4}  # configs/builtin


@contextmanager
def conv3d_temporal_layers():
    """Run the temporal convolutions through nn.Conv3d, as before the 2-D rewrite."""
    fast = TemporalConv.forward
    TemporalConv.forward = torch.nn.Conv3d.forward
    try:
        yield
    finally:
        TemporalConv.forward = fast


def make_step(stage: str, model: str | None, batch: int):
    components = load_model(model)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if stage == "keyframes":
        _, encoder = load_text_encoder(components)
        text = TextEncoding(encoder, components.projection, components.keyframe_null)
        objective = KeyframeObjective(components.keyframe_unet, text, 1000, 0.1)
        frames = components.config.keyframe_unet.num_frames
        latents = torch.randn(batch, frames, components.config.keyframe_unet.num_channels, 16, 16)
        vocab = encoder.config.vocab_size
        ids = torch.randint(3, vocab, (batch, 16))
        mask = torch.ones_like(ids)

        def loss() -> torch.Tensor:
            return objective(latents, ids, mask, generator)

    else:
        objective = InterpolationObjective(
            components.interpolation_unet, components.interpolation_null, 1000, 0.1
        )
        channels = components.config.keyframe_unet.num_channels
        groups = torch.randn(batch, 7, 5, channels, 16, 16)

        def loss() -> torch.Tensor:
            return objective(groups, 1, generator)

    objective.float().train().requires_grad_(True)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-5)
    return objective, optimizer, loss


def time_steps(stage: str, model: str | None, precision: str, repeats: int) -> float:
    objective, optimizer, loss = make_step(stage, model, BATCH[stage])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16" else nullcontext()
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        with autocast:
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the built-in model)")
    parser.add_argument("--stage", nargs="+", default=["keyframes", "interpolation"], choices=sorted(BATCH))
    parser.add_argument(
        "--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--conv3d", action="store_true", help="also time the old Conv3d temporal path")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = cpu_features()
    print(
        f"CPU capability {features['capability']}, AMX {features['amx']}, "
        f"AVX512-BF16 {features['avx512_bf16']}, threads {args.threads}"
    )
    rows = []
    variants = [("conv2d", nullcontext)] + ([("conv3d", conv3d_temporal_layers)] if args.conv3d else [])
    for stage in args.stage:
        for precision in args.precision:
            for name, patch in variants:
                with patch():
                    seconds = time_steps(stage, args.model, precision, args.repeats)
                rows.append({"stage": stage, "precision": precision, "temporal": name, "step_s": seconds})
                print(
                    f"{stage:14s} {precision:9s} temporal={name}  batch {BATCH[stage]}  {seconds:.3f} s/step"
                )
    if args.json:
        from pathlib import Path

        from fusionframes.io.atomic import atomic_write

        text = json.dumps({"cpu": features, "threads": args.threads, "rows": rows}, indent=2)
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
