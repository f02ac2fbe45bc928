"""Training and evaluation: LightningModule, losses, metrics, callbacks and the LightningCLI entry.

Submodules import Lightning/MONAI themselves; ``vmunet.training.metrics`` needs neither Lightning
nor a GPU so inference can reuse it.
"""
