"""Camera motion for animation mode: schedules, warps, presets, colour coherence, cadence, measurement.

Each animation frame is the previous frame moved by the camera (:func:`warp`), optionally
colour-matched to the first frame (:func:`match_colours`) and noised (:func:`add_noise`), then
partially redrawn by the diffusion model. See ``docs/animation.md``.
"""

from fusionframes.camera.cadence import blend_cadence, chain_source_coords, chain_target_coords
from fusionframes.camera.colour import (
    COLOUR_MODES,
    add_noise,
    hsv_to_rgb,
    lab_to_rgb,
    match_colours,
    match_histogram,
    rgb_to_hsv,
    rgb_to_lab,
)
from fusionframes.camera.measure import (
    estimate_motions,
    estimate_similarity,
    estimate_translation,
    fit_similarity,
    phase_correlation,
)
from fusionframes.camera.presets import PRESET_NAMES, custom_motion, describe_presets, get_preset
from fusionframes.camera.schedule import (
    INTERPOLATIONS,
    Keyframe,
    evaluate_expression,
    parse_keyframes,
    parse_schedule,
    schedule_values,
)
from fusionframes.camera.warp import (
    BORDER_MODES,
    DEFAULT_FOV_DEG,
    REFERENCE_DEPTH,
    CameraMotion,
    depth_from_image,
    flat_depth,
    focal_length,
    motion_schedule,
    sample,
    source_coords,
    target_coords,
    warp,
    warp_2d,
    warp_3d,
)

__all__ = [
    "BORDER_MODES",
    "COLOUR_MODES",
    "DEFAULT_FOV_DEG",
    "INTERPOLATIONS",
    "PRESET_NAMES",
    "REFERENCE_DEPTH",
    "CameraMotion",
    "Keyframe",
    "add_noise",
    "blend_cadence",
    "chain_source_coords",
    "chain_target_coords",
    "custom_motion",
    "depth_from_image",
    "describe_presets",
    "estimate_motions",
    "estimate_similarity",
    "estimate_translation",
    "evaluate_expression",
    "fit_similarity",
    "flat_depth",
    "focal_length",
    "get_preset",
    "hsv_to_rgb",
    "lab_to_rgb",
    "match_colours",
    "match_histogram",
    "motion_schedule",
    "parse_keyframes",
    "parse_schedule",
    "phase_correlation",
    "rgb_to_hsv",
    "rgb_to_lab",
    "sample",
    "schedule_values",
    "source_coords",
    "target_coords",
    "warp",
    "warp_2d",
    "warp_3d",
]
