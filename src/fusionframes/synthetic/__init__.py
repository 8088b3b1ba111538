"""The synthetic captioned-video world: coloured shapes moving on plain or gradient backgrounds.

Training data (``fusionframes data synth``) and evaluation (``fusionframes eval synthetic``) both come from
here. Every clip is drawn from a seed (numpy Generator, no global state), so shards are reproducible.
A documented list of held-out (colour, shape, motion) combinations never appears in training shards; the
evaluator uses them to measure compositional generalisation, and it parses prompts with
:func:`parse_prompt`, the inverse of :func:`caption`. See ``docs/synthetic_world.md`` for the grammar,
palettes and measured ground-truth figures.

Modules: :mod:`.world` (vocabulary, scene types, contrast rule), :mod:`.motion` (movement over normalised
time, placement), :mod:`.scenes` (drawing scenes), :mod:`.render` (frames, ground truth),
:mod:`.captions`, :mod:`.prompts` (parsing), :mod:`.mp4` (encoding), :mod:`.shards` (WebDataset files).
"""

from fusionframes.synthetic.captions import caption, holdout_prompts, reverse_caption, scene_spec
from fusionframes.synthetic.mp4 import decode_mp4, encode_mp4
from fusionframes.synthetic.prompts import parse_prompt
from fusionframes.synthetic.render import ground_truth, render_clip, render_frame, shape_outline
from fusionframes.synthetic.scenes import sample_scene, scene_from_spec
from fusionframes.synthetic.shards import clip_rng, make_sample, write_shards
from fusionframes.synthetic.world import (
    ALL_SHAPES,
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    HELD_OUT,
    MIN_CONTRAST,
    MOTIONS,
    NEW_COLOURS,
    NEW_SHAPES,
    PALETTE,
    PAN_SHIFT,
    PANS,
    ROTATION_DEG,
    SHAPES,
    SPEEDS,
    TRAVEL,
    ObjectSpec,
    Scene,
    allowed_background,
    background_profile,
    contrast,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "HELD_OUT",
    "MIN_CONTRAST",
    "MOTIONS",
    "NEW_COLOURS",
    "NEW_SHAPES",
    "PALETTE",
    "PANS",
    "PAN_SHIFT",
    "ROTATION_DEG",
    "SHAPES",
    "ALL_SHAPES",
    "SPEEDS",
    "TRAVEL",
    "ObjectSpec",
    "Scene",
    "allowed_background",
    "background_profile",
    "caption",
    "clip_rng",
    "contrast",
    "decode_mp4",
    "encode_mp4",
    "ground_truth",
    "holdout_prompts",
    "make_sample",
    "parse_prompt",
    "render_clip",
    "reverse_caption",
    "render_frame",
    "sample_scene",
    "scene_from_spec",
    "scene_spec",
    "shape_outline",
    "write_shards",
]
