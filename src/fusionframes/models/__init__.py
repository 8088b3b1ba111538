"""Neural networks: the U-Net3D (keyframes and interpolation) and the MoVQ autoencoder."""

from fusionframes.models.movq import MoVQ
from fusionframes.models.unet import UNet3D

__all__ = ["MoVQ", "UNet3D"]
