"""Rebuild a model from one of this project's training checkpoints (the one way to do it).

Training (``SegmentationModule.on_save_checkpoint``) writes ``ckpt["vmunet"]`` = ``model_name``,
``model_kwargs`` (with ``num_classes`` and ``in_chans``), ``preprocessing`` and ``version``.
Checkpoints without that record are rebuilt from Lightning's ``hyper_parameters`` (``model_name``,
``num_classes``, ``in_chans``, ``model_kwargs``, ``preprocessing``) when those are there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from vmunet.models.registry import create_model
from vmunet.models.safe_load import WeightsError, read_checkpoint
from vmunet.models.weights import load_weights


class CheckpointError(WeightsError):
    """A checkpoint lacks what rebuilding or inference needs (names the file and the field)."""


def read_checkpoint_with_sha256(path: str | Path) -> tuple[Mapping[str, Any], str]:
    """Read a checkpoint file and the SHA-256 of the bytes whose weights were read.

    Hashed before and after the read: what is keyed or recorded by this hash (``vmunet predict``'s
    output reuse, ``vmunet export``'s record) must be of the weights that run, and a ``last.ckpt``
    replaced meanwhile by a training run still writing it would lend them its hash. A file that
    changed is refused (:class:`CheckpointError`); a missing or unreadable one raises ``OSError``.
    """
    from vmunet.data.fileio import file_sha256

    sha256 = file_sha256(path)
    ckpt = read_checkpoint(path)
    if file_sha256(path) != sha256:
        raise CheckpointError(f"checkpoint {path} changed while it was read (a training run still writing it?); "
                              "expected a complete checkpoint file -- run again once it is written")
    return ckpt, sha256


def checkpoint_record(ckpt: Mapping[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """The rebuild record of a training checkpoint: ``model_name``, ``model_kwargs`` (with
    ``num_classes``), ``preprocessing`` (None when absent) and ``version``."""
    record = dict(ckpt.get("vmunet") or {})
    hparams = ckpt.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, Mapping) else {}
    if "model_name" not in record and {"model_name", "num_classes", "in_chans"} <= set(hparams):
        record["model_name"] = hparams["model_name"]
        record["model_kwargs"] = {**dict(hparams.get("model_kwargs") or {}),
                                  "num_classes": hparams["num_classes"], "in_chans": hparams["in_chans"]}
    if record.get("preprocessing") is None:
        record["preprocessing"] = hparams.get("preprocessing")
    for key in ("model_name", "model_kwargs"):
        if key not in record:
            raise CheckpointError(f"checkpoint {where} has no ckpt['vmunet'][{key!r}] (nor Lightning "
                                  "hyper_parameters naming the model); cannot rebuild the model")
    if "num_classes" not in record["model_kwargs"]:
        raise CheckpointError(f"checkpoint {where}: ckpt['vmunet']['model_kwargs'] lacks 'num_classes'")
    return record


def model_from_checkpoint(source: str | Path | Mapping[str, Any], *, where: str | None = None,
                          **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the registered model of a training checkpoint and load its weights (strictly).

    ``source`` is a path or an already read checkpoint dict; ``overrides`` (e.g. ``scan_backend``)
    replace entries of the record's ``model_kwargs``; ``where`` names a dict's file in errors.
    Returns ``(model in eval mode, record)``.
    """
    where = where or ("checkpoint dict" if isinstance(source, Mapping) else str(source))
    ckpt = read_checkpoint(source)
    record = checkpoint_record(ckpt, where)
    kwargs = {**dict(record["model_kwargs"]), **overrides}
    try:
        model = create_model(record["model_name"], **kwargs)
        load_weights(model, ckpt, where=where)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {where}: cannot rebuild model {record['model_name']!r}: {err}") from err
    return model.eval(), record
