"""Does a keyframe model read the direction words? A paired denoising test on rendered clips.

The evaluator can only say that generated objects move the wrong way; this says why. Each synthetic
clip is noised once and denoised twice, under its own caption and under the reversed caption
("left" <-> "right", "rising" <-> "falling", ...), with the same noise. A model that uses the words
denoises better under the true caption: ``prefers_true`` goes well above 50% and ``gap_percent`` above 0.
A model that ignores them scores 50% and 0 (within the noise of ``clips`` draws). It needs no sampling,
so it takes about a minute on a CPU and can follow a training run checkpoint by checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

from fusionframes.diffusion.sampling import video_noise
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.pipelines.stages import temporal_positions
from fusionframes.synthetic import caption, render_clip, reverse_caption, sample_scene

PROBE_TIMESTEPS = (600, 750, 900)
_PROBE_STREAM = 7_1001  # keeps the probe's scenes apart from the training and evaluation streams


def directional_clips(n: int, frames: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, str, str]]:
    """``n`` rendered clips whose caption changes when reversed: (frames uint8, caption, reversed)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"clips: must be an int >= 1, got {n!r}")
    out = []
    index = 0
    while len(out) < n:
        rng = np.random.default_rng([seed, _PROBE_STREAM, index])
        index += 1
        scene = sample_scene(rng)
        text = caption(scene, rng)
        flipped = reverse_caption(text)
        if flipped != text:
            out.append((render_clip(scene, size, frames), text, flipped))
    return out


@torch.no_grad()
def direction_probe(
    pipe,
    clips: int = 48,
    timesteps: tuple[int, ...] = PROBE_TIMESTEPS,
    seed: int = 0,
) -> dict:
    """Paired denoising losses of ``pipe``'s keyframe U-Net under true and reversed captions.

    ``pipe`` is a :class:`~fusionframes.pipelines.text_to_video.TextToVideoPipeline` of a video model.
    The loss is the one the model was trained on, epsilon prediction.
    Returns, per timestep, the mean losses, ``gap_percent`` = 100 x (reversed - true) / true and
    ``prefers_true`` = the percentage of clips denoised better under their own caption.
    """
    components = pipe.components
    unet = components.keyframe_unet
    frames = unet.config.num_frames
    if frames is None:
        raise ValueError("model: the direction probe needs a video (keyframe) model")
    schedule = DiffusionSchedule.cosine(1000)
    bad = [t for t in timesteps if not (isinstance(t, int) and 0 <= t < schedule.num_steps)]
    if bad or not timesteps:
        raise ValueError(
            f"timesteps: each must be an int in [0, {schedule.num_steps}), got {list(timesteps)}"
        )
    size = pipe.config.sampling.height
    sharing = pipe.config.keyframe_unet.training.frame_noise_sharing
    dtype = next(unet.parameters()).dtype
    device = pipe.device
    generator = torch.Generator("cpu").manual_seed(seed)
    losses = {t: ([], []) for t in timesteps}
    for video, text, flipped in directional_clips(clips, frames, size, seed):
        pixels = torch.from_numpy(video).permute(0, 3, 1, 2).to(device, torch.float32) / 127.5 - 1.0
        latents = components.movq.encode(pixels.to(next(components.movq.parameters()).dtype)).float()
        contexts = [pipe.encode_prompts(prompt, None)[:2] for prompt in (text, flipped)]
        for t in timesteps:
            noise = video_noise(tuple(latents.shape), sharing, generator, "cpu").to(device)
            step = torch.full((frames,), t, device=device)
            noisy = schedule.add_noise(latents, noise, step)
            for slot, (context, mask) in enumerate(contexts):
                predicted = unet(
                    noisy.to(dtype),
                    step * schedule.time_scale,
                    context.expand(frames, -1, -1).to(dtype),
                    mask.expand(frames, -1).bool(),
                    temporal_positions(frames, device),
                    num_frames=frames,
                )
                losses[t][slot].append(float((predicted.float() - noise).pow(2).mean()))
    report = {}
    for t, (true, reversed_) in losses.items():
        true_arr, reversed_arr = np.array(true), np.array(reversed_)
        report[str(t)] = {
            "loss_true": round(float(true_arr.mean()), 6),
            "loss_reversed": round(float(reversed_arr.mean()), 6),
            "gap_percent": round(float(100 * (reversed_arr.mean() - true_arr.mean()) / true_arr.mean()), 3),
            "prefers_true": round(float(100 * np.mean(true_arr < reversed_arr)), 1),
        }
    return {"clips": clips, "seed": seed, "frame_noise_sharing": sharing, "timesteps": report}
