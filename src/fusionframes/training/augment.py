"""Time-reversal augmentation: a clip played backwards is a new training clip once its words say so.

In the synthetic world every motion reversed is another motion of the grammar (right <-> left, rising
<-> falling, growing <-> shrinking, the camera's pan), and the motions without a direction (bouncing,
rotating, still) read the same both ways. Reversed clips double the examples of every direction and
pair each clip with its mirror in time, which is the contrast the keyframe model must learn from the
words. Real footage is not time-symmetric (people do not walk backwards), so this is opt-in. The captions'
words are reversed by :func:`fusionframes.synthetic.reverse_caption`.
"""

from __future__ import annotations

import torch


def reverse_some(
    latents: torch.Tensor,
    text: tuple[torch.Tensor, ...],
    reversed_text: tuple[torch.Tensor, ...],
    flip: torch.Tensor,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Play the videos flagged in ``flip`` backwards (``latents`` ``[B, F, ...]``) and give them their
    reversed captions' token tensors (``text``: ids, mask, ... each ``[B, L]``)."""
    latents = torch.where(flip.view(-1, *[1] * (latents.dim() - 1)), latents.flip(1), latents)
    chosen = tuple(torch.where(flip[:, None], rev, fwd) for fwd, rev in zip(text, reversed_text, strict=True))
    return latents, chosen
