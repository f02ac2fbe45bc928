"""Building blocks of VM-UNet: the 2D selective-scan mixer (SS2D), the VSS block and patch ops;
the 1D Mamba block and UltraLight VM-UNet's PVM layer and attention bridge.

The VMamba blocks work on channels-last feature maps (B, H, W, C), as in VMamba, so that the many
per-pixel linear layers and LayerNorms need no transposes between blocks; UltraLight VM-UNet's
(``pvm``) on channels-first maps, as its convolutional network around them.
"""

from vmunet.layers.init import init_he_conv, init_ultralight_weights, init_vmunet_weights
from vmunet.layers.mamba import Mamba
from vmunet.layers.patch import FinalPatchExpand, PatchEmbed, PatchExpand, PatchMerging
from vmunet.layers.pvm import PVMLayer, SCAttBridge
from vmunet.layers.ss2d import SS2D
from vmunet.layers.stage import VSSStage, VSSStageUp, drop_path_rates, vmamba_encoder_stages
from vmunet.layers.vss import VSSBlock

#: modules holding a selective-scan call (a ``scan_backend`` attribute and a ``selective_scan``
#: method): what switching the backend and counting the scan's MACs look for
SCAN_MODULES = (SS2D, Mamba)

__all__ = [
    "SS2D",
    "SCAN_MODULES",
    "FinalPatchExpand",
    "Mamba",
    "PatchEmbed",
    "PatchExpand",
    "PVMLayer",
    "PatchMerging",
    "SCAttBridge",
    "VSSBlock",
    "VSSStage",
    "VSSStageUp",
    "drop_path_rates",
    "init_he_conv",
    "init_ultralight_weights",
    "init_vmunet_weights",
    "vmamba_encoder_stages",
]
