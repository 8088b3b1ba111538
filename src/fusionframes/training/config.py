"""Training configuration: one dataclass per run, read from YAML or JSON with strict key checking."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

STAGES = ("movq", "keyframes", "interpolation")
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
PARALLEL = ("ddp", "fsdp")


@dataclass
class TextEncoderSpec:
    """A small T5 made from the training captions (built-in model) when no pretrained one is given."""

    vocab_size: int = 256
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff"):
            _Checker().positive(f"new_text_encoder.{name}", getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(
                f"new_text_encoder.d_model: {self.d_model} must be a multiple of num_heads={self.num_heads}"
            )


@dataclass
class TrainConfig:
    """Everything one training run needs; ``stage`` picks the network and objective."""

    stage: str = "keyframes"
    # model: a preset name ("small", "kandinsky-video-1.0"), a dict of ModelConfig, or taken from init_from
    model: str | dict | None = "small"
    model_overrides: dict = field(default_factory=dict)  # kwargs for the "small" preset
    init_from: str | None = None  # a model folder to start from (e.g. the previous stage's output)
    text_encoder: str | None = None  # pretrained T5 folder/Hub id; None -> train a small one (below)
    new_text_encoder: TextEncoderSpec = field(default_factory=TextEncoderSpec)
    train_text_encoder: bool = True  # only for a small T5; a pretrained T5 stays frozen

    # data
    size: int = 128
    clip_frames: int = 29  # frames read per clip
    num_keyframes: int = 8
    keyframe_stride: int = 4
    interpolation_strides: dict = field(default_factory=lambda: {"3": 1, "1": 1})  # skip code -> stride
    batch_size: int = 4
    num_workers: int = 1

    # optimisation
    max_steps: int = 1000
    stop_after: int | None = None  # end the run at this step; the LR schedule still spans max_steps
    learning_rate: float = 2e-4
    text_learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_accumulation: int = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "float32"
    gradient_checkpointing: bool = False
    freeze_spatial: bool = False  # keyframes: train temporal layers only (start from an image model)
    freeze_encoder: bool = False  # movq: train the decoder only; latents stay valid for the diffusion stages
    text_dropout: float = 0.1
    keyframe_dropout: float = 0.1  # interpolation: drop the neighbouring keyframes (for guidance)
    # keyframes: share of the noise variance common to a video's frames (0 = independent, as released)
    frame_noise_sharing: float = 0.0
    # keyframes: min-SNR-gamma loss weighting (e.g. 5.0) so the noisy timesteps train as much as the
    # clean ones; null = the plain mean squared error, as released
    snr_gamma: float | None = None
    # keyframes: raise the weight of noisy timesteps (SNR < 1), where nothing in the noisy input yet shows
    # which way things move, to clamp(1 / SNR, 1, this); null = off. See objectives.noisy_epsilon_weights
    noisy_weight_max: float | None = None
    # keyframes: the probability of training on a clip played backwards with its direction words swapped
    # ("left" <-> "right", "growing" <-> "shrinking", ...). Only for data whose motion is time-symmetric
    # apart from those words, such as the synthetic world; 0 = off
    time_reversal: float = 0.0
    # keyframes: give the keyframe U-Net the text-aware frame embedding (UNetConfig.text_frame_embed)
    # if it lacks it; zero-initialised, so a run from init_from continues from the same function
    text_frame_embed: bool = False
    # interpolation: learn the in-betweens' difference from the linear blend of their neighbours
    interpolation_residual: bool = False
    # interpolation: the network's output, "v" (as released) or "sample" (x0: a residual model then
    # starts near its answer, zero, instead of having to learn an exact copy of the noise)
    interpolation_prediction: str = "v"
    # movq: train a Kandinsky Video 1.1 temporal decoder (``video_movq``) made from the image MoVQ with
    # its temporal parts at zero, on clips of video_clip_frames frames (fusionframes.training.stages11)
    video_decoder: bool = False
    video_clip_frames: int = 8
    video_crop: int = 0  # movq video_decoder: decode random windows of this many latent pixels (0: whole)
    # keyframes: train an image-to-video keyframe U-Net (``image_keyframe_unet``, the first-frame input
    # layout) made from the keyframe U-Net with its new input weights at zero; the first keyframe is the
    # condition, noised to a random level in [0, noise_augmentation_max] and dropped with image_dropout
    first_frame_condition: bool = False
    noise_augmentation_max: int = 100
    image_dropout: float = 0.1
    diffusion_steps: int = 1000
    # LoRA (keyframes and interpolation, from init_from): peft low-rank adapters of this rank on the
    # ``lora_targets`` layers of the stage's U-Net; everything else, the text encoder included, stays
    # frozen and only the adapter is trained, checkpointed and exported (run_dir/adapter). null = full
    # training. lora_alpha scales the update by alpha / rank (null = rank, a scale of 1)
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: str = "attention"  # attention | attention+temporal | all-linear | a regular expression
    movq_latent_weight: float = 0.01  # keeps MoVQ latents near unit scale for the diffusion models
    # movq: extra weight of the pixels on and around objects (those off their row's median colour, grown
    # by two pixels) in the reconstruction loss; 0 = every pixel alike. Small objects' outlines are a few
    # pixels of a frame that is mostly background, so a plain mean barely sees a star's points
    movq_object_weight: float = 0.0

    # bookkeeping
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0 = no periodic sample videos
    sample_prompts: list = field(default_factory=lambda: ["a red circle moving right on a gray background"])
    parallel: str = "ddp"

    def __post_init__(self) -> None:
        check = _Checker()
        check.choice("stage", self.stage, STAGES)
        check.choice("precision", self.precision, PRECISIONS)
        check.choice("parallel", self.parallel, PARALLEL)
        for name in (
            "max_steps",
            "batch_size",
            "grad_accumulation",
            "log_every",
            "checkpoint_every",
            "num_keyframes",
            "keyframe_stride",
            "size",
            "clip_frames",
            "diffusion_steps",
        ):
            check.positive(name, getattr(self, name))
        if not (0.0 < self.learning_rate <= 1.0) or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate: must be in (0, 1], got {self.learning_rate}")
        if self.text_learning_rate is not None and not 0.0 < self.text_learning_rate <= 1.0:
            raise ValueError(f"text_learning_rate: must be in (0, 1], got {self.text_learning_rate}")
        for name in ("text_dropout", "keyframe_dropout", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        check.choice("interpolation_prediction", self.interpolation_prediction, ("v", "sample"))
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after: must be >= 1 or null, got {self.stop_after}")
        if not 0.0 <= self.frame_noise_sharing < 1.0:
            raise ValueError(f"frame_noise_sharing: must be in [0, 1), got {self.frame_noise_sharing}")
        if self.snr_gamma is not None:
            if not (isinstance(self.snr_gamma, (int, float)) and math.isfinite(self.snr_gamma)) or (
                self.snr_gamma <= 0
            ):
                raise ValueError(f"snr_gamma: must be a positive number or null, got {self.snr_gamma!r}")
            if self.stage != "keyframes":
                raise ValueError(f"snr_gamma: only the keyframes stage uses it, not {self.stage!r}")
        cap = self.noisy_weight_max
        if cap is not None:
            if not (isinstance(cap, (int, float)) and math.isfinite(cap)) or cap < 1:
                raise ValueError(
                    f"noisy_weight_max: must be a number >= 1 or null, got {self.noisy_weight_max!r}"
                )
            if self.stage != "keyframes":
                raise ValueError(f"noisy_weight_max: only the keyframes stage uses it, not {self.stage!r}")
        if not 0.0 <= self.time_reversal <= 1.0:
            raise ValueError(f"time_reversal: must be in [0, 1], got {self.time_reversal}")
        if self.time_reversal and self.stage != "keyframes":
            raise ValueError(f"time_reversal: only the keyframes stage uses it, not {self.stage!r}")
        check_model_overrides(self.model, self.model_overrides)
        self._check_11_keys()
        if self.text_frame_embed and self.stage != "keyframes":
            raise ValueError(f"text_frame_embed: only the keyframes stage uses it, not {self.stage!r}")
        self._check_lora()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps and grad_clip: must be >= 0")
        need = (self.num_keyframes - 1) * self.keyframe_stride + 1
        if self.stage == "keyframes" and need > self.clip_frames:
            raise ValueError(
                f"clip_frames: {self.clip_frames} frames cannot hold {self.num_keyframes} keyframes at "
                f"stride {self.keyframe_stride} (needs {need})"
            )
        for code, stride in self.interpolation_strides.items():
            if str(code) not in {str(i) for i in range(20)} or int(stride) < 1:
                raise ValueError(f"interpolation_strides: bad entry {code!r}: {stride!r}")

    def _check_lora(self) -> None:
        if self.lora_rank is None:
            if self.lora_alpha is not None:
                raise ValueError("lora_alpha: set only with lora_rank (a LoRA run)")
            return
        from fusionframes.lora.layers import LoraSpec

        LoraSpec(self.lora_rank, 1.0 if self.lora_alpha is None else self.lora_alpha, self.lora_targets)
        if self.stage == "movq":
            raise ValueError(
                "lora_rank: LoRA trains the keyframes or interpolation U-Net, not the movq stage"
            )
        if self.parallel == "fsdp":
            raise ValueError(
                "lora_rank: a LoRA run trains a few million weights; use parallel: ddp, not fsdp"
            )
        if self.init_from is None:
            raise ValueError("lora_rank: a LoRA run adapts an existing model; give init_from (or --init)")
        if self.freeze_spatial:
            raise ValueError(
                "freeze_spatial: a LoRA run already freezes the network; use lora_targets instead"
            )

    def _check_11_keys(self) -> None:
        """The 1.1 stage keys (video_decoder, first_frame_condition) and their settings."""
        check = _Checker()
        check.positive("video_clip_frames", self.video_clip_frames)
        if not (isinstance(self.movq_object_weight, (int, float)) and 0 <= self.movq_object_weight < 1e6):
            raise ValueError(f"movq_object_weight: must be a number >= 0, got {self.movq_object_weight!r}")
        if isinstance(self.video_crop, bool) or self.video_crop < 0:
            raise ValueError(f"video_crop: must be an integer >= 0, got {self.video_crop!r}")
        if self.video_decoder and self.stage != "movq":
            raise ValueError(f"video_decoder: only the movq stage uses it, not {self.stage!r}")
        if self.video_decoder and self.video_clip_frames > self.clip_frames:
            raise ValueError(
                f"video_clip_frames: {self.video_clip_frames} is more than clip_frames={self.clip_frames}"
            )
        if self.first_frame_condition and self.stage != "keyframes":
            raise ValueError(f"first_frame_condition: only the keyframes stage uses it, not {self.stage!r}")
        if self.first_frame_condition and self.train_text_encoder:
            raise ValueError(
                "train_text_encoder: must be false with first_frame_condition (the image-to-video U-Net "
                "shares the shipped text encoder with the text-to-video one)"
            )
        if isinstance(self.noise_augmentation_max, bool) or not 0 <= self.noise_augmentation_max < 1000:
            raise ValueError(
                f"noise_augmentation_max: must be in [0, 1000), got {self.noise_augmentation_max!r}"
            )
        if not 0.0 <= self.image_dropout <= 1.0:
            raise ValueError(f"image_dropout: must be in [0, 1], got {self.image_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_model_overrides(model: Any, overrides: dict) -> None:
    """``model_overrides`` are keyword arguments of the "small" preset: known names, positive integers."""
    if not overrides:
        return
    if model != "small":
        raise ValueError(f"model_overrides: only the 'small' preset takes overrides, not model {model!r}")
    import inspect

    from fusionframes.config import small_config

    allowed = sorted(inspect.signature(small_config).parameters)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"model_overrides: unknown key(s) {unknown}; allowed: {allowed}")
    for key, value in overrides.items():
        _Checker().positive(f"model_overrides.{key}", value)


class _Checker:
    def choice(self, name: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise ValueError(f"{name}: unknown {value!r}; allowed: {', '.join(allowed)}")

    def positive(self, name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Type-check one field (ints are accepted for floats; nested dataclasses from dicts)."""
    text = str(hint)
    if hint is TextEncoderSpec:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: must be a mapping, got {type(value).__name__}")
        return _build(TextEncoderSpec, value, prefix=f"{name}.")
    allowed: list[type] = []
    for token, kind in (
        ("int", int),
        ("float", float),
        ("str", str),
        ("bool", bool),
        ("dict", dict),
        ("list", list),
    ):
        if token in text:
            allowed.append(kind)
    if "None" in text and value is None:
        return None
    text = " or ".join(kind.__name__ for kind in allowed) + (" or null" if "None" in text else "")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in allowed else value
    if bool in allowed and isinstance(value, bool):
        return value
    if isinstance(value, bool) and bool not in allowed:
        raise ValueError(f"{name}: expected {text}, got a boolean {value!r}")
    if not any(isinstance(value, kind) for kind in allowed):
        raise ValueError(f"{name}: expected {text}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config: unknown key(s) {[prefix + k for k in unknown]}; allowed: {sorted(names)}")
    return cls(**{k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()})


def config_from_dict(data: dict) -> TrainConfig:
    return _build(TrainConfig, data)


def read_config_file(path: Path) -> Any:
    """The parsed YAML (safe loader: no Python tags) or JSON of ``path``; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"config: file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"config: {path} is not a text file (YAML or JSON expected)") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            if "python/" in str(problem):
                problem = f"Python object tags (!!python/...) are not allowed: {problem}"
            raise ValueError(
                f"config: {path} is not valid YAML{line}: {' '.join(str(problem).split())}"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"config: {path} is not valid JSON (line {error.lineno}): {error.msg}") from None


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML/JSON config; ``overrides`` (e.g. from the command line) win over the file, except that
    a ``stage`` the file names must be the stage the command trains."""
    path = Path(path)
    data = read_config_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping of keys to values")
    stage = overrides.get("stage")
    if stage is not None and "stage" in data and data["stage"] != stage:
        raise ValueError(
            f"stage: the config {path} is for stage {data['stage']!r}, but the command trains {stage!r}; "
            "use the matching config, or remove its stage key"
        )
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data)
