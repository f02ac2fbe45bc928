"""Inference on whole scans: read with geometry, predict slice by slice, write label maps back.

``Predictor`` (``predictor.py``) is the Python API, ``io.py`` reads and writes scans, and
``commands.py`` adds the ``vmunet predict`` subcommand.
"""

from vmunet.inference.predictor import CheckpointError, Prediction, Predictor

__all__ = ["Predictor", "Prediction", "CheckpointError"]
