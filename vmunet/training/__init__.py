"""Training and evaluation: LightningModule, losses, callbacks and the LightningCLI entry.

Submodules import Lightning/MONAI themselves. Metrics live below this package, in
``vmunet.evaluation``, so inference uses them without depending on training.
"""
