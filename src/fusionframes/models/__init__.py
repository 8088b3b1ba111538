"""The released networks: the U-Net3D (keyframes and interpolation) and the MoVQ autoencoder. The
optional text-to-layout prior, not in the release, is :mod:`fusionframes.layout_prior`."""

from fusionframes.models.movq import MoVQ
from fusionframes.models.unet import UNet3D

__all__ = ["MoVQ", "UNet3D"]
