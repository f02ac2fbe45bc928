"""Data: Lightning data modules, MONAI transforms, preparation of raw downloads, synthetic data."""
