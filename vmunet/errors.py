"""The base class of the errors vmunet raises for bad user input (files, folders, settings).

The ``vmunet`` command prints any of them as one line ``vmunet <command>: error: <message>`` and
exits with status 2, without a traceback: the message names the file or key and what was
expected. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VmunetError(Exception):
    """Bad input the user can fix; the message names the file/key and what was expected."""


class ConfigError(VmunetError, ValueError):
    """An invalid setting (a YAML key or command-line option)."""
