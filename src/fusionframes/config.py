"""Dataclass configs for every component, and the named presets.

Field names of :class:`UNetConfig` and :class:`MoVQConfig` follow the constructor arguments of the
official Kandinsky Video 1.0 code, so its configs (``official_unet_kwargs``, ``generator_params``)
load without translation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from fusionframes.layout_prior.config import LayoutPriorConfig

T = TypeVar("T")


# Settings that were removed because no shipped model used them (docs/training.md, "Removed
# experiments"), with the one value they had in every model folder written before: a folder that
# states that value still loads, any other value fails by name instead of sampling differently.
RETIRED_FIELDS: dict[str, dict[str, Any]] = {
    "UNetConfig": {"position_embed": False},
    "SamplingDefaults": {"keyframe_prediction": "epsilon", "layout_prior_blur": 0.0},
}


def _drop_retired(data: dict[str, Any], what: str) -> dict[str, Any]:
    retired = RETIRED_FIELDS.get(what, {})
    for key in retired.keys() & data.keys():
        if data[key] != retired[key]:
            raise ValueError(
                f"{what}.{key}: removed (no shipped model used it); only {retired[key]!r} loads, "
                f"got {data[key]!r}"
            )
    return {k: v for k, v in data.items() if k not in retired}


def _from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build a dataclass from a dict, rejecting unknown keys by name (typos fail loudly)."""
    data = _drop_retired(data, what)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


PREDICTIONS = ("epsilon", "v", "sample")


@dataclass(frozen=True)
class TrainedWith:
    """How one network was trained, so that sampling must match it (not a user setting).

    Stored per network in its U-Net folder's ``config.json`` (``trained_with``) and read from there.
    The release defaults: a keyframe U-Net predicts epsilon, an interpolation U-Net v, both with the
    official dynamic thresholding; the other fields are the built-in model's training choices.
    """

    # What the network outputs: "epsilon", "v" or "sample" (x0 itself).
    prediction: str = "epsilon"
    # x0 thresholding. Below 1: the official dynamic thresholding (the 0.98 quantile of |x0|, at least
    # 1, then rescaled to [-1, 1]); 1 or more: a static clamp to +-value, for models whose latents are
    # not bounded by 1 (the built-in model); None: off.
    thresholding: float | None = 0.98
    # The sampler tells the network the training step of each step's actual noise level; the official
    # sampler tells it one sampling interval less noise (kept for parity).
    matched_timesteps: bool = False
    # Keyframe sampling starts one step below pure noise, where an epsilon model's x0 estimate is
    # still usable (the released model relies on dynamic thresholding instead).
    skip_terminal_step: bool = False
    # Share of each keyframe's noise variance common to all keyframes of a video (training and sampling).
    frame_noise_sharing: float = 0.0
    # The interpolation U-Net denoises the in-between latents' difference from the linear blend of
    # their neighbours rather than the latents themselves.
    interpolation_residual: bool = False

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"TrainedWith.prediction: unknown {self.prediction!r}; allowed: {', '.join(PREDICTIONS)}"
            )
        if self.thresholding is not None:
            _finite_real(self.thresholding, "TrainedWith.thresholding")
        if not 0.0 <= self.frame_noise_sharing < 1.0:
            raise ValueError(f"frame_noise_sharing: must be in [0, 1), got {self.frame_noise_sharing}")

    @classmethod
    def release(cls, interpolation: bool) -> TrainedWith:
        """The released Kandinsky Video 1.0 networks: epsilon keyframes, v interpolation."""
        return cls(prediction="v" if interpolation else "epsilon")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainedWith:
        return _from_dict(cls, data, "TrainedWith")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields that model folders written before TrainedWith kept in the root config's ``sampling`` block:
# (the old name, the networks it applied to, the TrainedWith field it is now).
LEGACY_SAMPLING_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("thresholding", ("keyframe_unet", "interpolation_unet"), "thresholding"),
    ("matched_timesteps", ("keyframe_unet", "interpolation_unet"), "matched_timesteps"),
    ("frame_noise_sharing", ("keyframe_unet",), "frame_noise_sharing"),
    ("skip_terminal_step", ("keyframe_unet",), "skip_terminal_step"),
    ("interpolation_prediction", ("interpolation_unet",), "prediction"),
    ("interpolation_residual", ("interpolation_unet",), "interpolation_residual"),
)


def move_legacy_sampling(data: dict[str, Any]) -> dict[str, Any]:
    """A model config dict whose ``sampling`` block still holds how the networks were trained (folders
    written before :class:`TrainedWith`): those fields moved into each U-Net's ``trained_with``, so the
    model loads and samples as it did. A U-Net that also states its own ``trained_with`` must agree."""
    sampling = data.get("sampling")
    if not isinstance(sampling, dict) or not any(old in sampling for old, _, _ in LEGACY_SAMPLING_FIELDS):
        return data
    data, sampling = dict(data), dict(sampling)
    moved: dict[str, dict[str, Any]] = {}
    for old, networks, new in LEGACY_SAMPLING_FIELDS:
        if old in sampling:
            value = sampling.pop(old)
            for network in networks:
                moved.setdefault(network, {})[new] = value
    for network, values in moved.items():
        unet = dict(data.get(network, {}))
        default = TrainedWith.release(bool(unet.get("interpolation", network == "interpolation_unet")))
        if "trained_with" in unet:
            own = TrainedWith.from_dict(unet["trained_with"]).to_dict()
            for key, value in values.items():
                if own[key] != value:
                    raise ValueError(
                        f"{network}: trained_with.{key} is {own[key]!r} but the root sampling block says "
                        f"{value!r}; keep it in {network}/config.json only"
                    )
        else:
            unet["trained_with"] = {**default.to_dict(), **values}
        data[network] = unet
    data["sampling"] = sampling
    return data


@dataclass(frozen=True)
class UNetConfig:
    """The U-Net3D used for keyframes (``num_frames`` set) or interpolation (``interpolation=True``)."""

    model_channels: int = 384
    init_channels: int | None = 192
    num_channels: int = 4
    out_channels: int = 4
    time_embed_dim: int = 1536
    context_dim: int | None = 4096
    groups: int = 32
    head_dim: int = 64
    expansion_ratio: int = 4
    compression_ratio: int = 2
    dim_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_blocks: tuple[int, ...] = (3, 3, 3, 3)
    add_cross_attention: tuple[bool, ...] = (False, True, True, True)
    add_self_attention: tuple[bool, ...] = (False, True, True, True)
    num_frames: int | None = None
    interpolation: bool = False
    # Extension, not in the release (False keeps its layout): a frame-position embedding that also
    # depends on the pooled text, added to every norm's embedding of a keyframe U-Net. See UNet3D.
    text_frame_embed: bool = False
    # Kandinsky Video 1.1 (``temporal_layers="1.1"``): every temporal norm of a keyframe U-Net sees the
    # time + frame embedding, and the interpolation U-Net's temporal convolutions and attention are
    # masked per row (``temporal_mask``) and see a perturbation time. The flags below are the 1.1
    # constructor's own switches (same names); see fusionframes.models.unet.
    temporal_layers: str = "1.0"
    image_in_layer: bool = False  # keyframe 1.1: a second input conv for batches of <= 2 rows (images)
    noise_augmentation: bool = False  # keyframe 1.1: embedding of the first frame's noise level
    motion_score: bool = False  # keyframe 1.1: embedding of the motion score
    add_temporal_attention: bool = True  # interpolation 1.1: attention across groups per level
    add_new_temporal_params: bool = False  # interpolation 1.1: temporal convs around resampling
    merge_perturbation_time_with_context: bool = False  # interpolation 1.1: perturbation time in text
    # How this network was trained, so that sampling matches it (None: the release's, see TrainedWith).
    trained_with: TrainedWith | None = None

    def __post_init__(self) -> None:
        if self.trained_with is None:
            object.__setattr__(self, "trained_with", TrainedWith.release(self.interpolation))
        elif not isinstance(self.trained_with, TrainedWith):
            raise ValueError(f"UNetConfig.trained_with: must be a TrainedWith, got {self.trained_with!r}")
        if not self.interpolation and self.trained_with.prediction != "epsilon":
            got = self.trained_with.prediction
            raise ValueError(f"TrainedWith.prediction: a keyframe U-Net predicts 'epsilon', got {got!r}")
        if self.trained_with.interpolation_residual and not self.interpolation:
            raise ValueError("TrainedWith.interpolation_residual: only for an interpolation U-Net")
        keyframe_only = {"skip_terminal_step": False, "frame_noise_sharing": 0.0}
        for name, off in keyframe_only.items():
            if self.interpolation and getattr(self.trained_with, name) != off:
                raise ValueError(f"TrainedWith.{name}: only for a keyframe U-Net")
        levels = len(self.dim_mult)
        for name in ("num_blocks", "add_cross_attention", "add_self_attention"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"UNetConfig.{name}: needs {levels} entries (one per dim_mult level)")
        if min(self.num_blocks) < 1:
            # The official constructor builds one group for any count below 2; 0 would only mean 1.
            raise ValueError(f"UNetConfig.num_blocks: every level needs >= 1 block, got {self.num_blocks}")
        if self.interpolation and self.num_frames is not None:
            # The official constructor drops num_frames for interpolation models; mirror it.
            object.__setattr__(self, "num_frames", None)
        if self.text_frame_embed and (self.num_frames is None or self.context_dim is None):
            raise ValueError(
                "UNetConfig.text_frame_embed: only for a text-conditioned keyframe U-Net "
                "(num_frames and context_dim set, interpolation False)"
            )
        self._check_release_flags()

    def _check_release_flags(self) -> None:
        if self.temporal_layers not in ("1.0", "1.1"):
            raise ValueError(
                f"UNetConfig.temporal_layers: unknown {self.temporal_layers!r}; allowed: '1.0', '1.1'"
            )
        keyframe_11 = self.temporal_layers == "1.1" and self.num_frames is not None
        interpolation_11 = self.temporal_layers == "1.1" and self.interpolation
        # A 1.0 keyframe U-Net with the first-frame input layout (condition channels and mask: more
        # input than output channels) may embed the augmentation level and motion score too (the
        # built-in model's image-to-video U-Net); a plain 1.0 one has nothing they could describe.
        conditioned = self.num_frames is not None and self.num_channels > self.out_channels
        for name in ("image_in_layer", "noise_augmentation", "motion_score"):
            allowed = keyframe_11 or (conditioned and name != "image_in_layer")
            if getattr(self, name) and not allowed:
                raise ValueError(
                    f"UNetConfig.{name}: only for a 1.1 keyframe U-Net "
                    "(temporal_layers '1.1', num_frames set) or a first-frame-conditioned one"
                )
        for name in ("add_new_temporal_params", "merge_perturbation_time_with_context"):
            if getattr(self, name) and not interpolation_11:
                raise ValueError(
                    f"UNetConfig.{name}: only for a 1.1 interpolation U-Net (temporal_layers '1.1', "
                    "interpolation True)"
                )
        if self.temporal_layers == "1.1" and self.context_dim is None:
            raise ValueError("UNetConfig.context_dim: a 1.1 U-Net is text-conditioned; set context_dim")

    @property
    def downsampling_factor(self) -> int:
        """Spatial reduction of the latent inside the U-Net (2 per level but the last)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def training(self) -> TrainedWith:
        """:attr:`trained_with`, never None after construction."""
        assert self.trained_with is not None
        return self.trained_with

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        if isinstance(data.get("trained_with"), dict):
            data = {**data, "trained_with": TrainedWith.from_dict(data["trained_with"])}
        return _from_dict(cls, data, "UNetConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MoVQConfig:
    """MoVQ autoencoder (encoder + spatially conditioned decoder); names follow ``generator_params``."""

    ch: int = 256
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    z_channels: int = 4
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 256
    dropout: float = 0.0
    double_z: bool = False
    norm_groups: int = 32
    # Kandinsky Video 1.1's temporal decoder (names as its constructor): ``temporal`` blends a 3-D
    # convolution into both convolutions of every decoder ResNet block (``temporal_mid_blocks``: the
    # middle ones too), ``temporal_attention_block`` adds attention across frames beside each spatial
    # attention. The whole decoded batch is then one clip.
    temporal: bool = False
    temporal_attention_block: bool = False
    temporal_kernel_size: tuple[int, ...] = (3, 3, 3)
    temporal_conv_padding: tuple[int, ...] = (1, 1, 1)
    temporal_mid_blocks: bool = True
    # The 1.1 decoder's spatial attention normalises every row with the first row's latent (its norm is
    # called with the whole batch's latent inside a per-row loop); True reproduces that, as 1.1 does.
    first_row_attention_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("temporal_kernel_size", "temporal_conv_padding"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 3 or not all(isinstance(v, int) for v in value):
                raise ValueError(
                    f"MoVQConfig.{name}: must be three integers (time, height, width), got {value!r}"
                )

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def clip_decoder(self) -> bool:
        """Whether decoding mixes rows: the decoded batch is one clip (the 1.1 video decoder)."""
        return self.temporal or self.temporal_attention_block

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoVQConfig:
        return _from_dict(cls, data, "MoVQConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TextConfig:
    """Text conditioning: T5 tokenizer/encoder plus the Linear+LayerNorm projection."""

    encoder_dim: int = 4096
    context_dim: int = 4096
    max_length: int = 128
    # 1.1 files carry a second projection, ``projection_interpolation`` (the reference pipeline keeps
    # using ``projection_base`` for interpolation too); True builds and keeps it.
    interpolation_projection: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextConfig:
        return _from_dict(cls, data, "TextConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _finite_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def check_layout_prior_strength(value: Any, name: str = "layout_prior_strength") -> float:
    """The share of keyframe steps run from the layout prior's output: (0, 1], 1 from pure noise."""
    value = _finite_real(value, name)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: must be in (0, 1] (1 starts from pure noise), got {value:g}")
    return value


@dataclass(frozen=True)
class SamplingDefaults:
    """Defaults a model folder suggests to the pipeline (users can override each per call); how each
    network was trained is its own :class:`TrainedWith`, not here."""

    num_inference_steps: int = 50
    interpolation_steps: int | None = None
    guidance_scale: float = 5.0
    interpolation_guidance_scale: float = 0.25
    width: int = 512
    height: int = 512
    fps: str = "low"
    scheduler: str = "ddpm"
    base_fps: float = 2.0
    # layout_prior_strength: for a model with a layout prior, keyframe sampling starts from the prior's
    # layout noised like an image-to-image redraw at this strength (1: from pure noise, the prior unused).
    layout_prior_strength: float = 1.0

    # decoder: the default decoder of a model with a temporal MoVQ (``video_movq``): "image" (the image
    # MoVQ, frame by frame) or "video" (the temporal one); the pipeline takes either per call.
    decoder: str = "image"

    def __post_init__(self) -> None:
        check_layout_prior_strength(self.layout_prior_strength)
        if self.decoder not in ("image", "video"):
            raise ValueError(f"SamplingDefaults.decoder: unknown {self.decoder!r}; allowed: image, video")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingDefaults:
        return _from_dict(cls, data, "SamplingDefaults")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A whole text-to-video model: the four components and their sampling defaults."""

    keyframe_unet: UNetConfig = field(default_factory=lambda: UNetConfig(num_frames=15))
    interpolation_unet: UNetConfig = field(
        default_factory=lambda: UNetConfig(num_channels=20, out_channels=12, interpolation=True)
    )
    movq: MoVQConfig = field(default_factory=MoVQConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    layout_prior: LayoutPriorConfig | None = None  # none in the released model
    video_movq: MoVQConfig | None = None  # 1.1: the temporal decoder (``movq`` is then the image one)
    # The built-in model's image-to-video keyframe U-Net (the first-frame input layout on 1.0 temporal
    # layers); ``keyframe_unet`` stays the text-to-video one. See fusionframes.training.stages11.
    image_keyframe_unet: UNetConfig | None = None

    @property
    def pixel_multiple(self) -> int:
        """Width/height must be multiples of this so every U-Net level divides evenly."""
        return self.movq.scale_factor * max(
            self.keyframe_unet.downsampling_factor, self.interpolation_unet.downsampling_factor
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyframe_unet": self.keyframe_unet.to_dict(),
            "interpolation_unet": self.interpolation_unet.to_dict(),
            "movq": self.movq.to_dict(),
            "text": self.text.to_dict(),
            "sampling": self.sampling.to_dict(),
            **({"layout_prior": self.layout_prior.to_dict()} if self.layout_prior is not None else {}),
            **({"video_movq": self.video_movq.to_dict()} if self.video_movq is not None else {}),
            **(
                {"image_keyframe_unet": self.image_keyframe_unet.to_dict()}
                if self.image_keyframe_unet is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        parts = {
            "keyframe_unet": UNetConfig,
            "interpolation_unet": UNetConfig,
            "movq": MoVQConfig,
            "text": TextConfig,
            "sampling": SamplingDefaults,
            "layout_prior": LayoutPriorConfig,
            "video_movq": MoVQConfig,
            "image_keyframe_unet": UNetConfig,
        }
        unknown = sorted(set(data) - set(parts))
        if unknown:
            raise ValueError(f"ModelConfig: unknown key(s) {unknown}; allowed: {sorted(parts)}")
        data = move_legacy_sampling(data)
        return cls(**{k: (parts[k].from_dict(v) if v is not None else None) for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def kandinsky_video_1_0() -> ModelConfig:
    """The released Kandinsky Video 1.0 sizes (keyframe U-Net ~4B parameters, Flan-UL2 text).

    15 keyframes at 1.875 fps span 8 s; fps "high" gives 16N-15 = 225 frames at 30 fps.
    """
    return ModelConfig(
        sampling=SamplingDefaults(width=640, height=384, fps="medium", base_fps=1.875),
    )


def kandinsky_video_1_1() -> ModelConfig:
    """The released Kandinsky Video 1.1 sizes (what its hub ``configs.json`` is known to hold).

    Keyframe U-Net3D 4.15B (the 1.0 sizes, 9 input channels: latent, first-frame condition and mask),
    interpolation U-Net 4.0B, image MoVQ (the 1.0 one) and a temporal MoVQ decoder of 556M; Flan-UL2
    text with two projections. 12 keyframes, first frame sampled by the keyframe U-Net's image mode.
    """
    unet = UNetConfig()
    return ModelConfig(
        keyframe_unet=dataclasses.replace(
            unet,
            num_channels=9,
            out_channels=4,
            num_frames=12,
            temporal_layers="1.1",
            image_in_layer=True,
            noise_augmentation=True,
            motion_score=True,
        ),
        interpolation_unet=dataclasses.replace(
            unet, num_channels=20, out_channels=12, interpolation=True, temporal_layers="1.1"
        ),
        movq=MoVQConfig(first_row_attention_norm=True),
        video_movq=MoVQConfig(first_row_attention_norm=True, temporal=True, temporal_attention_block=True),
        text=TextConfig(interpolation_projection=True),
        sampling=SamplingDefaults(
            width=512, height=512, fps="low", guidance_scale=5.0, interpolation_guidance_scale=0.5
        ),
    )


def small_config(
    channels: int = 32,
    context_dim: int = 64,
    num_frames: int = 8,
    levels: int = 3,
    blocks: int = 2,
    groups: int = 8,
    head_dim: int = 32,
    movq_channels: int = 32,
    movq_levels: int = 4,
    size: int = 128,
) -> ModelConfig:
    """A scaled-down FusionFrames model (same architecture, fewer channels) for CPUs and tests."""

    def unet(**extra: Any) -> UNetConfig:
        return UNetConfig(
            model_channels=channels,
            init_channels=channels,
            time_embed_dim=channels * 4,
            context_dim=context_dim,
            groups=groups,
            head_dim=head_dim,
            expansion_ratio=2,
            compression_ratio=2,
            dim_mult=tuple(2**i for i in range(levels)),
            num_blocks=(blocks,) * levels,
            add_cross_attention=(False,) + (True,) * (levels - 1),
            add_self_attention=(False,) + (True,) * (levels - 1),
            **extra,
        )

    return ModelConfig(
        keyframe_unet=unet(num_frames=num_frames),
        interpolation_unet=unet(num_channels=20, out_channels=12, interpolation=True),
        movq=MoVQConfig(
            ch=movq_channels,
            ch_mult=(1, 2, 2, 4)[:movq_levels],
            num_res_blocks=1,
            attn_resolutions=(),
            resolution=size,
            norm_groups=groups,
        ),
        text=TextConfig(encoder_dim=context_dim, context_dim=context_dim),
        sampling=SamplingDefaults(
            num_inference_steps=20, width=size, height=size, fps="medium", base_fps=1.0
        ),
    )


def with_kv11_architecture(config: ModelConfig, movq_attention: tuple[int, ...] | None = None) -> ModelConfig:
    """``config``'s sizes with the Kandinsky Video 1.1 architecture, for small random 1.1 models.

    The keyframe U-Net gains the first-frame condition and mask channels (2C + 1 in, C out), its image
    mode, the noise-augmentation and motion-score embeddings and 12 keyframes; both U-Nets the 1.1
    temporal layers; the MoVQ the first-row attention norm and a temporal twin (the video decoder); the
    text a second projection. ``movq_attention``: attention resolutions of both MoVQs (the temporal
    attention sits beside each spatial one, so a MoVQ without any has none; None keeps the config's).
    """
    latent = config.keyframe_unet.out_channels
    attention = config.movq.attn_resolutions if movq_attention is None else movq_attention
    movq = dataclasses.replace(config.movq, first_row_attention_norm=True, attn_resolutions=attention)
    return dataclasses.replace(
        config,
        keyframe_unet=dataclasses.replace(
            config.keyframe_unet,
            num_channels=2 * latent + 1,
            num_frames=12,
            temporal_layers="1.1",
            image_in_layer=True,
            noise_augmentation=True,
            motion_score=True,
        ),
        interpolation_unet=dataclasses.replace(config.interpolation_unet, temporal_layers="1.1"),
        movq=movq,
        video_movq=dataclasses.replace(movq, temporal=True, temporal_attention_block=True),
        text=dataclasses.replace(config.text, interpolation_projection=True),
    )


PRESETS = {
    "kandinsky-video-1.0": kandinsky_video_1_0,
    "kandinsky-video-1.1": kandinsky_video_1_1,
    "small": small_config,
}


def preset(name: str) -> ModelConfig:
    """Look a named architecture up, with a message listing the known names."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown name {name!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[name]()
