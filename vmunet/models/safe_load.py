"""Read checkpoint files without running code from them.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only, which is what makes
a downloaded file safe to open. Released VMamba checkpoints (its ``save_checkpoint_ema``) also
pickle the training configuration as a yacs ``CfgNode``, so plain ``weights_only`` refuses them.
We keep torch's restricted unpickler and register *stand-ins* under the names of a short allowlist
of configuration classes (:data:`CONFIG_CLASSES`); they come back as plain dicts, and yacs need not
be installed. Before unpickling, the file's pickle is disassembled (statically: nothing runs) and
any other class or function it names is refused by name. ``weights_only=False`` is never used.
numpy *scalars* (and their dtypes) are allowed too: nnU-Net's checkpoints (Swin-UMamba's) log
``np.float64`` values next to the weights; a scalar is rebuilt from a numeric dtype and its raw
bytes (object dtypes refused), while numpy arrays stay refused.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vmunet.errors import VmunetError

#: configuration classes that known training code pickles next to the weights, loaded as plain
#: dicts: yacs ``CfgNode`` (VMamba, Swin: a dict subclass, its items are the config) and
#: ``argparse.Namespace`` (many training scripts: its attributes are the config)
CONFIG_CLASSES = {"yacs.config.CfgNode": "items", "argparse.Namespace": "attributes"}


class WeightsError(VmunetError, ValueError):
    """A weights file is missing, unreadable or unsafe, or its contents fit nothing; the message
    names the file."""


class UnsafeCheckpointError(WeightsError):
    """The file's pickle names a class or function outside the allowlist (named in the message)."""


def _describe(source: str | Path | Mapping[str, Any]) -> str:
    return "checkpoint dict" if isinstance(source, Mapping) else str(source)


def read_checkpoint(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint dict from a path (safely, see the module docstring) or a dict as it is.

    Raises :class:`WeightsError` for a missing or unreadable file or a pickle that is not a dict,
    :class:`UnsafeCheckpointError` naming the classes for one that needs any code to load.
    """
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a folder, expected a checkpoint file (.ckpt, .pth, .pt)")
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:  # torch's words for it: "EOFError: " with nothing after
        raise WeightsError(f"cannot read weights file {path}: not a torch checkpoint (empty file, 0 bytes)")
    created: list[tuple[OrderedDict, str]] = []  # stand-in objects made during this load

    def stand_in(how: str) -> type:
        class StandIn:
            # __new__ returns a plain OrderedDict: the only dict type whose items *and* attributes
            # torch's restricted unpickler fills (SETITEMS, BUILD); it is converted below
            def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
                obj: OrderedDict = OrderedDict()
                created.append((obj, how))
                return obj

        return StandIn

    allow = [(stand_in(how), name) for name, how in CONFIG_CLASSES.items()] + _numpy_scalar_globals()
    with torch.serialization.safe_globals(allow):
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise UnsafeCheckpointError(
                f"weights file {path} refused: its pickle needs {', '.join(unsafe)}, which is not a "
                "tensor, a plain container or a known config class (vmunet never runs code from a "
                "weights file; if you trust it, save its state dict alone with plain torch)"
            )
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt or non-torch files
            named = re.search(r"GLOBAL (\S+)", str(err))
            if named:  # legacy (non-zip) files are not pre-scanned; torch's refusal names it
                name = named.group(1) if "." in named.group(1) else "builtins." + named.group(1)
                raise UnsafeCheckpointError(f"weights file {path} refused: its pickle needs {name}") from err
            raise WeightsError(
                f"cannot read weights file {path}: not a torch checkpoint ({_load_failure(err)})"
            ) from None
    if created:
        ckpt = _plain(ckpt, {id(obj): how for obj, how in created})
    if not isinstance(ckpt, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def _numpy_scalar_globals() -> list[tuple[Any, str]]:
    """What unpickling numpy scalars (``np.float64(0.7)``) names, for ``safe_globals``: numpy's
    ``scalar(dtype, raw bytes)`` under its numpy 1 and 2 module names, ``numpy.dtype``, and the
    numeric/bool/string dtype classes that the pickle's BUILD step sets state on (numpy >= 1.25).
    Their arguments are themselves unpickled under the same restrictions, and the object dtype's
    class is not allowed, so no scalar can wrap anything else; arrays (``_reconstruct``) stay
    refused."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar

    classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSU"} - {np.dtype}
    return ([(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
             (np.dtype, "numpy.dtype")]
            + [(cls, f"numpy.dtypes.{cls.__name__}") for cls in sorted(classes, key=lambda c: c.__name__)])


def _load_failure(err: Exception) -> str:
    """The gist of torch's load error. For random bytes torch's first line advises retrying with
    ``weights_only=False`` (running code from the file): never the right advice here, so the
    unpickler's own words are kept instead; a broken zip archive is said to be one."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "zip archive" in first or "central directory" in first:
        return "truncated or corrupt archive"
    return f"{type(err).__name__}: {first}"[:200]


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of the file's pickle outside torch's and our allowlists (static scan, sorted)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint (legacy format or not torch at all): torch.load decides
        return []


def _plain(obj: Any, stand_ins: dict[int, str]) -> Any:
    """``obj`` with every stand-in object replaced by a plain dict (recursively)."""
    how = stand_ins.get(id(obj))
    if how is not None:
        content = dict(obj) if how == "items" else dict(obj.__dict__)
        return {k: _plain(v, stand_ins) for k, v in content.items()}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple)):
                obj[k] = _plain(v, stand_ins)
        return obj
    if isinstance(obj, list):
        return [_plain(v, stand_ins) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, stand_ins) for v in obj)
    return obj
