"""Text-to-layout prior: the mean keyframe latents a caption implies, to start keyframe sampling from.

Near pure noise a keyframe U-Net must decide the layout of the whole video (where the objects are in
each keyframe) from the words alone, and a small model trained on little data learns the words that
decide it (which way things move) far more slowly than the ones that colour it. This network learns
that part directly, by regression from the caption to the keyframe latents (a text-conditioned prior
mean, as in Grad-TTS); sampling then starts from its output noised like an image-to-image redraw, so
the U-Net refines a layout instead of inventing one.

Given object tracks to learn from (the synthetic world's ground truth), the prior also predicts where
each object is in each keyframe (centre, radius, angle) and draws every object in its own object-centred
coordinates, as layout-guided video models plan boxes before pixels (LVD, Lian et al. 2023): reading a
direction word into a position is then a small regression of its own, and the decoder learns one
outline per shape instead of one per place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.layout_prior.config import LayoutPriorConfig


def pooled_text(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the projected text tokens ``[B, L, D]`` over the valid ones (``mask`` ``[B, L]``)."""
    weights = mask.to(context.dtype).unsqueeze(-1)
    return (context * weights).sum(1) / weights.sum(1).clamp(min=1.0)


TRACK_FIELDS = 5  # per object and keyframe: present (0/1), centre x, centre y, log radius, angle (radians)
SLOT_CODE_DIM = 8  # per object slot: what the text says that object looks like, painted at its place
OBJECT_MAP_CHANNELS = 4 + SLOT_CODE_DIM  # per object slot, see object_maps


def object_frames(tracks: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Per slot ``(present, u, v)``, each ``[B * F, S, height, width]``: the grid's position in each
    object's own frame (shifted to its centre, rotated by its angle, in radii, clipped to +-4) for tracks
    ``[B, F, S, 5]`` with centres in [-1, 1] image coordinates and radii as fractions of half the image."""
    batch, frames, slots, fields = tracks.shape
    if fields != TRACK_FIELDS:
        raise ValueError(f"tracks: last dimension must be {TRACK_FIELDS}, got {fields}")
    t = tracks.reshape(batch * frames, slots, fields)
    ys = ((torch.arange(height, dtype=t.dtype, device=t.device) + 0.5) / height * 2 - 1).view(1, 1, -1, 1)
    xs = ((torch.arange(width, dtype=t.dtype, device=t.device) + 0.5) / width * 2 - 1).view(1, 1, 1, -1)
    present, cx, cy, log_radius, angle = (t[..., i, None, None] for i in range(TRACK_FIELDS))
    radius = log_radius.exp()
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (cos * dx + sin * dy).clamp(-4, 4)
    v = (cos * dy - sin * dx).clamp(-4, 4)
    return present.expand_as(u), present * u, present * v


def object_maps(tracks: torch.Tensor, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-slot object-centred maps ``[B * F, (4 + K) * S, height, width]`` of tracks ``[B, F, S, 5]``
    and slot codes ``[B, S, K]``: u and v (:func:`object_frames`), a Gaussian bump at the object, its
    presence, and its code times the bump, so a convolution knows which object (which colour and shape)
    is where; an absent slot is all zeros."""
    batch, frames, slots = tracks.shape[:3]
    present, u, v = object_frames(tracks, height, width)
    bump = present * torch.exp(-(u**2 + v**2))
    maps = torch.stack([u, v, bump, present], 2)  # [B*F, S, 4, h, w]
    if codes.shape != (batch, slots, codes.shape[-1]):
        raise ValueError(f"codes: must be [{batch}, {slots}, K], got {tuple(codes.shape)}")
    painted = codes.repeat_interleave(frames, 0)[..., None, None] * bump[:, :, None]  # [B*F, S, K, h, w]
    return torch.cat([maps, painted.to(maps.dtype)], 2).flatten(1, 2)


SPRITE_CHANNELS = 16  # features of every labelled object, drawn in its own frame (ObjectSprites)
ANGLE_HARMONICS = 6  # cos and sin of k times the polar angle in the object's frame, k = 1..6


def label_groups(labels: tuple[str, ...]) -> list[slice]:
    """The runs of ``labels`` ("key:value") that share a key: one softmax (one choice) per run."""
    groups: list[slice] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i].split(":", 1)[0] != labels[start].split(":", 1)[0]:
            groups.append(slice(start, i))
            start = i
    return groups


def one_hot_labels(logits: torch.Tensor, labels: tuple[str, ...]) -> torch.Tensor:
    """The most likely value of each label group, one-hot ``[..., L]``, from label logits ``[..., L]``."""
    out = torch.zeros_like(logits)
    for group in label_groups(labels):
        best = logits[..., group].argmax(-1, keepdim=True)
        out[..., group] = out[..., group].scatter(-1, best, 1.0)
    return out


class ObjectSprites(nn.Module):
    """Features ``[B * F, SPRITE_CHANNELS, h, w]`` of every object, each drawn by one per-pixel MLP from
    the pixel's place in the object's own frame (u, v, distance and harmonics of the polar angle), the
    object's size and angle and its labels (which colour, which shape), summed over the slots. The
    harmonics (Fourier features, as in NeRF) make an outline with corners or points, whose radius swings
    with the angle, a smooth function of the inputs.

    A latent pixel's value is a function of the image patch around it, and for a drawn object that patch
    is fixed by exactly these inputs, so the MLP can learn each shape's outline once, at every place,
    size and turn; a stack of convolutions given only the coordinates drew stars and circles as blobs.
    The window keeps them whole within a radius and a half (a star reaches 1.3) and fades them to 4% at
    four radii, where u and v are clipped."""

    def __init__(self, labels: int, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(  # per pixel, on channels-last rows: far faster on a CPU than 1x1 convs
            nn.Linear(6 + 2 * ANGLE_HARMONICS + labels, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, SPRITE_CHANNELS),
        )

    def forward(self, tracks: torch.Tensor, labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, frames, slots = tracks.shape[:3]
        present, u, v = object_frames(tracks, height, width)  # [B*F, S, h, w]
        t = tracks.reshape(batch * frames, slots, TRACK_FIELDS)[..., None, None]
        size = present * t[:, :, 3]
        cos, sin = present * torch.cos(t[:, :, 4]), present * torch.sin(t[:, :, 4])
        theta = torch.atan2(v, u)
        harmonics = [f(k * theta) for k in range(1, ANGLE_HARMONICS + 1) for f in (torch.cos, torch.sin)]
        per_pixel = [u, v, (u**2 + v**2).sqrt(), size, cos, sin, *(present * h for h in harmonics)]
        geometry = torch.stack([g.expand_as(u) for g in per_pixel], -1)  # [B*F, S, h, w, 6 + 2 * harmonics]
        painted = labels.repeat_interleave(frames, 0)[:, :, None, None].expand(-1, -1, height, width, -1)
        drawn = self.mlp(torch.cat([geometry, painted.to(geometry.dtype)], -1))  # [B*F, S, h, w, SPRITE]
        window = present * torch.exp(-(((u**2 + v**2) / 9) ** 2))
        return (drawn * window[..., None]).sum(1).permute(0, 3, 1, 2)


class _ConditionedBlock(nn.Module):
    """Residual block of two 3x3 convs over a feature map with its (x, y) coordinates (and any object
    maps) appended, scaled and shifted by the caption-and-frame vector (FiLM). The coordinates let a
    convolution place and outline an object where the caption's vector says, which a
    translation-invariant conv cannot."""

    def __init__(self, channels: int, cond_dim: int, extra: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2 + extra, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, channels)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, objects: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, _, height, width = x.shape
        ys = torch.linspace(-1, 1, height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
        xs = torch.linspace(-1, 1, width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
        inputs = [x, xs.expand(n, 1, height, width), ys.expand(n, 1, height, width)]
        if objects is not None:
            inputs.append(objects.to(x.dtype))
        y = self.norm1(self.conv1(torch.cat(inputs, 1)))
        scale, shift = self.film(cond).chunk(2, dim=-1)
        y = F.silu(y * (1 + scale[..., None, None]) + shift[..., None, None])
        return F.silu(x + self.norm2(self.conv2(y)))


def read_tokens(
    tokens: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Learned queries ``[Q, D]`` attending over tokens ``[B, L, D]`` (``keys`` their projections, ``mask``
    ``[B, L]``): ``[B, Q * D]``. Each query also has a slope ``order`` ``[Q]`` on where a token stands
    among the caption's valid ones (0 first, 8 last), so it can pick the first colour word from the second:
    which object a word belongs to is a matter of word order, and the tokens' content alone barely says it.
    """
    valid = mask.bool()
    place = valid.cumsum(-1).to(tokens.dtype) - 1
    place = 8.0 * place / (valid.sum(-1, keepdim=True).to(tokens.dtype) - 1).clamp(min=1.0)
    scores = torch.einsum("qd,bld->bql", queries, keys) / tokens.shape[-1] ** 0.5
    scores = scores + order.view(1, -1, 1) * place[:, None]
    scores = scores.masked_fill(~valid[:, None], float("-inf")).softmax(-1)
    return torch.einsum("bql,bld->bqd", scores, tokens).flatten(1)


class _TokenReader(nn.Module):
    """A few learned queries attending over the LayerNorm'd caption tokens (:func:`read_tokens`)."""

    def __init__(self, context_dim: int, queries: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(context_dim)
        self.queries = nn.Parameter(nn.init.normal_(torch.empty(queries, context_dim), std=0.1))
        self.keys = nn.Linear(context_dim, context_dim)
        self.order = nn.Parameter(torch.zeros(queries))  # zeros: no pull to either end

    def read(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, queries * D]`` for the projected text ``[B, L, D]`` and its mask ``[B, L]``."""
        tokens = self.norm(context.to(self.queries.dtype))
        return read_tokens(tokens, mask, self.queries, self.keys(tokens), self.order)

    forward = read


class TrackPredictor(_TokenReader):
    """Caption -> raw object tracks ``[B, F, S, 5]`` (presence logit, centre x, y, log radius, angle)
    and, given labels, each slot's label logits ``[B, S, labels]``.

    The words that say where an object goes are two or three tokens of a long caption, and the mean over
    the tokens blurs them, so a few learned queries attend over the tokens beside the pooled caption
    (docs/training.md, "Tracked layout prior", has the measurements). The labels have their own
    queries: which colour belongs to the first object and which to the second is a question of word
    order the pooled caption cannot answer."""

    def __init__(
        self,
        context_dim: int,
        hidden: int,
        frames: int,
        slots: int,
        queries: int = 4,
        dropout: float = 0.1,
        labels: int = 0,
    ) -> None:
        super().__init__(context_dim, queries)  # its own queries read where each object goes
        self.frames, self.slots, self.labels = frames, slots, labels
        self.mlp = nn.Sequential(
            nn.Linear(context_dim * (queries + 1), hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, frames * slots * TRACK_FIELDS),
        )
        if labels:
            label_queries = 2 * slots * 2
            self.label_reader = _TokenReader(context_dim, label_queries)
            self.label_mlp = nn.Sequential(
                nn.Linear(context_dim * (label_queries + 1), hidden),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, slots * labels),
            )

    def forward(  # type: ignore[override]
        self, features: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        found = self.read(context, mask)
        raw = self.mlp(torch.cat([features, found], 1)).view(-1, self.frames, self.slots, TRACK_FIELDS)
        if not self.labels:
            return raw, None
        read = self.label_reader(context, mask)
        labels = self.label_mlp(torch.cat([features, read], 1)).view(-1, self.slots, self.labels)
        return raw, labels


def tracks_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Tracks ``[B, F, S, 5]`` to draw from raw predictions: a slot is present where its logit is > 0."""
    return torch.cat([(logits[..., :1] > 0).to(logits.dtype), logits[..., 1:]], -1)


class LayoutPrior(nn.Module):
    """Caption -> keyframe latents ``[B, F, C, h, w]``: a text MLP, a small conv decoder and, with object
    slots, a track predictor whose tracks the decoder draws the objects along.

    The pooled features are standardised with the training captions' statistics (buffers ``in_mean``,
    ``in_std``): the words that place objects move the pooled vector far less than the colour and
    background words, and unscaled they are hard for the regression to pick out. The decoder starts from
    a coarse per-frame map made from the text and refines it level by level, each block conditioned on
    the text and a learned frame embedding: a plain MLP to every latent memorised the training captions
    and drew smeared, blotchy objects, where the decoder draws one outline at one place per frame.
    """

    def __init__(self, config: LayoutPriorConfig) -> None:
        super().__init__()
        self.config = config
        hidden, channels, slots = config.hidden_dim, config.channels, config.object_slots
        self.seed_height = config.latent_height // 2 ** (len(channels) - 1)
        self.seed_width = config.latent_width // 2 ** (len(channels) - 1)
        self.register_buffer("in_mean", torch.zeros(config.context_dim))
        self.register_buffer("in_std", torch.ones(config.context_dim))
        self.text = nn.Sequential(
            nn.Linear(config.context_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        labels = len(config.object_labels)
        frames = config.num_frames
        self.tracker = (
            TrackPredictor(config.context_dim, hidden, frames, slots, labels=labels) if slots else None
        )
        # Labels, when the data has them, say what each slot looks like; otherwise a code from the caption.
        self.slot_codes = nn.Linear(hidden, slots * SLOT_CODE_DIM) if slots and not labels else None
        self.sprites = ObjectSprites(labels) if labels else None
        self.frame_embed = nn.Parameter(nn.init.normal_(torch.empty(config.num_frames, hidden), std=0.02))
        self.seed = nn.Linear(hidden, config.num_frames * channels[0] * self.seed_height * self.seed_width)
        extra = [slots * (4 + (labels or SLOT_CODE_DIM))] * len(channels)
        if labels:  # the sprites only on the latent grid, where the outlines are drawn
            extra[-1] += SPRITE_CHANNELS
        self.blocks = nn.ModuleList(
            _ConditionedBlock(c, hidden, e) for c, e in zip(channels, extra, strict=True)
        )
        self.upsample = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels[:-1], channels[1:], strict=True)
        )
        self.out = nn.Conv2d(channels[-1], config.latent_channels, 3, padding=1)

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled captions ``[B, context_dim]`` scaled by the training captions' statistics."""
        return (pooled - self.in_mean) / self.in_std

    def features(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised pooled caption ``[B, context_dim]`` of the projected text ``[B, L, D]``."""
        return self.standardise(pooled_text(context.float(), mask).to(self.in_mean.dtype))

    def track_logits(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Raw track predictions ``[B, F, S, 5]`` for the projected text ``[B, L, D]``."""
        return self.object_logits(context, mask)[0]

    def object_logits(
        self, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw track predictions ``[B, F, S, 5]`` and label logits ``[B, S, L]`` (None without labels)."""
        if self.tracker is None:
            raise ValueError("this layout prior tracks no objects (LayoutPriorConfig.object_slots is 0)")
        return self.tracker(self.features(context, mask), context, mask)

    def draw(
        self,
        context: torch.Tensor,
        mask: torch.Tensor,
        tracks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Keyframe latents ``[B, F, C, h, w]`` for the projected text and, for a prior with object slots,
        the tracks ``[B, F, S, 5]`` to draw the objects along and, with object labels, each slot's labels
        ``[B, S, L]`` (one-hot per label group; in training, the true ones)."""
        c = self.config
        if (tracks is None) != (c.object_slots == 0):
            raise ValueError(f"tracks: needed exactly when the prior has object slots ({c.object_slots})")
        if (labels is None) != (not c.object_labels):
            raise ValueError(
                f"labels: needed exactly when the prior labels its objects ({len(c.object_labels)})"
            )
        text = self.text(self.features(context, mask))
        batch = text.shape[0]
        x = self.seed(text).view(batch * c.num_frames, c.channels[0], self.seed_height, self.seed_width)
        cond = (text[:, None] + self.frame_embed[None]).reshape(batch * c.num_frames, -1)
        codes = labels
        if self.slot_codes is not None:
            codes = self.slot_codes(text).view(batch, c.object_slots, -1)
        for level, block in enumerate(self.blocks):
            objects = None
            if tracks is not None:
                objects = object_maps(tracks, codes, x.shape[-2], x.shape[-1])
            if self.sprites is not None and level == len(self.blocks) - 1:
                objects = torch.cat([objects, self.sprites(tracks, labels, x.shape[-2], x.shape[-1])], 1)
            x = block(x, cond, objects)
            if level < len(self.upsample):
                x = self.upsample[level](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x).view(batch, c.num_frames, c.latent_channels, c.latent_height, c.latent_width)

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Keyframe latents for the projected text, the objects drawn along the predicted tracks with the
        predicted labels."""
        if self.tracker is None:
            return self.draw(context, mask)
        raw, label_logits = self.object_logits(context, mask)
        labels = one_hot_labels(label_logits, self.config.object_labels) if label_logits is not None else None
        return self.draw(context, mask, tracks_from_logits(raw), labels)
