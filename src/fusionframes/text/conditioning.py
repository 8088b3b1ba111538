"""Prompt -> (context, context_mask) for the U-Nets.

The encoder is any T5-family ``T5EncoderModel`` (Flan-UL2 for the released model, a small one
trained with the built-in model); its hidden states go through a Linear + LayerNorm projection.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


class TextProjection(nn.Module):
    """Linear (no bias) + LayerNorm; keys ``t5.0.weight``, ``t5.1.*`` as in the released files."""

    def __init__(self, encoder_dim: int, context_dim: int) -> None:
        super().__init__()
        self.t5 = nn.Sequential(nn.Linear(encoder_dim, context_dim, bias=False), nn.LayerNorm(context_dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.t5(hidden_states)


def project_text(
    projection: TextProjection, hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project encoder states and trim the batch to its longest prompt plus one padding slot.

    Rows whose states are all zero (an encoder overflow that was zeroed) lose their mask, padded
    positions are zeroed after the projection, and the extra padded slot is kept: the U-Net's
    attention pooling averages over every position, so the trimmed length is part of the maths.
    """
    mask = attention_mask.clone()
    dead = (hidden_states == 0).all(-1).all(-1)
    mask[dead] = 0
    context = projection(hidden_states.float())
    context = context.masked_fill((mask == 0)[..., None], 0.0)
    keep = int(mask.sum(-1).max()) + 1
    return context[:, :keep], mask[:, :keep]


def null_context(
    null_embedding: torch.Tensor, batch: int, length: int, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional context: the learned null embedding in slot 0, zeros (masked) elsewhere."""
    dim = null_embedding.shape[-1]
    context = torch.zeros(
        batch, length, dim, dtype=dtype or null_embedding.dtype, device=null_embedding.device
    )
    context[:, 0] = null_embedding
    mask = torch.zeros(batch, length, dtype=torch.long, device=null_embedding.device)
    mask[:, 0] = 1
    return context, mask


# A local T5 folder needs its config, weights and tokenizer. Without tokenizer files transformers builds
# a tokenizer from tokenizer_config.json alone that maps every word to <unk>: a different video, silently.
T5_CONFIG_FILES = ("config.json",)
T5_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
T5_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def check_t5_folder(path: Path) -> Path:
    """Refuse a local text encoder folder that lacks a file it needs, naming the file."""
    for need, names in (
        ("config", T5_CONFIG_FILES),
        ("weights", T5_WEIGHT_FILES),
        ("tokenizer", T5_TOKENIZER_FILES),
    ):
        if not any((path / name).is_file() for name in names):
            raise FileNotFoundError(
                f"text_encoder: {path / names[0]} not found"
                + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else "")
                + f": the text encoder's {need} is missing"
                + ("; without it every word would be read as <unk>" if need == "tokenizer" else "")
            )
    return path


def check_encoder_fits(path: str | Path, projection: TextProjection) -> None:
    """The T5's width (``d_model``, read from its config before any weights) is what the projection takes.

    A model folder whose small T5 is narrower or wider than ``text.encoder_dim`` would otherwise fail at
    the first prompt with a bare matrix-shape error.
    """
    from transformers import AutoConfig

    width = getattr(AutoConfig.from_pretrained(str(path)), "d_model", None)
    expected = projection.t5[0].in_features
    if width is not None and width != expected:
        raise ValueError(
            f"text encoder: {path} outputs {width} features (d_model) but the text projection takes "
            f"{expected} (text.encoder_dim); the model folder's text encoder and projection do not fit"
        )


class TextConditioner(nn.Module):
    """Tokenizer + T5 encoder + projection; encodes prompts once, then can be released."""

    def __init__(
        self, tokenizer, encoder: nn.Module, projection: TextProjection, max_length: int = 128
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.projection = projection
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        projection: TextProjection,
        max_length: int = 128,
        dtype: torch.dtype = torch.float32,
    ) -> TextConditioner:
        """Load a T5 tokenizer and encoder from a folder or Hub id (e.g. ``google/flan-ul2``)."""
        from transformers import AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        if Path(path).is_dir():
            check_t5_folder(Path(path))
        quiet = hf_logging.is_progress_bar_enabled()
        if quiet:
            hf_logging.disable_progress_bar()  # a bar per tiny load is noise next to ours
        try:
            check_encoder_fits(path, projection)
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            encoder = T5EncoderModel.from_pretrained(str(path), dtype=dtype)
        except OSError as error:
            raise FileNotFoundError(
                f"text encoder: cannot load {path!s} ({str(error).splitlines()[0][:160]}); pass a local "
                "T5 folder (e.g. a downloaded google/flan-ul2) or connect to the Hugging Face Hub"
            ) from error
        finally:
            if quiet:
                hf_logging.enable_progress_bar()
        encoder.eval().requires_grad_(False)
        return cls(tokenizer, encoder, projection, max_length)

    def tokenize(self, prompts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Pad to ``max_length``; over-long prompts are truncated with a warning (never silently)."""
        for prompt in prompts:
            n = len(self.tokenizer(prompt)["input_ids"])
            if n > self.max_length:
                warnings.warn(
                    f"prompt: {n} tokens, truncated to {self.max_length}: {prompt[:60]!r}...",
                    stacklevel=3,
                )
        batch = self.tokenizer(
            prompts, max_length=self.max_length, truncation=True, padding="max_length", return_tensors="pt"
        )
        return {
            "input_ids": batch["input_ids"].to(device),
            "attention_mask": batch["attention_mask"].to(device),
        }

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(**tokens).last_hidden_state
        bad = ~torch.isfinite(hidden).all(-1).all(-1)  # fp16 T5 can overflow: zero such rows
        hidden = hidden.masked_fill(bad[:, None, None], 0.0).float()
        return project_text(self.projection, hidden, tokens["attention_mask"])

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> ``(context [B, L, D], mask [B, L])`` trimmed to the longest prompt + 1."""
        device = next(self.projection.parameters()).device
        return self.encode_tokens(self.tokenize(prompts, device))

    def token_counts(self, prompts: list[str]) -> list[int]:
        return [len(self.tokenizer(p)["input_ids"]) for p in prompts]
