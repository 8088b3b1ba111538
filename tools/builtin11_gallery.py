"""README pictures of the built-in model's Kandinsky Video 1.1 parts (docs/images/).

    python tools/builtin11_gallery.py [--model builtin] [--out docs/images]

``builtin11_decoders.png``: a held-out synthetic clip (every 4th frame) as rendered, decoded from the
image MoVQ's latents frame by frame (``--decoder image``) and as one clip (``--decoder video``), and the
two decoders' difference x8. ``builtin11_i2v.png``: a held-out first frame (left) and the keyframes the
model makes from it and its caption (``generate --image``), above the text-only keyframes of the same
prompt and seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fusionframes.pipelines.builtin11 import decode_frames  # noqa: E402
from fusionframes.pipelines.text_to_video import TextToVideoPipeline, validate_settings  # noqa: E402
from fusionframes.synthetic import caption, render_clip, sample_scene  # noqa: E402


def labelled_rows(rows: list[np.ndarray], labels: list[str]) -> Image.Image:
    """Rows of equal-size frames ``[N, H, W, 3]`` with a text line above each."""
    h, w = rows[0].shape[1:3]
    width = max(len(r) for r in rows) * (w + 2)
    sheet = Image.new("RGB", (width, len(rows) * (h + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = i * (h + 16)
        draw.text((2, y + 2), label, fill=(0, 0, 0))
        for j, frame in enumerate(row):
            sheet.paste(Image.fromarray(frame), (j * (w + 2), y + 14))
    return sheet


def uint8(video: torch.Tensor) -> np.ndarray:
    return (video.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--steps", type=int, default=None, help="keyframe steps of the i2v example")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = TextToVideoPipeline.from_pretrained(args.model, device="cpu", dtype="float32")
    out = Path(args.out)

    rng = np.random.default_rng([251125, 9, 1])
    scene = sample_scene(rng)
    truth = render_clip(scene, 128, 29)
    with torch.no_grad():
        latents = pipe.components.movq.encode(torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 127.5 - 1)
    image = uint8(decode_frames(pipe.components, latents, "image", 4, False))
    video = uint8(decode_frames(pipe.components, latents, "video", 4, False))
    diff = np.clip(np.abs(image.astype(int) - video.astype(int)) * 8, 0, 255).astype(np.uint8)
    picks = slice(0, 29, 4)
    labelled_rows(
        [truth[picks], image[picks], video[picks], diff[picks]],
        ["rendered", "--decoder image", "--decoder video", "|image - video| x8"],
    ).save(out / "builtin11_decoders.png")

    rng = np.random.default_rng([251125, 10, 3])
    scene = sample_scene(rng)
    prompt = caption(scene, rng)
    first = Image.fromarray(render_clip(scene, 128, 29)[0])
    rows = []
    for given in (first, None):
        settings = validate_settings(
            pipe.config, prompt, seed=3, fps="low", image=given, num_inference_steps=args.steps
        )
        result = pipe.generate(
            settings, torch.Generator().manual_seed(3), output_type="np", progress=False, image=given
        )
        rows.append(np.asarray(result.frames))
    given_row = np.concatenate([np.asarray(first)[None], rows[0]])
    text_row = np.concatenate([np.full_like(rows[1][:1], 255), rows[1]])
    labelled_rows(
        [given_row, text_row], [f"given image, then --image keyframes: {prompt}", "text only, same seed"]
    ).save(out / "builtin11_i2v.png")
    print(f"wrote {out / 'builtin11_decoders.png'} and {out / 'builtin11_i2v.png'} ({prompt})")


if __name__ == "__main__":
    main()
