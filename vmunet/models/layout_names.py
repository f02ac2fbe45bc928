"""The checkpoint layouts :mod:`vmunet.models.layouts` detects, with what each holds: the one list,
torch-free so that ``vmunet weights inspect --help`` names them all (its text is built from it)
without importing torch. What identifies each layout, the models it names and where its tensors give
the classes and channels are in :mod:`vmunet.models.layouts` (keyed by these names; a test checks
they agree)."""

from __future__ import annotations

#: layout name -> what its weights are, in the order ``vmunet weights inspect --help`` lists them
LAYOUTS: dict[str, str] = {
    "vmunet": "this project's VM-UNet",
    "vmunet_original": "the original VM-UNet code's VMUNet",
    "vmunet_v2": "this project's VM-UNet-V2",
    "vmunet_v2_original": "the original VM-UNet-V2 code's VMUNetV2",
    "mamba_unet_original": "the original Mamba-UNet code's MambaUnet",
    "mamba_unet": "this project's Mamba-UNet",
    "swin_umamba": "Swin-UMamba or Swin-UMamba† (this project's or the original's)",
    "ultralight_vmunet": "UltraLight VM-UNet (this project's or the original's)",
    "vmamba_v0": "VMamba v0 ImageNet classifier",
    "vmamba_v0_new_names": "VMamba v0 ImageNet classifier saved by later VMamba code",
    "vmamba_v2": "later VMamba (v2/v3) model",
    "unknown": "no known layout",
}
