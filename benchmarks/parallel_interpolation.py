"""The interpolation pass on one process against two (gloo, one thread each), in one run.

    python benchmarks/parallel_interpolation.py                 # 3 interleaved repetitions
    python benchmarks/parallel_interpolation.py --repeats 5 --steps 20 --json out.json

The model is ``vs_official.bench_config`` (the released 1.0 layout at a CPU-sized width, random
weights), loaded from a model folder. Each repetition runs the same generation (float32, DDPM, 2
keyframe steps, ``--steps`` interpolation steps, fps ``medium``) once on one process with one thread
and once on two processes with one thread each, the guidance branches of every U-Net call split
between them (:func:`fusionframes.parallel.distribute_branches`). The figure is the pipeline's own
``interpolation 1`` stage time (rank 0's on two processes); the script also checks that both runs made
the same video. The ratio needs two free cores to mean anything: on a shared machine it says how much
of the two cores the processes got as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def pipeline(model: Path):
    import torch
    from vs_official import FixedContext

    from fusionframes.io.checkpoints import load_model_folder
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    shared = torch.load(model / "context.pt", weights_only=True)
    return TextToVideoPipeline(
        load_model_folder(model),
        device="cpu",
        dtype="float32",
        text_conditioner=FixedContext(shared["context"], shared["mask"]),
    )


def generate(pipe, steps: int):
    from vs_official import KEYFRAMES, SIZE

    return pipe(
        "shared context",
        seed=0,
        output_type="pt",
        progress=False,
        scheduler="ddpm",
        num_inference_steps=2,
        interpolation_steps=steps,
        num_keyframes=KEYFRAMES,
        width=SIZE,
        height=SIZE,
        fps="medium",
    )


def rank_main(rank: int, init_file: str, model: str, steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from fusionframes.parallel import distribute_branches

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        pipe = distribute_branches(pipeline(Path(model)))
        video = generate(pipe, steps)
        if rank == 0:
            torch.save({"frames": video.frames, "seconds": video.timings["interpolation 1"]}, out)
    finally:
        dist.destroy_process_group()


def one_process(model: Path, steps: int) -> tuple[float, object]:
    import torch

    torch.set_num_threads(1)
    video = generate(pipeline(model), steps)
    return video.timings["interpolation 1"], video.frames


def two_processes(model: Path, steps: int, tmp: Path) -> tuple[float, object]:
    import torch
    import torch.multiprocessing as mp

    init, out = tmp / f"init-{time.monotonic_ns()}", tmp / "rank0.pt"
    mp.spawn(rank_main, args=(str(init), str(model), steps, str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=True)
    return result["seconds"], result["frames"]


def write_model(root: Path) -> Path:
    import torch
    from vs_official import random_components, shared_context

    from fusionframes.io.checkpoints import write_model_folder

    parts = random_components()
    folder = write_model_folder(parts, root / "model")
    torch.save(shared_context(parts.config.text.context_dim), folder / "context.pt")  # as vs_official's
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="interpolation steps per run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        parser.error(f"--repeats and --steps: must be >= 1, got {args.repeats} and {args.steps}")
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp))
        for _ in range(args.repeats):
            seconds, single = one_process(model, args.steps)
            one.append(seconds)
            seconds, split = two_processes(model, args.steps, Path(tmp))
            two.append(seconds)
            difference = (single - split).abs().max().item()
            if difference > 1e-5:
                raise SystemExit(f"two processes made a different video (max difference {difference:.2e})")
    ratio = statistics.median(two) / statistics.median(one)
    result = {
        "one_process_s": one,
        "two_processes_s": two,
        "ratio_median": ratio,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": os.getloadavg()[0],
        "steps": args.steps,
    }
    print(
        f"interpolation pass, {args.steps} DDPM steps: 1 process x 1 thread {statistics.median(one):.2f} s, "
        f"2 processes x 1 thread {statistics.median(two):.2f} s (medians of {args.repeats}), "
        f"ratio {ratio:.2f}; same video; CPU capability {result['cpu_capability']}, "
        f"load average {result['load_average']:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
