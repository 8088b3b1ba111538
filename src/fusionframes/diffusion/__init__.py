"""Noise schedule, samplers and classifier-free guidance. Knows nothing about U-Nets."""

from fusionframes.diffusion.schedule import DiffusionSchedule, cosine_betas

__all__ = ["DiffusionSchedule", "cosine_betas"]
