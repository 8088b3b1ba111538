"""Neural networks: the U-Net3D (keyframes and interpolation), the MoVQ autoencoder and the optional
text-to-layout prior."""

from fusionframes.models.layout_prior import LayoutPrior
from fusionframes.models.movq import MoVQ
from fusionframes.models.unet import UNet3D

__all__ = ["LayoutPrior", "MoVQ", "UNet3D"]
