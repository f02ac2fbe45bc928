"""Data: Lightning data modules, MONAI transforms, preparation of raw downloads, synthetic data.

Modules (imported on demand; nothing heavy is imported here so ``import vmunet`` stays fast):

* ``synapse`` / ``isic`` / ``nifti`` - one ``LightningDataModule`` each.
* ``synapse_format`` / ``isic_format`` / ``nifti_format`` - on-disk layouts, pairing, checks.
* ``transforms`` - MONAI dictionary-transform compositions.
* ``prepare`` - raw downloads -> training layouts (``vmunet prepare``).
* ``synth`` - synthetic data sets in every layout (``vmunet synth``).
* ``preprocessing`` - the preprocessing record and the slicing convention.
* ``volumes`` / ``fileio`` / ``errors`` - reading scans with geometry, atomic writes, errors.

See docs/data.md.
"""
