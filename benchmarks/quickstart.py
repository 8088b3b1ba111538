"""Time the README's quick-start command: ``fusionframes generate PROMPT -o out.mp4`` with no other flags.

    python benchmarks/quickstart.py                 # 3 runs of the real command, fastest and median
    python benchmarks/quickstart.py --json out.json

Each run is a fresh process (interpreter start, imports, model loading, generation, MP4 writing), timed
from outside. The FLOPs of one default generation are counted in-process (torch's FlopCounterMode,
plus the CPU attention kernel it does not know) to project the time on a slower CPU:
``--project-tflops 0.08`` (an AVX2-only machine running float32) adds counted FLOPs / that rate to
this machine's non-compute time (start-up, loading, writing).
The budget for the built-in model is 20 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

PROMPT = "a red circle moving right on a gray background"


def time_command(prompt: str, repeats: int) -> list[float]:
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out = Path(tmp) / f"out{i}.mp4"
            start = time.perf_counter()
            subprocess.run(
                ["fusionframes", "generate", prompt, "-o", str(out)], check=True, capture_output=True
            )
            walls.append(time.perf_counter() - start)
            if not out.is_file() or out.stat().st_size == 0:
                raise RuntimeError("the command wrote no video")
    return walls


def count_flops(prompt: str) -> tuple[float, dict[str, float], float]:
    """FLOPs and per-stage seconds of one default generation, and the in-process load time."""
    from generate import count_flops  # benchmarks/generate.py: adds the CPU attention kernel's FLOPs

    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    start = time.perf_counter()
    pipe = TextToVideoPipeline.from_pretrained(None, device="cpu", dtype="auto", release_text_encoder=False)
    load = time.perf_counter() - start
    video = pipe(prompt, seed=0, output_type="np", progress=False)  # warm-up; its stage times are reported
    flops = count_flops(lambda: pipe(prompt, seed=0, output_type="np", progress=False))
    return float(flops), dict(video.timings), load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--project-tflops", type=float, default=0.08, help="projected machine's float32 rate")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats: must be >= 1")

    import torch

    walls = time_command(args.prompt, args.repeats)
    flops, timings, load = count_flops(args.prompt)
    compute = sum(timings.values())
    fastest = min(walls)
    overhead = max(0.0, fastest - compute)
    projected = overhead + flops / (args.project_tflops * 1e12)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "prompt": args.prompt,
        "wall_s": [round(w, 2) for w in walls],
        "fastest_s": round(fastest, 2),
        "median_s": round(statistics.median(walls), 2),
        "stage_s": {k: round(v, 3) for k, v in timings.items()},
        "load_s_in_process": round(load, 2),
        "gflops": round(flops / 1e9, 1),
        "achieved_tflops": round(flops / compute / 1e12, 4) if compute else None,
        "projected_s": round(projected, 2),
        "projected_at_tflops": args.project_tflops,
    }
    print(
        f"quick start on {result['cpu_capability']} ({result['threads']} threads, "
        f"load {result['load_average']:.1f}): "
        f"fastest {result['fastest_s']} s, median {result['median_s']} s over {args.repeats} runs\n"
        f"stages {result['stage_s']}\n"
        f"{result['gflops']} GFLOP per video ({result['achieved_tflops']} TFLOP/s here); "
        f"projected at {args.project_tflops} TFLOP/s: {result['projected_s']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
