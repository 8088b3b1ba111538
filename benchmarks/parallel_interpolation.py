"""The interpolation pass on one process against two (gloo, one thread each), in one run.

    python benchmarks/parallel_interpolation.py                 # 3 interleaved repetitions
    python benchmarks/parallel_interpolation.py --repeats 5 --steps 20 --json out.json

The model is ``vs_official.bench_config`` (the released 1.0 layout at a CPU-sized width, random
weights), loaded from a model folder. Each repetition runs the same generation (float32, DDPM, 2
keyframe steps, ``--steps`` interpolation steps, fps ``medium``) once on one process with one thread
and once on two processes with one thread each, the guidance branches of every U-Net call split
between them (:func:`fusionframes.parallel.distribute_branches`). The figure is the pipeline's own
``interpolation 1`` stage time (rank 0's on two processes); the script also checks that the two-process
video is bit-identical to one process making the same network calls (``SequentialBranches``), and
reports how far the usual batched one-process video is from it: with random weights the first DDPM
steps amplify float32 rounding (CPU kernels block differently by batch size) far above 1e-5.
The ratio needs two free cores to mean anything: on a shared machine it says how much of the two
cores the processes got as well.
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
    """The same generation for either model: its keyframe count and size, fps ``medium``."""
    return pipe(
        "shared context",
        seed=0,
        output_type="pt",
        progress=False,
        scheduler="ddpm",
        num_inference_steps=2,
        interpolation_steps=steps,
        num_keyframes=pipe.config.keyframe_unet.num_frames,
        width=pipe.config.sampling.width,
        height=pipe.config.sampling.height,
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


def one_process(model: Path, steps: int, per_branch: bool = False) -> tuple[float, object]:
    """The usual one-device run (each U-Net call on both branches at once), or, with ``per_branch``,
    the one-device run of the calls the two ranks make (:class:`SequentialBranches`)."""
    import torch

    from fusionframes.parallel import SequentialBranches

    torch.set_num_threads(1)
    pipe = pipeline(model)
    if per_branch:
        for name in ("keyframe_unet", "interpolation_unet"):
            setattr(pipe.components, name, SequentialBranches(getattr(pipe.components, name)))
    video = generate(pipe, steps)
    return video.timings["interpolation 1"], video.frames


def two_processes(model: Path, steps: int, tmp: Path) -> tuple[float, object]:
    import torch
    import torch.multiprocessing as mp

    init, out = tmp / f"init-{time.monotonic_ns()}", tmp / "rank0.pt"
    mp.spawn(rank_main, args=(str(init), str(model), steps, str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=True)
    return result["seconds"], result["frames"]


def write_model(root: Path, which: str) -> Path:
    """A model folder of random weights: ``bench`` (vs_official's CPU-sized 1.0 layout, 6 keyframes at
    128x128) or ``mid`` (memory_model's mid-size config, 8 keyframes at 256x256)."""
    import torch
    from memory_model import mid_config
    from vs_official import bench_config, random_components, shared_context

    from fusionframes.io.checkpoints import write_model_folder

    parts = random_components(bench_config() if which == "bench" else mid_config(), name=which)
    folder = write_model_folder(parts, root / "model")
    torch.save(shared_context(parts.config.text.context_dim), folder / "context.pt")  # as vs_official's
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="interpolation steps per run")
    parser.add_argument("--model", choices=["bench", "mid"], default="bench", help="which random model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        parser.error(f"--repeats and --steps: must be >= 1, got {args.repeats} and {args.steps}")
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    one, two, batched_difference = [], [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp), args.model)
        _, reference = one_process(model, args.steps, per_branch=True)
        for _ in range(args.repeats):
            seconds, single = one_process(model, args.steps)
            one.append(seconds)
            seconds, split = two_processes(model, args.steps, Path(tmp))
            two.append(seconds)
            if not torch.equal(split, reference):
                difference = (split - reference).abs().max().item()
                raise SystemExit(
                    "two processes made a different video from one process running the same calls "
                    f"(max difference {difference:.2e})"
                )
            batched_difference = max(batched_difference, (single - split).abs().max().item())
    ratio = statistics.median(two) / statistics.median(one)
    result = {
        "one_process_s": one,
        "two_processes_s": two,
        "ratio_median": ratio,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": os.getloadavg()[0],
        "steps": args.steps,
        "model": args.model,
        "max_difference_to_batched_run": batched_difference,
    }
    print(
        f"interpolation pass of the {args.model} model, {args.steps} DDPM steps: "
        f"1 process x 1 thread {statistics.median(one):.2f} s, "
        f"2 processes x 1 thread {statistics.median(two):.2f} s (medians of {args.repeats}), "
        f"ratio {ratio:.2f}; the two-process video is bit-identical to one process running the same "
        f"calls (to the batched one-process run: max difference {batched_difference:.2e}, float32 "
        f"rounding the random-weight DDPM steps amplify); CPU capability {result['cpu_capability']}, "
        f"load average {result['load_average']:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
