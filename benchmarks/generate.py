"""Per-stage wall time, counted FLOPs, achieved TFLOP/s and peak memory of text-to-video generation.

    python benchmarks/generate.py                          # the built-in model (when installed)
    python benchmarks/generate.py --model DIR              # any model folder
    python benchmarks/generate.py --random-small           # random weights, built-in model architecture
    python benchmarks/generate.py --preset kandinsky-video-1.0 --device cuda --fps high --width 512 \\
        --height 512                                       # released architecture, random weights
    python benchmarks/generate.py --preset kandinsky-video-1.1 --small-config '{}' --steps 2 \
        --interpolation-steps 1 --fps medium              # 1.1 architecture at the small scale (CPU)
    python benchmarks/generate.py --random-small --compare # float32 50+50-step DDPM vs the fast path
    python benchmarks/generate.py ... --json result.json   # also write everything as JSON

Stages: text encoding, keyframes, interpolation 1 and 2 (fps medium / high), decoding. FLOPs are counted
with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; not norms or
element-wise ops) on one denoiser call per stage, with the real shapes, times the number of calls the
sampler made; decoding is counted on one frame times the frames. Kandinsky Video 1.1 models (the
``kandinsky-video-1.1`` preset, at its released size or with ``--small-config`` at the small one, or a
1.1 model folder) add the first-frame stage; their FLOPs are counted on the first network call of each
stage, recorded during the run, times the calls (decoding: times the frames over the first piece's).
Peak memory is
``torch.cuda.max_memory_allocated`` reset per stage on CUDA, and the process's peak resident set size
sampled every 5 ms on CPU (it includes the loaded model). ``--repeats N`` reports the fastest run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

PROMPT = "a red circle moving right on a gray background"
STAGES = ("text", "first frame", "keyframes", "interpolation 1", "interpolation 2", "decoding")
STAGE_NAMES = {"text": "text encoding"}
SLOW_PATH = {"dtype": "float32", "sampler": "ddpm", "steps": 50, "interpolation_steps": 50}
# The built-in model's architecture (configs/builtin/movq.yaml): the small preset with a 16-channel MoVQ
# and a 2-layer T5 of width 64.
BUILTIN_ARCH = {"movq_channels": 16}
BUILTIN_T5 = {"vocab_size": 256, "num_layers": 2, "num_heads": 4, "d_ff": 128}
# Flan-UL2's encoder (the released model's text encoder), for random-weight runs of the release.
FLAN_UL2_ENCODER = {
    "vocab_size": 32128,
    "d_kv": 256,
    "d_ff": 16384,
    "num_layers": 32,
    "num_heads": 16,
    "feed_forward_proj": "gated-silu",
}
CAPTIONS = [PROMPT, "a blue square zooming in on a white background", "a green star falling"] * 6


# ---------------------------------------------------------------------------------------------
# models


def random_small_model(root: Path, overrides: dict[str, Any]) -> Path:
    """A random model folder of the built-in architecture (``overrides`` go to ``small_config``)."""
    from fusionframes.components import build_components
    from fusionframes.config import small_config
    from fusionframes.io.checkpoints import write_model_folder
    from fusionframes.text.tokenizer import make_text_encoder_folder

    config = small_config(**{**BUILTIN_ARCH, **overrides})
    t5 = {k: v for k, v in BUILTIN_T5.items() if k != "vocab_size"}
    text = make_text_encoder_folder(
        CAPTIONS, root / "t5", vocab_size=BUILTIN_T5["vocab_size"], d_model=config.text.encoder_dim, **t5
    )
    components = build_components(config, text, name="random-small")
    return write_model_folder(components, root / "model", text_encoder_dir=text)


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Finite random weights for a module materialised from meta (``to_empty`` leaves garbage).

    Matrices and kernels ~ N(0, 0.5 / fan_in) so activations stay bounded through deep stacks; norm
    weights 1; biases and scalar merge gates 0 (as the constructors initialise them).
    """
    generators: dict[torch.device, torch.Generator] = {}
    for layer in module.modules():
        is_norm = "Norm" in type(layer).__name__
        for name, param in layer.named_parameters(recurse=False):
            if param.dim() >= 2:
                if param.device not in generators:  # drawn where the weights live: no host round trip
                    generators[param.device] = torch.Generator(param.device).manual_seed(seed)
                param.normal_(0.0, math.sqrt(0.5 / param[0].numel()), generator=generators[param.device])
            else:
                param.fill_(1.0 if is_norm and name == "weight" else 0.0)
    return module


def random_preset_pipeline(args: argparse.Namespace, dtype: str, channels_last: bool | None):
    """The pipeline for a named architecture with random weights, built on meta then materialised.

    Nothing is allocated at full size before the target device and dtype are known; with offload the
    weights are materialised in CPU memory (where offload keeps them).
    """
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from fusionframes.components import build_components
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline, pipeline_class_for
    from fusionframes.runtime import resolve_decoder_dtype, resolve_device, resolve_dtype
    from fusionframes.text.conditioning import TextConditioner
    from fusionframes.text.tokenizer import train_tokenizer

    device = resolve_device(args.device)
    precision = resolve_dtype(dtype, device)
    decoder_dtype = resolve_decoder_dtype(args.decoder_dtype, precision.dtype).dtype
    home = torch.device("cpu") if args.offload != "none" else device
    config = preset_config(args)
    tokenizer_dir = train_tokenizer(CAPTIONS, Path(args.workdir) / "tokenizer", vocab_size=64)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    components = build_components(config, tokenizer_dir, name=f"random-{args.preset}", device="meta")
    for key, module in components.networks().items():
        if key in ("text_projection", "interpolation_text_projection"):
            module.to(dtype=torch.float32)
        else:
            module.to(dtype=decoder_dtype if key in ("movq", "video_movq") else precision.dtype)
        randomize_(module.to_empty(device=home))
    components.keyframe_null = torch.randn(components.keyframe_null.shape, device=home) * 0.02
    components.interpolation_null = torch.randn(components.interpolation_null.shape, device=home) * 0.02
    if config.text.encoder_dim == 4096:
        t5_sizes = FLAN_UL2_ENCODER
    else:
        t5_sizes = {**BUILTIN_T5, "vocab_size": len(tokenizer), "d_kv": config.text.encoder_dim // 4}
        t5_sizes["feed_forward_proj"] = "gated-gelu"
    t5_config = T5Config(d_model=config.text.encoder_dim, dropout_rate=0.0, **t5_sizes)
    text_dtype = torch.float32 if precision.dtype == torch.float16 else precision.dtype  # T5 overflows
    with torch.device("meta"):
        encoder = T5EncoderModel(t5_config).to(text_dtype)
    randomize_(encoder.to_empty(device=home)).eval().requires_grad_(False)
    text = TextConditioner(tokenizer, encoder, components.projection, max_length=config.text.max_length)
    return pipeline_class_for(config, TextToVideoPipeline)(
        components,
        device=device,
        dtype=dtype,
        text_conditioner=text,
        channels_last=channels_last,
        **pipeline_options(args),
    )


def preset_config(args: argparse.Namespace):
    """``--preset`` at its own size, or (``--small-config``, 1.1 only) its architecture at the small
    preset's sizes: what a 2-core CPU can run."""
    from fusionframes.config import preset, small_config, with_kv11_architecture

    if args.small_config is None:
        return preset(args.preset)
    if args.preset != "kandinsky-video-1.1":
        raise SystemExit("--small-config: with --preset only for kandinsky-video-1.1 (else --random-small)")
    return with_kv11_architecture(small_config(**{**BUILTIN_ARCH, **json.loads(args.small_config)}), (16,))


def pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "offload": args.offload,
        "compile": args.compile,
        "decoder_dtype": args.decoder_dtype,
        "split_branches": args.split_branches,
    }


def load_pipeline(args: argparse.Namespace, model: str | Path | None, dtype: str, channels_last: bool | None):
    """Build or load the pipeline and its text encoder; returns it with the load times."""
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    start = time.perf_counter()
    if model is None:
        pipe = random_preset_pipeline(args, dtype, channels_last)
        kind = f"random {args.preset} weights built on meta and materialised (not read from disk)"
    else:
        pipe = TextToVideoPipeline.from_pretrained(
            model, device=args.device, dtype=dtype, channels_last=channels_last, **pipeline_options(args)
        )
        kind = "first load of the model folder in this process (files may be in the OS page cache)"
    networks = time.perf_counter() - start
    start = time.perf_counter()
    pipe._text_conditioner()  # loaded lazily by the first generate call; time it here, not there
    text = time.perf_counter() - start
    return pipe, {
        "load_s": round(networks + text, 3),
        "load_networks_s": round(networks, 3),
        "load_text_encoder_s": round(text, 3),
        "load_kind": kind,
    }


# ---------------------------------------------------------------------------------------------
# measuring


def _aten_cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


@contextlib.contextmanager
def eager(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Run ``nn.Module.compile``-d modules eagerly: the FLOP counter must see every aten op."""
    saved = [(m, getattr(m, "_compiled_call_impl", None)) for m in modules]
    for module, _ in saved:
        module._compiled_call_impl = None
    try:
        yield
    finally:
        for module, impl in saved:
            module._compiled_call_impl = impl


def count_flops(fn) -> int:
    """FLOPs of one call; SDPA's CPU kernel is not in torch's table, so it is added here."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _aten_cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def flops_per_call(pipe, settings) -> dict[str, int]:
    """FLOPs of one denoiser call per stage at the run's shapes (one text encoding, one decoded frame)."""
    from fusionframes.pipelines.stages import (
        InterpolationConditioning,
        KeyframeConditioning,
        TextBranches,
        frames_model,
        interpolation_model,
    )
    from fusionframes.pipelines.text_to_video import FPS_PASSES, PASS_SKIP_FRAMES

    c, device = pipe.components, pipe.device
    prompts = [settings.prompt] + ([settings.negative_prompt] if settings.negative_prompt else [])
    out = {"text": count_flops(lambda: pipe.text(prompts))}
    text = TextBranches(*pipe.encode_prompts(settings.prompt, settings.negative_prompt))
    factor = pipe.config.movq.scale_factor
    h, w = settings.height // factor, settings.width // factor
    channels = pipe.config.keyframe_unet.num_channels
    n = settings.num_keyframes
    time_ = torch.full((n,), 500, dtype=torch.long, device=device)
    with eager([c.keyframe_unet, c.interpolation_unet, c.movq.decoder]):
        denoise = frames_model(c.keyframe_unet, KeyframeConditioning(text, settings.guidance_scale), n)
        out["keyframes"] = count_flops(lambda: denoise(torch.randn(n, channels, h, w, device=device), time_))
        frames = n
        for index in range(FPS_PASSES[settings.fps]):
            latents = torch.randn(frames, channels, h, w, device=device)
            groups = frames - 1
            cond = InterpolationConditioning(c.interpolation_null, settings.interpolation_guidance_scale)
            denoise = interpolation_model(
                c.interpolation_unet, cond, latents[:-1], latents[1:], PASS_SKIP_FRAMES[index]
            )
            x = torch.randn(groups, 3 * channels, h, w, device=device)
            t = torch.full((groups,), 500, dtype=torch.long, device=device)
            out[f"interpolation {index + 1}"] = count_flops(lambda: denoise(x, t))  # noqa: B023
            frames = 4 * frames - 3
        dtype = next(c.movq.parameters()).dtype
        latent = torch.randn(1, channels, h, w, device=device, dtype=dtype)
        out["decoding"] = count_flops(lambda: c.movq.decode(latent))
    return out


class RssSampler:
    """Peak resident set size of this process, sampled in a thread (torch kernels release the GIL)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def reset(self) -> None:
        self.peak = self.current()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class StageProbe:
    """Progress callback that closes a stage's peak memory and counts denoiser calls per stage."""

    def __init__(self, device: torch.device, rss: RssSampler | None) -> None:
        self.device, self.rss = device, rss
        self.stage = "text"
        self.calls: dict[str, int] = {"text": 1, "decoding": 0}
        self.peak: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.rss is not None:
            self.rss.reset()

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak[self.stage] = torch.cuda.max_memory_allocated(self.device)
        elif self.rss is not None:
            self.peak[self.stage] = self.rss.peak

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.reset()
        if stage == "decoding":
            if step == total:
                self.close()
        elif step > 0:
            self.calls[stage] = self.calls.get(stage, 0) + 1  # one denoiser call per sampler step


class CallRecorder:
    """Counts the network calls of each stage during a run and keeps the first call's inputs, whose
    FLOPs are counted after the run (:meth:`stage_flops`): no stage function is re-built, so this sees
    what the pipeline really ran (branch-by-branch calls included)."""

    def __init__(self, probe: StageProbe, modules: list[torch.nn.Module]) -> None:
        self.probe = probe
        self.calls: dict[str, int] = {}
        self.rows: dict[tuple[str, int], int] = {}  # (stage, network) -> rows of all its calls
        self.first: dict[tuple[str, int], tuple] = {}  # (stage, network) -> its first call
        self.hooks = [m.register_forward_pre_hook(self._record, with_kwargs=True) for m in modules]

    def _record(self, module, args, kwargs) -> None:
        stage, key = self.probe.stage, (self.probe.stage, id(module))
        self.calls[stage] = self.calls.get(stage, 0) + 1
        self.rows[key] = self.rows.get(key, 0) + args[0].shape[0]
        if key not in self.first:
            keep = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            self.first[key] = (module, keep, dict(kwargs))

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    @torch.no_grad()
    def stage_flops(self) -> dict[str, int]:
        """Total FLOPs per stage: each network's first call in the stage, scaled by the rows of all its
        calls there (the decoder's pieces differ in frames; a U-Net's calls in a stage are alike; the
        first-frame stage also decodes its image)."""
        out: dict[str, int] = {}
        for (stage, _), (module, args, kwargs) in self.first.items():
            with eager([module]):
                first = count_flops(lambda: module(*args, **kwargs))  # noqa: B023
            rows = self.rows[(stage, id(module))]
            out[stage] = out.get(stage, 0) + round(first * rows / args[0].shape[0])
        return out


def networks_of(pipe) -> list[torch.nn.Module]:
    """The U-Nets and the decoders a 1.1 pipeline runs (hooks on the decoders see every decode)."""
    from fusionframes.pipelines.branch_split import unwrap

    c = pipe.components
    decoders = [c.movq.decoder] + ([c.video_movq.decoder] if c.video_movq is not None else [])
    return [unwrap(c.keyframe_unet), unwrap(c.interpolation_unet), *decoders]


def settings_11(args: argparse.Namespace, pipe, options: dict[str, Any]):
    from fusionframes.pipelines.kandinsky11 import validate_settings_11

    if options["sampler"] not in (None, "ddpm"):
        raise SystemExit("--sampler: Kandinsky Video 1.1 samples with its trained DDPM only")
    chosen = {
        "fps": args.fps,
        "width": args.width,
        "height": args.height,
        "num_inference_steps": options["steps"],
        "interpolation_steps": options["interpolation_steps"],
        "decoder": args.decoder,
        "num_keyframes": args.keyframes,
    }
    return validate_settings_11(pipe.config, PROMPT, options=chosen, seed=0, decoders=pipe.decoders())[0]


def run_path(args, label: str, model, options: dict[str, Any], channels_last: bool | None) -> dict[str, Any]:
    """Load, count FLOPs, run ``--repeats`` times; the fastest run's stages are reported."""
    from fusionframes.pipelines.kandinsky11 import is_kandinsky_11
    from fusionframes.pipelines.text_to_video import validate_settings

    pipe, load = load_pipeline(args, model, options["dtype"], channels_last)
    release_11 = is_kandinsky_11(pipe.config)
    if release_11:
        settings = settings_11(args, pipe, options)
        encode, prompts = pipe.text, [settings.prompt]
        flops = {"text": count_flops(lambda: encode(prompts))}
    else:
        settings = validate_settings(
            pipe.config,
            PROMPT,
            fps=args.fps,
            width=args.width,
            height=args.height,
            num_inference_steps=options["steps"],
            interpolation_steps=options["interpolation_steps"],
            scheduler=options["sampler"],
            seed=0,
            num_keyframes=args.keyframes,
            decode_chunk_size=args.decode_chunk,
        )
        flops = flops_per_call(pipe, settings)
    runs = []
    recorder = None
    with RssSampler() if pipe.device.type == "cpu" else contextlib.nullcontext() as rss:
        for _ in range(args.repeats):
            probe = StageProbe(pipe.device, rss)
            if release_11 and recorder is None:
                recorder = CallRecorder(probe, networks_of(pipe))
            generator = torch.Generator("cpu").manual_seed(0)
            start = time.perf_counter()
            if release_11:
                video = pipe.generate_11(
                    settings, None, generator, output_type="np", callback=probe, progress=not args.quiet
                )
            else:
                video = pipe.generate(
                    settings, generator, output_type="np", callback=probe, progress=not args.quiet
                )
            wall = time.perf_counter() - start
            runs.append((wall, video, probe))
            if recorder is not None:
                recorder.remove()  # the first run is the one counted
    if recorder is not None:  # per call, so that flops x calls is the stage's total
        totals = recorder.stage_flops()
        flops.update({stage: round(totals[stage] / recorder.calls[stage]) for stage in totals})
    best_wall, video, probe = min(runs, key=lambda run: run[0])
    stages = []
    for stage in STAGES:
        if stage not in video.timings:
            continue
        seconds = video.timings[stage]
        if recorder is not None:
            calls = 1 if stage == "text" else recorder.calls.get(stage, 0)
        else:
            calls = len(video.frames) if stage == "decoding" else probe.calls.get(stage, 0)
        total_flops = flops.get(stage, 0) * calls
        stages.append(
            {
                "stage": STAGE_NAMES.get(stage, stage),
                "wall_s": round(seconds, 4),
                "calls": calls,
                "gflop": round(total_flops / 1e9, 3),
                "tflops": round(total_flops / seconds / 1e12, 5) if seconds > 0 else None,
                "peak_mib": round(probe.peak[stage] / 2**20, 1) if stage in probe.peak else None,
            }
        )
    total_flops = sum(s["gflop"] for s in stages) * 1e9
    stages.append(
        {
            "stage": "total",
            "wall_s": round(best_wall, 4),
            "calls": None,
            "gflop": round(total_flops / 1e9, 3),
            "tflops": round(total_flops / best_wall / 1e12, 5),
            "peak_mib": max((s["peak_mib"] or 0.0 for s in stages), default=None),
        }
    )
    result = {
        "label": label,
        "model": str(model) if model is not None else f"random {args.preset}",
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "dtype_reason": pipe.precision.reason,
        "sampler": getattr(settings, "scheduler", "ddpm"),
        "steps": settings.num_inference_steps,
        "interpolation_steps": settings.interpolation_steps,
        "fps": settings.fps,
        "size": f"{settings.width}x{settings.height}",
        "keyframes": settings.num_keyframes,
        "release": "1.1" if release_11 else "1.0",
        "decoder": getattr(settings, "decoder", "image"),
        "split_branches": pipe.split_branches,
        "decoder_dtype": str(pipe.decoder_precision.dtype).replace("torch.", ""),
        "frames": len(video.frames),
        "offload": pipe.placement.mode,
        "compile": pipe.compiled,
        "channels_last": "auto" if channels_last is None else channels_last,
        **load,
        "first_run_s": round(runs[0][0], 4),
        "runs_s": [round(run[0], 4) for run in runs],
        "flops_per_call": flops,
        "stages": stages,
    }
    del pipe, video, runs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------
# report


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from fusionframes.runtime import cpu_features

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "memory": "peak GPU memory allocated (per stage)"
        if str(args.device).startswith("cuda")
        else "peak RSS of the process, sampled every 5 ms",
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def format_table(result: dict[str, Any], memory_label: str) -> str:
    header = f"{'stage':<16}{'wall s':>10}{'calls':>7}{'GFLOP':>12}{'TFLOP/s':>10}{memory_label:>14}"
    lines = [header, "-" * len(header)]
    for s in result["stages"]:
        calls = "" if s["calls"] is None else str(s["calls"])
        tflops = "" if s["tflops"] is None else f"{s['tflops']:.4f}"
        peak = "" if s["peak_mib"] is None else f"{s['peak_mib']:.1f}"
        lines.append(
            f"{s['stage']:<16}{s['wall_s']:>10.3f}{calls:>7}{s['gflop']:>12.2f}{tflops:>10}{peak:>14}"
        )
    return "\n".join(lines)


def describe(result: dict[str, Any]) -> str:
    return (
        f"[{result['label']}] {result['model']} on {result['device']}, {result['dtype']} "
        f"({result['dtype_reason']}), {result['sampler']} {result['steps']}+{result['interpolation_steps']} "
        f"steps, fps {result['fps']}, {result['size']}, {result['frames']} frames, offload "
        f"{result['offload']}, compile {result['compile']}, channels_last {result['channels_last']}\n"
        f"load {result['load_s']:.2f} s (networks {result['load_networks_s']:.2f} s + text encoder "
        f"{result['load_text_encoder_s']:.2f} s; {result['load_kind']}); runs {result['runs_s']} s"
    )


def default_model() -> str | None:
    from fusionframes.io.checkpoints import builtin_available

    return "builtin" if builtin_available() else None


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="builtin | kandinsky-video-1.0 | a model folder")
    source.add_argument("--random-small", action="store_true", help="random weights, built-in architecture")
    source.add_argument(
        "--preset", default=None, help="a named architecture with random weights (meta-built)"
    )
    parser.add_argument(
        "--small-config",
        default=None,
        help="JSON overrides for small_config (--random-small; with --preset kandinsky-video-1.1: its "
        "architecture at the small sizes, '{}' for the defaults)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--sampler", default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=None, help="keyframe steps (default: the model's)")
    parser.add_argument("--interpolation-steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--fps", default=None, help="low | medium | high (default: the model's)")
    parser.add_argument("--keyframes", type=int, default=None, help="default: the model's")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--decode-chunk", type=int, default=4)
    parser.add_argument("--offload", default="none", help="none | model | sequential (GPU only)")
    parser.add_argument("--decoder-dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--split-branches", action="store_true", help="one U-Net call per guidance branch")
    parser.add_argument("--decoder", default=None, help="1.1: video (default) | image")
    parser.add_argument("--compile", default="none", help="none | unets | all")
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--repeats", type=int, default=1, help="runs per path; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compare", action="store_true", help="also run float32 50+50-step DDPM; speedup")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        if args.preset is not None:
            model = None
        elif args.random_small:
            model = random_small_model(Path(tmp), json.loads(args.small_config or "{}"))
        else:
            model = args.model or default_model()
            if model is None:
                parser.error(
                    "the built-in model is not installed; pass --model DIR, --random-small or "
                    "--preset kandinsky-video-1.0 (random weights)"
                )
        fast = {
            "dtype": args.dtype,
            "sampler": args.sampler,
            "steps": args.steps,
            "interpolation_steps": args.interpolation_steps,
        }
        results = []
        if args.compare:
            saved_compile, args.compile = args.compile, "none"
            results.append(run_path(args, "slow: float32 eager DDPM 50+50", model, SLOW_PATH, False))
            args.compile = saved_compile
        results.append(run_path(args, "fast" if args.compare else "run", model, fast, channels_last))
    env = environment(args)
    memory_label = "peak GPU MiB" if results[0]["device"].startswith("cuda") else "peak RSS MiB"
    print(
        f"fusionframes generate benchmark, {env['date']}: torch {env['torch']}, CPU capability "
        f"{env['cpu_capability']}, {env['threads']} threads, load average {env['loadavg']}"
        + (f", GPU {env['gpu']}" if "gpu" in env else "")
    )
    for result in results:
        print()
        print(describe(result))
        print(format_table(result, memory_label))
    report: dict[str, Any] = {"environment": env, "results": results}
    if args.compare:
        slow, fast_result = results[0]["stages"][-1]["wall_s"], results[1]["stages"][-1]["wall_s"]
        report["speedup"] = round(slow / fast_result, 2)
        print(f"\nspeedup (slow total / fast total, loads excluded): {report['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
