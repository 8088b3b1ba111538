"""The layout prior's config (a part of :class:`fusionframes.config.ModelConfig`, stored in a model
folder's ``layout_prior/config.json``) and the checks of its fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


def check_layout_prior_channels(value: Any, name: str = "LayoutPriorConfig.channels") -> tuple[int, ...]:
    """The layout prior decoder's widths: a non-empty sequence of multiples of 8 (its group norms use 8
    groups); returned as a tuple."""
    if (
        not isinstance(value, tuple | list)
        or not value
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 8 or c % 8 for c in value)
    ):
        raise ValueError(f"{name}: must be a non-empty tuple of multiples of 8, got {value!r}")
    return tuple(value)


def check_object_labels(value: Any, name: str = "LayoutPriorConfig.object_labels") -> tuple[str, ...]:
    """Distinct "key:value" strings, the values of each key next to each other."""
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: must be a tuple of 'key:value' strings, got {value!r}")
    keys = []
    for label in value:
        key, sep, val = label.partition(":")
        if not sep or not key or not val:
            raise ValueError(f"{name}: each label must be 'key:value', got {label!r}")
        if keys and keys[-1] != key and key in keys:
            raise ValueError(f"{name}: the values of key {key!r} must be next to each other, got {value!r}")
        if not keys or keys[-1] != key:
            keys.append(key)
    if len(set(value)) != len(value):
        raise ValueError(f"{name}: labels must be distinct, got {value!r}")
    return value


@dataclass(frozen=True)
class LayoutPriorConfig:
    """The optional text-to-layout prior (:class:`fusionframes.layout_prior.model.LayoutPrior`).

    ``hidden_dim``: width of the text MLP; ``channels``: the decoder's widths from its coarsest grid (the
    latent size / 2 ** (len(channels) - 1)) to the latent grid, each a multiple of 8 (group norm).
    ``object_slots``: how many objects the prior tracks (a position, size and angle per keyframe, learned
    from data that carries object tracks); 0 draws the layout from the text alone. ``object_labels``:
    the values an object's labels take, as "key:value" with the values of one key together (for example
    "colour:red", ..., "shape:star"); the prior predicts one value per key for each slot and draws the
    object with it (needs object slots and data whose tracks carry those keys); empty: a code read from
    the pooled caption says what each slot looks like."""

    context_dim: int = 64
    hidden_dim: int = 256
    num_frames: int = 8
    latent_channels: int = 4
    latent_height: int = 16
    latent_width: int = 16
    channels: tuple[int, ...] = (96, 64, 32)
    object_slots: int = 0
    object_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.name not in ("channels", "object_labels")):
            value, least = getattr(self, name), 0 if name == "object_slots" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"LayoutPriorConfig.{name}: must be an integer >= {least}, got {value!r}")
        channels = self.channels
        if not isinstance(channels, tuple):
            raise ValueError(f"LayoutPriorConfig.channels: must be a tuple, got {channels!r}")
        check_layout_prior_channels(channels)
        check_object_labels(self.object_labels)
        if self.object_labels and not self.object_slots:
            raise ValueError("LayoutPriorConfig.object_labels: label objects only with object_slots >= 1")
        scale = 2 ** (len(channels) - 1)
        if self.latent_height % scale or self.latent_width % scale:
            raise ValueError(
                f"LayoutPriorConfig.channels: {len(channels)} levels need latent_height and latent_width "
                f"divisible by {scale}, got {self.latent_height}x{self.latent_width}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayoutPriorConfig:
        from fusionframes.config import _from_dict  # the one strict reader of every config dict

        return _from_dict(cls, data, "LayoutPriorConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
