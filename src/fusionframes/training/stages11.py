"""The Kandinsky Video 1.1 parts of the built-in model as training stages: the temporal MoVQ decoder and
the first-frame-conditioned (image-to-video) keyframe U-Net.

Both start as exact copies of shipped networks with their new parts at zero, so step 0 computes what the
shipped model computes and fine-tuning only has to learn the difference:

- ``movq`` with ``video_decoder: true``: ``components.video_movq`` is the image MoVQ with 3x3x3 temporal
  convolutions blended into every decoder ResNet block (blend weight 0) and temporal attention beside
  each spatial attention. Its encoder is never used (the image MoVQ encodes), so every latent the
  diffusion stages were trained on stays valid. The loss is the image MoVQ's reconstruction loss on
  clips of ``video_clip_frames`` consecutive frames, decoded as one clip (optionally a random
  ``video_crop`` window of them, a quarter of the compute at half the side). Only the temporal parts
  train: the spatial ones stay the image decoder's, so the result can only add temporal corrections.
- ``keyframes`` with ``first_frame_condition: true``: ``components.image_keyframe_unet`` is the keyframe
  U-Net with the 1.1 input layout, ``[noisy latent, condition, mask]`` (the condition is the noise-
  augmented first keyframe in row 0, zeros elsewhere; the mask marks row 0), and the embedding of the
  augmentation level. The new input weights and the embedding's output layer are zero. The text
  encoder, projection and null embedding stay the shipped ones (frozen), so both U-Nets share them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.components import ModelComponents
from fusionframes.models import MoVQ, UNet3D, build_unet
from fusionframes.pipelines.builtin11 import first_frame_inputs
from fusionframes.training.config import TrainConfig
from fusionframes.training.objectives import (
    KeyframeObjective,
    TextEncoding,
    _normal,
    _timesteps,
    _uniform,
    keyframe_options,
)
from fusionframes.training.stages import KeyframeStage, Stage


def video_decoder_config(movq: MoVQ):
    """The temporal decoder's config for an image MoVQ: same sizes, temporal layers on."""
    return dataclasses.replace(movq.config, temporal=True, temporal_attention_block=True)


def grow_video_decoder(components: ModelComponents) -> ModelComponents:
    """Give ``components`` a temporal decoder copied from its image MoVQ (temporal parts at zero)."""
    if components.video_movq is not None:
        return components
    config = video_decoder_config(components.movq)
    video = MoVQ(config)
    result = video.load_state_dict(components.movq.state_dict(), strict=False)
    if result.unexpected_keys or not all("temporal" in key for key in result.missing_keys):
        raise ValueError(f"video_decoder: the image MoVQ does not fit its temporal decoder ({result})")
    for name, module in video.decoder.named_modules():
        if name.endswith("temporal_attn_1") or ".temporal_attn." in f".{name}":
            nn.init.zeros_(module.proj_out.weight)  # attention output at zero: the image decoder's function
            nn.init.zeros_(module.proj_out.bias)
    components.video_movq = video
    components.config = dataclasses.replace(components.config, video_movq=config)
    return components


def conditioned_unet_config(unet: UNet3D):
    """The first-frame input layout of a keyframe U-Net: latent, condition latent and mask channels."""
    latent = unet.config.out_channels
    return dataclasses.replace(unet.config, num_channels=2 * latent + 1, noise_augmentation=True)


def grow_image_keyframe_unet(components: ModelComponents) -> ModelComponents:
    """Give ``components`` an image-to-video keyframe U-Net copied from the text-to-video one."""
    if components.image_keyframe_unet is not None:
        return components
    old = components.keyframe_unet
    config = conditioned_unet_config(old)
    unet = build_unet(config)  # the built-in text-aware frame embedding stays when the U-Net has it
    state = dict(old.state_dict())
    weight = state.pop("in_layer.weight")
    grown = torch.zeros_like(unet.in_layer.weight)
    grown[:, : weight.shape[1]] = weight  # the condition and mask channels start with zero weight
    state["in_layer.weight"] = grown
    result = unet.load_state_dict(state, strict=False)
    extra = "temporal_noise_aug_time_encoding."
    if result.unexpected_keys or not all(key.startswith(extra) for key in result.missing_keys):
        raise ValueError(f"first_frame_condition: keyframe weights do not fit ({result})")
    last = unet.temporal_noise_aug_time_encoding[-1]
    nn.init.zeros_(last.weight)  # the augmentation level's embedding starts at zero
    nn.init.zeros_(last.bias)
    components.image_keyframe_unet = unet
    components.config = dataclasses.replace(components.config, image_keyframe_unet=config)
    return components


def grow_for(cfg: TrainConfig, components: ModelComponents) -> ModelComponents:
    """The 1.1 parts a config trains, added when the starting model lacks them (a no-op on resume)."""
    if cfg.video_decoder:
        components = grow_video_decoder(components)
    if cfg.first_frame_condition:
        components = grow_image_keyframe_unet(components)
    return components


class VideoDecoderObjective(nn.Module):
    """Reconstruction (L1 + MSE) of clips: image-MoVQ latents decoded as one clip by the video decoder."""

    def __init__(self, movq: MoVQ, video_movq: MoVQ) -> None:
        super().__init__()
        self.video_movq = video_movq
        for name, param in video_movq.named_parameters():  # only the temporal parts learn (see module doc)
            param.requires_grad_(name.startswith("decoder.") and "temporal" in name)
        self.encoder = [movq]  # a list: the frozen image MoVQ is no submodule (not saved, not wrapped)

    def forward(self, clips: torch.Tensor, generator: torch.Generator, crop: int = 0) -> torch.Tensor:
        """``clips`` ``[B, T, 3, H, W]`` in [-1, 1]; ``crop`` > 0: decode a random ``crop`` x ``crop``
        latent window of each clip (the same window in every frame) against its pixels."""
        b, t = clips.shape[:2]
        with torch.no_grad():
            latents = self.encoder[0].encode(clips.flatten(0, 1).float())
        if crop:
            latents, clips = _crop(latents, clips, crop, self.encoder[0].config.scale_factor, generator)
        recon = torch.cat([self.video_movq.decode(piece) for piece in latents.split(t)]).float()
        target = clips.flatten(0, 1).float()
        return F.l1_loss(recon, target) + F.mse_loss(recon, target)


def _crop(
    latents: torch.Tensor, clips: torch.Tensor, crop: int, factor: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random latent window per clip (all its frames) and the pixels it decodes to."""
    b, t = clips.shape[:2]
    h, w = latents.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"video_crop: {crop} latent pixels is more than the latents ({h}x{w})")
    rows, pixels = [], []
    for i, clip in enumerate(latents.split(t)):
        y = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
        x = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        rows.append(clip[..., y : y + crop, x : x + crop])
        ys, xs = y * factor, x * factor
        pixels.append(clips[i, ..., ys : ys + crop * factor, xs : xs + crop * factor])
    return torch.cat(rows), torch.stack(pixels)


def video_clip_batch(
    clips: list, idx: list[int], frames: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``frames`` consecutive frames of each clip ``[B, T, 3, H, W]`` (random start)."""
    out = []
    for i in idx:
        video = clips[i]["video"]
        if video.shape[0] < frames:
            raise ValueError(f"video_clip_frames: {frames} is longer than a clip ({video.shape[0]} frames)")
        start = int(torch.randint(0, video.shape[0] - frames + 1, (1,), generator=gen))
        out.append(video[start : start + frames])
    return torch.stack(out).to(device, torch.float32)


@dataclass
class VideoDecoderStage(Stage):
    trained: ClassVar[tuple[str, ...]] = ("video_movq",)
    clips: list = field(default_factory=list)

    def batch(self, step: int, idx: list[int], gen: torch.Generator) -> tuple:
        return (video_clip_batch(self.clips, idx, self.cfg.video_clip_frames, gen, self.device),)

    def loss(self, model: nn.Module, batch: tuple, gen: torch.Generator) -> torch.Tensor:
        return model(batch[0], gen, self.cfg.video_crop)


class ImageKeyframeObjective(KeyframeObjective):
    """The keyframe objective with the first keyframe as condition: it is noised to a random
    augmentation level in ``[0, noise_augmentation_max]`` (told to the U-Net by its embedding) and
    dropped to zeros with probability ``image_dropout``."""

    def __init__(self, unet: UNet3D, text: TextEncoding, cfg: TrainConfig) -> None:
        super().__init__(unet, text, **keyframe_options(cfg))
        self.image_dropout = cfg.image_dropout
        self.augmentation_max = cfg.noise_augmentation_max
        text.null_embedding.requires_grad_(False)  # shared with the text-to-video U-Net: kept as shipped

    trains_text = False  # the text encoding is the text-to-video U-Net's, kept as shipped

    def denoising_loss(
        self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        b, f = latents.shape[:2]
        device = latents.device
        keep = _uniform(b, generator, device) >= self.image_dropout
        level = _timesteps(b, self.augmentation_max + 1, generator, device)
        first = self.schedule.add_noise(
            latents[:, 0], _normal(tuple(latents[:, 0].shape), generator, device), level
        )
        extra = first_frame_inputs(first, f, keep)
        t, noise, x_t = self.noised(latents, generator)
        out = self.unet(
            torch.cat([x_t, extra], dim=1).contiguous(),
            *self.unet_inputs(t, context, mask, f),
            num_frames=f,
            noise_aug_time=(level * self.schedule.time_scale).repeat_interleave(f),
        )
        return self.weighted_loss(out, noise, t, b)


@dataclass
class ImageKeyframeStage(KeyframeStage):
    trained: ClassVar[tuple[str, ...]] = ("image_keyframe_unet",)


def build_objective11(cfg: TrainConfig, components: ModelComponents, text: TextEncoding | None) -> nn.Module:
    """The objective of a 1.1 stage (``text``: the keyframe stage's frozen text encoding)."""
    if cfg.video_decoder:
        return VideoDecoderObjective(components.movq, components.video_movq)
    text.encoder.requires_grad_(False)
    return ImageKeyframeObjective(components.image_keyframe_unet, text, cfg)


def stage_class11(cfg: TrainConfig) -> type[Stage] | None:
    """The stage class of a 1.1 stage, None for the others."""
    if cfg.video_decoder:
        return VideoDecoderStage
    if cfg.first_frame_condition:
        return ImageKeyframeStage
    return None


def add_parts(
    model: str | Path,
    out: str | Path,
    video_movq: str | Path | None = None,
    image_keyframes: str | Path | None = None,
    decoder: str | None = None,
    weights_dtype: torch.dtype = torch.float32,
    image_decoder: str | Path | None = None,
) -> Path:
    """Write ``model`` with the temporal decoder of the ``video_movq`` run's model folder and/or the
    image-to-video U-Net of the ``image_keyframes`` one (each must have been made from ``model``: the
    same image MoVQ, and for the U-Net the same keyframe U-Net and text encoder); ``decoder`` sets the
    default decoder (``sampling.decoder``). ``image_decoder``: take the image MoVQ of this model folder
    instead, a decoder fine-tuned from ``model``'s with ``freeze_encoder`` (its encoder must be
    ``model``'s, so every latent the networks were trained on stays valid)."""
    from fusionframes.io.checkpoints import (
        load_model_folder,
        read_manifest,
        text_encoder_source,
        write_model_folder,
    )

    base = load_model_folder(model)
    for source, name in ((video_movq, "video_movq"), (image_keyframes, "image_keyframe_unet")):
        if source is None:
            continue
        run = load_model_folder(source)
        if getattr(run, name) is None:
            raise ValueError(f"{name}: {source} has none; give the model folder of that stage's run")
        for shared in ("movq", "keyframe_unet", "projection"):
            same = all(
                torch.equal(a, b)
                for a, b in zip(
                    getattr(base, shared).state_dict().values(),
                    getattr(run, shared).state_dict().values(),
                    strict=True,
                )
            )
            if not same:
                raise ValueError(f"{name}: {source} was not trained from {model} (its {shared} differs)")
        setattr(base, name, getattr(run, name))
        base.config = dataclasses.replace(base.config, **{name: getattr(run.config, name)})
    if image_decoder is not None:
        from fusionframes.training.assemble import _same_weights

        tuned = load_model_folder(image_decoder).movq
        if not _same_weights(base.movq, tuned, ("encoder.", "quant_conv.")):
            raise ValueError(
                f"image_decoder: the MoVQ encoder of {image_decoder} differs from {model}'s; fine-tune "
                "the decoder only (freeze_encoder: true)"
            )
        base.movq = tuned
    if decoder is not None:
        from fusionframes.pipelines.builtin11 import check_decoder

        sampling = dataclasses.replace(base.config.sampling, decoder=decoder)
        base.config = dataclasses.replace(base.config, sampling=sampling)
        check_decoder(base.config, decoder)
    manifest = read_manifest(Path(model))
    text_dir = Path(str(text_encoder_source(model, manifest)))
    extra = {k: v for k, v in manifest.items() if k not in ("components", "format", "format_version", "name")}
    extra.pop("text_encoder", None)
    extra.pop("vocabulary", None)
    extra["parameters"] = int(manifest.get("parameters", 0)) + sum(
        p.numel()
        for m in (base.video_movq, base.image_keyframe_unet)
        if m is not None
        for p in m.parameters()
    )
    return write_model_folder(
        base,
        out,
        text_encoder_dir=text_dir if text_dir.is_dir() else None,
        metadata=extra,
        weights_dtype=weights_dtype,
    )
