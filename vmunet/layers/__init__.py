"""Building blocks of VM-UNet: the 2D selective-scan mixer (SS2D), the VSS block and patch ops.

All blocks work on channels-last feature maps (B, H, W, C), as in VMamba, so that the many
per-pixel linear layers and LayerNorms need no transposes between blocks.
"""

from vmunet.layers.init import init_he_conv, init_vmunet_weights
from vmunet.layers.patch import FinalPatchExpand, PatchEmbed, PatchExpand, PatchMerging
from vmunet.layers.ss2d import SS2D
from vmunet.layers.stage import VSSStage, VSSStageUp, drop_path_rates, vmamba_encoder_stages
from vmunet.layers.vss import VSSBlock

__all__ = [
    "SS2D",
    "FinalPatchExpand",
    "PatchEmbed",
    "PatchExpand",
    "PatchMerging",
    "VSSBlock",
    "VSSStage",
    "VSSStageUp",
    "drop_path_rates",
    "init_he_conv",
    "init_vmunet_weights",
    "vmamba_encoder_stages",
]
