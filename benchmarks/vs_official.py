"""Side by side with the official Kandinsky Video 1.0 code: the same weights, the same context tensor.

    python benchmarks/vs_official.py --official /path/to/KandinskyVideo   # a checkout of branch
                                                                           # kandinsky_video_1_0
    python benchmarks/vs_official.py --official PATH --repeats 3 --threads 2 --json out.json

``PATH`` is a local checkout of the reference code (the folder that holds ``video_kandinsky3``). The
project neither ships nor installs it. Of its imports only ``einops`` is needed here (its package
``__init__`` also imports omegaconf, pandas and torchvision for the Hub pipeline; this script loads the
modules it uses without running that ``__init__``); install einops into the environment that runs the
benchmark, not into the project.

What runs: random weights of the released architecture at a size that fits a CPU (``bench_config``:
every structural setting of the release, narrower channels, 6 keyframes at 128x128) are written in the
released file layout (``kandinsky_video.pt``, ``kandinsky_video_interpolation.pt``, ``movq.pt``). Both
sides load those files the way they do it themselves, receive the same projected text context (a fixed
random tensor, so the text encoder is not part of the comparison) and generate fps ``medium``
(keyframes, one interpolation pass, decoding):

- official: ``UNet``/``MoVQ`` built and filled as its ``get_T2V_unet``/``get_movq`` do, sampled with its
  ``BaseDiffusion.p_sample_loop`` (DDPM, 0.98 dynamic thresholding) with the arguments its pipeline passes;
- this project: ``load_official`` + ``TextToVideoPipeline``, (a) matched: float32, DDPM 50 + 50;
  (b) its defaults (``dtype="auto"``, the model's sampler and steps); (c) fast: auto dtype, DPM-Solver++
  20 + 20.

Every run is a fresh process, so its peak resident set size (``ru_maxrss``) is the whole process's:
interpreter, imports, loading and generation. The runs of one repetition are interleaved (official,
matched, defaults, fast), which matters on a shared machine; the table reports medians over repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

START = time.perf_counter()

KEYFRAMES = 6  # divides 180, as the official temporal positions need (arange(0, 180, 180 // N))
SIZE = 128
CONTEXT_TOKENS = 12
GUIDANCE = 5.0
INTERPOLATION_GUIDANCE = 0.25
STAGES = ("start-up", "load", "keyframes", "interpolation 1", "decoding", "total")
CPU_STAGES = ("load", "keyframes", "interpolation 1", "decoding", "total")
RUNS = ("official", "matched", "defaults", "fast")


def bench_config():
    """The 1.0 architecture (4 levels, 3 blocks each, attention below the top level, expansion 4,
    MoVQ with spatial attention) at a twelfth of the U-Net width and an eighth of the MoVQ's."""
    import dataclasses

    from fusionframes.config import ModelConfig, MoVQConfig, SamplingDefaults, TextConfig, UNetConfig

    unet = UNetConfig(
        model_channels=32,
        init_channels=16,
        time_embed_dim=128,
        context_dim=128,
        groups=16,
        head_dim=16,
        expansion_ratio=4,
        compression_ratio=2,
    )
    return ModelConfig(
        keyframe_unet=dataclasses.replace(unet, num_frames=KEYFRAMES),
        interpolation_unet=dataclasses.replace(unet, num_channels=20, out_channels=12, interpolation=True),
        movq=MoVQConfig(
            ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(32,), resolution=256
        ),
        text=TextConfig(encoder_dim=128, context_dim=128),
        sampling=SamplingDefaults(width=SIZE, height=SIZE, fps="medium"),
    )


def random_components(config=None, name: str = "bench"):
    """``config`` (default ``bench_config``) with random weights, zero-initialised layers included
    (seeded)."""
    import torch

    from fusionframes.components import build_components

    torch.manual_seed(0)
    parts = build_components(config or bench_config(), "none", name=name)
    for net in (parts.keyframe_unet, parts.interpolation_unet):
        with torch.no_grad():  # zero-initialised layers (temporal outputs, AdaGN) would hide their cost
            for p in net.parameters():
                if not p.abs().sum():
                    p.normal_(0.0, 0.02)
    return parts


def shared_context(context_dim: int) -> dict:
    """The projected text context both sides get: random, the last three positions padding."""
    import torch

    generator = torch.Generator().manual_seed(1)
    context = torch.randn(1, CONTEXT_TOKENS, context_dim, generator=generator)
    mask = torch.ones(1, CONTEXT_TOKENS, dtype=torch.bool)
    mask[:, -3:] = False  # padded positions, as a real prompt's context has
    return {"context": context * mask[..., None], "mask": mask}


def write_inputs(root: Path) -> None:
    """Random weights in the released file layout, the shared context, and the config."""
    import torch

    parts = random_components()
    torch.save(
        {
            "unet": parts.keyframe_unet.state_dict(),
            "null_embedding": parts.keyframe_null,
            "projections": parts.projection.state_dict(),
        },
        root / "kandinsky_video.pt",
    )
    torch.save(
        {"unet": parts.interpolation_unet.state_dict(), "null_embedding": parts.interpolation_null},
        root / "kandinsky_video_interpolation.pt",
    )
    torch.save(parts.movq.state_dict(), root / "movq.pt")
    torch.save(shared_context(parts.config.text.context_dim), root / "context.pt")
    (root / "config.json").write_text(json.dumps(parts.config.to_dict()))


# -- children ------------------------------------------------------------------------------------


def import_official(checkout: Path):
    """The reference's network and diffusion modules, without its package ``__init__``."""
    import types

    package = checkout / "video_kandinsky3"
    stub = types.ModuleType("video_kandinsky3")
    stub.__path__ = [str(package)]
    sys.modules["video_kandinsky3"] = stub
    sys.path.insert(0, str(checkout))
    from video_kandinsky3.model import diffusion, unet
    from video_kandinsky3.movq import MoVQ

    return unet.UNet, MoVQ, diffusion


def official_unet_kwargs(cfg) -> dict[str, Any]:
    names = (
        "model_channels", "num_channels", "out_channels", "init_channels", "time_embed_dim", "context_dim",
        "groups", "head_dim", "expansion_ratio", "compression_ratio", "dim_mult", "num_blocks",
        "add_cross_attention", "add_self_attention",
    )  # fmt: skip
    kwargs = {name: getattr(cfg, name) for name in names}
    if cfg.interpolation:
        kwargs["interpolation"] = True
    else:
        kwargs["num_frames"] = cfg.num_frames
    return kwargs


def rss_bytes() -> float:
    """The process's resident set size now (after the imports, before loading)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_official(root: Path, checkout: Path, steps: int) -> dict[str, float]:
    import torch

    from fusionframes.config import ModelConfig

    UNet, MoVQ, diffusion = import_official(checkout)
    config = ModelConfig.from_dict(json.loads((root / "config.json").read_text()))
    timings = {"start-up": time.perf_counter() - START, "start-up RSS": rss_bytes()}
    start, start_cpu = time.perf_counter(), time.process_time()
    # As get_T2V_unet / get_interpolation_unet / get_movq: construct, torch.load, load_state_dict.
    unet = UNet(**official_unet_kwargs(config.keyframe_unet))
    state = torch.load(root / "kandinsky_video.pt", map_location="cpu")
    null = state["null_embedding"]
    unet.load_state_dict(state["unet"])
    unet.eval()
    del state
    interpolation_unet = UNet(**official_unet_kwargs(config.interpolation_unet))
    state = torch.load(root / "kandinsky_video_interpolation.pt", map_location="cpu")
    interpolation_null = state["null_embedding"]
    interpolation_unet.load_state_dict(state["unet"])
    interpolation_unet.eval()
    del state
    movq = MoVQ(config.movq.to_dict() | {"ch_mult": list(config.movq.ch_mult)})
    movq.load_state_dict(torch.load(root / "movq.pt"))
    movq.eval()
    timings["load"] = time.perf_counter() - start
    timings["load cpu"] = time.process_time() - start_cpu
    shared = torch.load(root / "context.pt")
    context, mask = shared["context"], shared["mask"].float()
    n, latent = KEYFRAMES, SIZE // config.movq.scale_factor
    ddpm = diffusion.BaseDiffusion(diffusion.get_named_beta_schedule("cosine", steps), 0.98)
    torch.manual_seed(0)
    clock = StageClock(timings)
    with torch.no_grad():
        clock.start("keyframes")
        keyframes = ddpm.p_sample_loop(
            unet, (n, 4, latent, latent), "cpu", context.repeat(n, 1, 1), mask.repeat(n, 1), null,
            GUIDANCE, temporal_positions=torch.arange(n) * (180 // n),
        )  # fmt: skip
        clock.start("interpolation 1")
        groups = n - 1
        pair_context = torch.zeros(groups, 2, context.shape[-1])
        pair_context[:, 0] = interpolation_null
        pair_mask = torch.zeros(groups, 2)
        pair_mask[:, 0] = 1
        middles = ddpm.p_sample_loop(
            interpolation_unet, (groups, 12, latent, latent), "cpu", pair_context, pair_mask,
            interpolation_null, INTERPOLATION_GUIDANCE, base_frames=(keyframes[:-1], keyframes[1:]),
            num_temporal_groups=groups, skip_frames=torch.full((groups,), 3, dtype=torch.int32),
            v_predication=True,
        )  # fmt: skip
        middles = middles.reshape(groups, 3, 4, latent, latent)
        video = torch.cat([torch.cat([keyframes[:-1, None], middles], 1).flatten(0, 1), keyframes[-1:]])
        clock.start("decoding")
        frames = torch.cat([movq.decode(chunk) for chunk in video.chunk(video.shape[0] // 4)])
        frames = torch.clip((frames + 1.0) / 2.0, 0.0, 1.0)
        clock.stop()
    if not torch.isfinite(frames).all():
        raise RuntimeError("official: the video is not finite")
    return timings


class StageClock:
    """Wall and process CPU seconds of consecutive stages (CPU time: on a shared machine it is the
    work done, where the wall time also counts the other processes' share of the cores)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.current: tuple[str, float, float] | None = None

    def start(self, stage: str) -> None:
        self.stop()
        self.current = (stage, time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self.current is not None:
            stage, wall, cpu = self.current
            self.timings[stage] = time.perf_counter() - wall
            self.timings[f"{stage} cpu"] = time.process_time() - cpu
            self.current = None

    def callback(self, stage: str, step: int, total: int) -> None:
        """The pipeline's progress callback: step 0 of a stage starts it, decoding's last step ends it."""
        if step == 0:
            self.start(stage)
        elif stage == "decoding" and step == total:
            self.stop()


class FixedContext:
    """Stands in for the text conditioner: every prompt gets the shared, already projected context."""

    def __init__(self, context, mask) -> None:
        import torch

        self.encoder = torch.nn.Identity()
        self.context, self.mask = context, mask

    def __call__(self, prompts: list[str]):
        return self.context.expand(len(prompts), -1, -1), self.mask.expand(len(prompts), -1)


def run_ours(root: Path, mode: str, steps: int) -> dict[str, float]:
    import torch

    from fusionframes.config import ModelConfig
    from fusionframes.io.checkpoints import OfficialFiles, load_official
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    config = ModelConfig.from_dict(json.loads((root / "config.json").read_text()))
    timings = {"start-up": time.perf_counter() - START, "start-up RSS": rss_bytes()}
    start, start_cpu = time.perf_counter(), time.process_time()
    files = OfficialFiles(
        root / "kandinsky_video.pt", root / "kandinsky_video_interpolation.pt", root / "movq.pt", "none"
    )
    components = load_official(files, config)
    shared = torch.load(root / "context.pt", weights_only=True)
    text = FixedContext(shared["context"], shared["mask"])
    pipe = TextToVideoPipeline(
        components, device="cpu", dtype="float32" if mode == "matched" else "auto", text_conditioner=text
    )
    timings["load"] = time.perf_counter() - start
    timings["load cpu"] = time.process_time() - start_cpu
    settings: dict[str, Any] = {"num_keyframes": KEYFRAMES, "width": SIZE, "height": SIZE, "fps": "medium"}
    if mode == "matched":
        settings |= {"scheduler": "ddpm", "num_inference_steps": steps, "interpolation_steps": steps}
    elif mode == "fast":
        settings |= {"scheduler": "dpm++2m", "num_inference_steps": 20, "interpolation_steps": 20}
    clock = StageClock({})
    video = pipe(
        "a shared context", seed=0, output_type="pt", progress=False, callback=clock.callback, **settings
    )
    timings |= {k: v for k, v in video.timings.items() if k != "text"}
    timings |= {k: v for k, v in clock.timings.items() if k.endswith(" cpu")}
    timings["dtype"] = str(pipe.dtype).removeprefix("torch.")  # type: ignore[assignment]
    return timings


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.child == "official":
        timings = run_official(args.root, args.official, args.steps)
    else:
        timings = run_ours(args.root, args.child, args.steps)
    timings["total"] = time.perf_counter() - START
    timings["total cpu"] = time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"timings": timings, "peak_bytes": peak}))


# -- parent --------------------------------------------------------------------------------------


def measure(run: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", run, "--root", str(root), "--official", str(args.official),
        "--threads", str(args.threads), "--steps", str(args.steps),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{run}: the child process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    def median(run: str, key: str) -> float:
        return statistics.median(r["timings"][key] for r in results[run])

    lines = []
    header = f"{'stage (x = speed-up)':<20}{'official':>8}" + "".join(
        f"{run:>13}{'x':>7}" for run in RUNS[1:] if results.get(run)
    )
    lines.append(header)
    for stage in (*STAGES, *(f"{s} cpu" for s in CPU_STAGES)):
        row = f"{stage:<20}{median('official', stage):>8.2f}"
        for run in RUNS[1:]:
            if results.get(run):
                value = median(run, stage)
                row += f"{value:>13.2f}{median('official', stage) / value:>6.2f}x"
        lines.append(row)
    for label, get, note in (
        ("peak RSS MiB", lambda r: r["peak_bytes"], "   (whole process; x = ours / official)"),
        ("RSS imports MiB", lambda r: r["timings"]["start-up RSS"], "   (after the imports, before loading)"),
    ):
        sizes = {run: statistics.median(get(r) for r in rs) / 2**20 for run, rs in results.items() if rs}
        row = f"{label:<20}{sizes['official']:>8.0f}"
        for run in RUNS[1:]:
            if run in sizes:
                row += f"{sizes[run]:>13.0f}{sizes[run] / sizes['official']:>6.2f}x"
        lines.append(row + note)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", type=Path, required=True, help="checkout holding video_kandinsky3/")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50, help="DDPM steps per stage of the matched runs")
    parser.add_argument("--runs", default=",".join(RUNS[1:]), help="which of matched,defaults,fast to run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.official / "video_kandinsky3" / "model" / "unet.py").is_file():
        parser.error(
            f"--official: {args.official} has no video_kandinsky3/model/unet.py (branch kandinsky_video_1_0)"
        )
    if args.child:
        child(args)
        return 0
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats, --threads: must be >= 1")
    if args.steps < 2:
        parser.error(f"--steps: must be >= 2 (the official schedule needs two), got {args.steps}")
    runs = ["official"] + [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"--runs: unknown {unknown}; allowed: {', '.join(RUNS[1:])}")
    import torch

    results: dict[str, list[dict[str, Any]]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        write_inputs(Path(tmp))
        for _ in range(args.repeats):
            for run in runs:
                results[run].append(measure(run, args, Path(tmp)))
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "repeats": args.repeats,
        "steps": args.steps,
    }
    print(
        f"vs official 1.0 code: {KEYFRAMES} keyframes {SIZE}x{SIZE}, fps medium; matched = float32 DDPM "
        f"{args.steps}+{args.steps}; defaults dtype "
        f"{results['defaults'][0]['timings']['dtype'] if results.get('defaults') else '-'}; "
        f"medians of {args.repeats}; {environment}"
    )
    print("\n".join(table(results)))
    if args.json:
        args.json.write_text(json.dumps({"environment": environment, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
