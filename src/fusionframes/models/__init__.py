"""The released networks: the U-Net3D (keyframes and interpolation) and the MoVQ autoencoder, plus the
built-in model's text-aware frame embedding (:mod:`.builtin_extension`). The optional text-to-layout
prior, not in the release, is :mod:`fusionframes.layout_prior`."""

from fusionframes.models.builtin_extension import TextFrameUNet3D, build_unet
from fusionframes.models.movq import MoVQ
from fusionframes.models.unet import UNet3D

__all__ = ["MoVQ", "TextFrameUNet3D", "UNet3D", "build_unet"]
