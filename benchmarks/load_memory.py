"""Time and peak memory of loading a model, each in a fresh process.

    python benchmarks/load_memory.py                    # the built-in model folder
    python benchmarks/load_memory.py --model mid        # a mid-size random model folder (float32)
    python benchmarks/load_memory.py --model mid-official  # the same weights as the three released .pt files
    python benchmarks/load_memory.py --repeats 3 --json load.json

Peak memory is the child process's peak resident set size during the load above its resident size just
before it (``VmHWM`` reset through ``/proc/self/clear_refs`` after the imports, read from
``/proc/self/status``), so imports and the interpreter are not counted. The weights' own size is printed
beside it: a load that keeps no second copy peaks near that size. The time and the peak include reading
every weight once after loading (memory-mapped weights are read from the file only when touched).
Run the command with another
``PYTHONPATH`` to compare two versions of the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
import fusionframes.io.checkpoints as ck

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

from fusionframes.components import build_components
from fusionframes.config import ModelConfig

kind, path = sys.argv[1], sys.argv[2]
if kind == "official":
    config = ModelConfig.from_dict(json.loads((Path(path) / "config.json").read_text()))
else:
    config = ck.read_folder_config(ck.resolve_model_source(
        None if path == "builtin" else path))
# Import everything loading imports (the networks' modules) before the measurement starts.
build_components(config, "none", device="meta")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
start = time.perf_counter()
if kind == "official":
    root = Path(path)
    files = ck.OfficialFiles(root / "kandinsky_video.pt", root / "kandinsky_video_interpolation.pt",
                             root / "movq.pt", root / "text_encoder")
    components = ck.load_official(files, config)
else:
    components = ck.load_model_folder(path) if path != "builtin" else ck.load_model(None)
loaded = time.perf_counter() - start
# Read every weight once: memory-mapped tensors become resident only when touched, so the peak and the
# time are compared after every weight has been read (the first forward would read them anyway).
with torch.no_grad():
    for m in components.networks().values():
        for t in m.parameters():
            t.sum()
seconds = time.perf_counter() - start
weights = sum(t.numel() * t.element_size() for m in components.networks().values()
              for t in [*m.parameters(), *m.buffers()])
print(json.dumps({"seconds": seconds, "load_seconds": loaded, "peak_bytes": status("VmHWM") - before,
                  "after_bytes": status("VmRSS") - before, "weights_bytes": weights}))
"""


def mid_model(root: Path, official: bool) -> tuple[str, Path]:
    """Write the memory model's mid-size config with random weights: a model folder, or official files."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory_model import mid_config

    from fusionframes.components import build_components
    from fusionframes.io.checkpoints import write_model_folder

    torch.manual_seed(0)
    components = build_components(mid_config(), "none", name="mid")
    if not official:
        return "folder", write_model_folder(components, root / "mid")
    out = root / "official"
    out.mkdir()
    torch.save(
        {
            "unet": components.keyframe_unet.state_dict(),
            "null_embedding": components.keyframe_null,
            "projections": components.projection.state_dict(),
        },
        out / "kandinsky_video.pt",
    )
    torch.save(
        {"unet": components.interpolation_unet.state_dict(), "null_embedding": components.interpolation_null},
        out / "kandinsky_video_interpolation.pt",
    )
    torch.save(components.movq.state_dict(), out / "movq.pt")
    (out / "config.json").write_text(json.dumps(components.config.to_dict()))
    return "official", out


def measure(kind: str, path: str | Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin", choices=["builtin", "mid", "mid-official"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    import torch

    import fusionframes

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "builtin":
            kind, path = "folder", "builtin"
        else:
            kind, path = mid_model(Path(tmp), args.model == "mid-official")
        runs = [measure(kind, path) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    peak = max(r["peak_bytes"] for r in runs)
    print(
        f"{args.model}: load {best['seconds']:.2f} s (fastest of {args.repeats}), "
        f"peak +{peak / 2**20:.0f} MiB above the pre-load RSS, "
        f"weights {best['weights_bytes'] / 2**20:.0f} MiB; "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}, "
        f"loader {Path(fusionframes.__file__).parent}"
    )
    if args.json:
        tmp_json = args.json.with_name(f".{args.json.name}.tmp")
        tmp_json.write_text(json.dumps({"model": args.model, "runs": runs}, indent=2) + "\n")
        os.replace(tmp_json, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
