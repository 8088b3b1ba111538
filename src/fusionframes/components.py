"""The parts of one text-to-video model, held together so loaders, pipelines and training share them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from fusionframes.config import ModelConfig
from fusionframes.layout_prior.model import LayoutPrior
from fusionframes.models import MoVQ, UNet3D, build_unet
from fusionframes.text.conditioning import TextProjection


@dataclass
class ModelComponents:
    """Networks and learned embeddings of a model; the text encoder is referenced, loaded on demand.

    ``text_encoder`` is a folder or Hub id of a T5-family checkpoint (tokenizer + ``T5EncoderModel``).
    ``vocabulary`` is the set of words the model saw in training (empty when unknown).
    """

    config: ModelConfig
    keyframe_unet: UNet3D
    keyframe_null: torch.Tensor
    interpolation_unet: UNet3D
    interpolation_null: torch.Tensor
    movq: MoVQ
    projection: TextProjection
    text_encoder: str | Path
    name: str = "unnamed"
    vocabulary: frozenset[str] = field(default_factory=frozenset)
    layout_prior: LayoutPrior | None = None  # optional; see fusionframes.layout_prior
    video_movq: MoVQ | None = None  # 1.1: the temporal decoder (``movq`` is its image MoVQ)
    interpolation_projection: TextProjection | None = None  # 1.1: ``projection_interpolation``
    image_keyframe_unet: UNet3D | None = None  # built-in image-to-video keyframes (first-frame layout)

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {
            "keyframe_unet": self.keyframe_unet,
            "interpolation_unet": self.interpolation_unet,
            "movq": self.movq,
            "text_projection": self.projection,
        }
        if self.layout_prior is not None:
            nets["layout_prior"] = self.layout_prior
        if self.video_movq is not None:
            nets["video_movq"] = self.video_movq
        if self.interpolation_projection is not None:
            nets["interpolation_text_projection"] = self.interpolation_projection
        if self.image_keyframe_unet is not None:
            nets["image_keyframe_unet"] = self.image_keyframe_unet
        return nets

    def to(
        self,
        device: torch.device | str,
        dtype: torch.dtype | None = None,
        decoder_dtype: torch.dtype | None = None,
    ) -> ModelComponents:
        """Move networks in place; the projection, layout prior and null embeddings stay float32 (tiny,
        sensitive); the MoVQs take ``decoder_dtype`` when given (see
        :func:`fusionframes.runtime.resolve_decoder_dtype`), else ``dtype``."""
        for key, module in self.networks().items():
            keep_fp32 = key in ("text_projection", "interpolation_text_projection", "layout_prior")
            target = decoder_dtype if key in ("movq", "video_movq") and decoder_dtype else dtype
            module.to(device=device, dtype=None if keep_fp32 else target)
        self.keyframe_null = self.keyframe_null.to(device=device, dtype=torch.float32)
        self.interpolation_null = self.interpolation_null.to(device=device, dtype=torch.float32)
        return self

    def eval(self) -> ModelComponents:
        for module in self.networks().values():
            module.eval().requires_grad_(False)
        return self


# torch.nn.init's in-place initialisers: every layer's constructor calls some of them.
INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@contextmanager
def initialisers_skipped() -> Iterator[None]:
    """Layers built inside keep their parameters as allocated, uninitialised.

    For networks whose every weight a checkpoint then replaces. On the meta device the initialisers
    compute nothing, yet torch runs them through Python decompositions, and the first of those imports
    torch's compiler stack: about a second of a small model's start-up spent on numbers no one keeps.
    """
    saved = {name: getattr(nn.init, name) for name in INITIALISERS}
    for name in INITIALISERS:
        setattr(nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


def random_null(dim: int) -> torch.Tensor:
    """A fresh null (unconditional) text embedding; on the meta device, only its shape."""
    if torch.get_default_device().type == "meta":
        return torch.empty(dim)
    return torch.randn(dim) * 0.02


def build_components(
    config: ModelConfig, text_encoder: str | Path, name: str = "unnamed", device: str | torch.device = "cpu"
) -> ModelComponents:
    """Fresh (randomly initialised) networks for ``config``; ``device='meta'`` allocates nothing and
    initialises nothing (for loaders, which fill every weight)."""
    with (
        torch.device(device),
        initialisers_skipped() if torch.device(device).type == "meta" else nullcontext(),
    ):
        return ModelComponents(
            config=config,
            keyframe_unet=build_unet(config.keyframe_unet),
            keyframe_null=random_null(config.keyframe_unet.context_dim or config.text.context_dim),
            interpolation_unet=build_unet(config.interpolation_unet),
            interpolation_null=random_null(config.interpolation_unet.context_dim or config.text.context_dim),
            movq=MoVQ(config.movq),
            projection=TextProjection(config.text.encoder_dim, config.text.context_dim),
            text_encoder=text_encoder,
            name=name,
            layout_prior=LayoutPrior(config.layout_prior) if config.layout_prior is not None else None,
            video_movq=MoVQ(config.video_movq) if config.video_movq is not None else None,
            interpolation_projection=(
                TextProjection(config.text.encoder_dim, config.text.context_dim)
                if config.text.interpolation_projection
                else None
            ),
            image_keyframe_unet=(
                build_unet(config.image_keyframe_unet) if config.image_keyframe_unet is not None else None
            ),
        )


# Layers a keyframe U-Net may gain after training began (UNetConfig flags named as their modules):
# all zero-initialised, so a grown model computes what it did before.
KEYFRAME_EXTENSIONS = ("text_frame_embed",)


def with_keyframe_extensions(components: ModelComponents, *names: str) -> ModelComponents:
    """Give the keyframe U-Net the named extension layers it lacks, keeping its weights.

    A no-op when it already has them all. The output is unchanged until training moves the new layers.
    """
    unknown = [n for n in names if n not in KEYFRAME_EXTENSIONS]
    if unknown:
        raise ValueError(f"names: {unknown} are not keyframe extensions; allowed: {KEYFRAME_EXTENSIONS}")
    old = components.keyframe_unet
    missing = [n for n in names if not getattr(old.config, n)]
    if not missing:
        return components
    unet_config = replace(old.config, **dict.fromkeys(missing, True))
    unet = build_unet(unet_config).to(next(old.parameters()).device)
    load_allowing_extensions(unet, old.state_dict(), "with_keyframe_extensions: keyframe weights")
    components.keyframe_unet = unet
    components.config = replace(components.config, keyframe_unet=unet_config)
    return components


def load_allowing_extensions(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``, where only extension layers may be missing (``module`` has them
    and ``state`` predates them); anything else that differs is an error."""
    result = module.load_state_dict(state, strict=False)
    grown = tuple(f"{name}." for name in KEYFRAME_EXTENSIONS)
    if result.unexpected_keys or not all(any(g in k for g in grown) for k in result.missing_keys):
        raise ValueError(f"{what}: checkpoint does not match the model ({result})")
