"""The base class of the project's own errors.

Every error vmunet raises for bad input -- a data file or folder
(:class:`vmunet.data.errors.DataError` and its subclasses, among them ``LayoutError`` and
``vmunet.inference.io.ScanReadError``), a preprocessing record
(``vmunet.data.preprocessing.PreprocessingError``), a checkpoint or weights file
(``vmunet.models.safe_load.WeightsError``, ``vmunet.models.checkpoint.CheckpointError`` and its
subclass ``vmunet.training.checkpoints.TrainingCheckpointError``), a setting (:class:`ConfigError`),
a run folder another process is training in (``vmunet.training.runs.RunFolderBusyError``) --
derives from :class:`VmunetError`, so callers can catch them all at once (the ``vmunet`` command
does: one line, exit status 2, no traceback). The input errors also stay ``ValueError`` subclasses,
as before this base existed (a busy run folder is not a bad value: ``RunFolderBusyError`` is a
``RuntimeError``).
"""

from __future__ import annotations


class VmunetError(Exception):
    """A problem with the user's input that vmunet detected; the message names the file or field."""


class ConfigError(VmunetError, ValueError):
    """An invalid setting (a YAML key or command-line option)."""
