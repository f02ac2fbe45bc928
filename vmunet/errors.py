"""The base class of the project's own errors, and :func:`first_line`: the one line of a library's
exception that our one-line messages quote.

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

import re


class VmunetError(Exception):
    """A problem with the user's input that vmunet detected; the message names the file or field."""


class ConfigError(VmunetError, ValueError):
    """An invalid setting (a YAML key or command-line option)."""


#: SimpleITK's first line: the wrapped call and the C++ source file and line that threw
_SITK_HEADER = re.compile(r"^Exception thrown in SimpleITK \w+: .*:\d+:$")
#: ITK's message prefix: ``ITK ERROR: <class>(<object address>): `` (the address changes every run)
_ITK_PREFIX = re.compile(r"^ITK ERROR: (\w+)(\(0x[0-9a-fA-F]+\))?: ")


def first_line(err: BaseException) -> str:
    """The first meaningful line of a library's exception message, for one-line errors.

    SimpleITK's exceptions span several lines: a header naming the wrapped call and the C++ source
    file and line that threw (``Exception thrown in SimpleITK ImageSeriesReader_Execute:
    /.../itkGDCMImageIO.cxx:312:``), then ITK's message behind the class and object address
    (``ITK ERROR: GDCMImageIO(0x55b0...): Failed to change to Implicit Transfer Syntax``). The
    header is skipped and the prefix shortened to the class (``GDCMImageIO: Failed to ...``);
    SimpleITK's own ``sitk::ERROR: `` prefix is dropped. Any other message gives its first
    non-empty line; an empty one the exception's type name.
    """
    for line in str(err).splitlines():
        line = line.strip()
        if not line or _SITK_HEADER.match(line):
            continue
        line = _ITK_PREFIX.sub(r"\1: ", line)
        return line.removeprefix("sitk::ERROR: ")
    return type(err).__name__
