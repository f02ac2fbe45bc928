"""Load weights into VM-UNet models from three checkpoint formats, detected automatically.

=================  ==============================================  ===================================
format             looks like                                      mapping
=================  ==============================================  ===================================
``vmunet``         Lightning ``.ckpt`` (``state_dict`` with keys   strip ``model.``; keys are ours
                   ``model.<name>``) or a bare state dict of ours
``vmunet_original``  VM-UNet's ``VMUNet.state_dict()`` (keys          strip ``vmunet.``; same names and
                   ``vmunet.<name>``), optionally under             shapes as ours (222 tensors for the
                   ``model_state_dict``                             paper config)
``vmamba``         VMamba v0 ImageNet ``{"model": state_dict}``    encoder by name; decoder stage
                   (``patch_embed``, ``layers``, ``norm``,          n-1-i from encoder stage i (VM-UNet's
                   ``head``)                                        ``load_from``); rest skipped
=================  ==============================================  ===================================

Our modules use VMamba's names and its stacked SS2D layout (``x_proj_weight`` (K, R+2N, d_inner),
``dt_projs_weight`` (K, d_inner, R), ``dt_projs_bias`` (K, d_inner), ``A_logs`` (K*d_inner, N),
``Ds`` (K*d_inner,)), so every mapping is a rename. One adaptation: a 3-channel patch embedding
loaded into a 1-channel model has its kernel summed over input channels, which gives a gray image
exactly the response the RGB model gives to that image repeated three times.

Shape mismatches raise ``ValueError`` unless ``strict=False`` (then they are skipped and
logged). For the two complete formats, missing or unexpected model keys are errors too when strict.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

FORMATS = ("vmunet", "vmunet_original", "vmamba")
_PATCH_EMBED = "patch_embed.proj.weight"


@dataclass
class LoadReport:
    """What ``load_weights`` did. Keys in ``loaded``/``missing`` are model keys; ``skipped``
    holds (checkpoint key, reason); ``adapted`` holds (model key, what was done)."""

    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    adapted: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        parts = [f"{self.format} checkpoint: loaded {len(self.loaded)} tensors"]
        if self.adapted:
            parts.append("adapted " + "; ".join(f"{k} ({how})" for k, how in self.adapted))
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} (" +
                         "; ".join(f"{n}x {why}" for why, n in reasons.items()) + ")")
        if self.missing:
            parts.append(f"{len(self.missing)} model tensors not in the checkpoint kept their init")
        return ", ".join(parts)


def read_checkpoint(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint dict from a path (``torch.load`` with ``weights_only=True``) or a dict."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"cannot read weights file {path} with torch.load(weights_only=True): {err}"
        ) from err


def _is_state_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(v, Tensor) for v in d.values())


def detect_format(ckpt: Mapping[str, Any]) -> tuple[str, dict[str, Tensor], list[tuple[str, str]]]:
    """(format, state dict in our naming or VMamba's, keys dropped while unwrapping with reasons)."""
    dropped: list[tuple[str, str]] = []
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):  # Lightning
        sd = {}
        for k, v in ckpt["state_dict"].items():
            if k.startswith("model."):
                sd[k[len("model."):]] = v
            else:
                dropped.append((k, "not under the LightningModule's 'model.' prefix"))
        if not sd:
            raise ValueError("Lightning checkpoint has no 'model.*' keys in its state_dict")
        return "vmunet", sd, dropped
    if "model" in ckpt and _is_state_dict(ckpt["model"]):
        return "vmamba", dict(ckpt["model"]), dropped
    if "model_state_dict" in ckpt and _is_state_dict(ckpt["model_state_dict"]):
        ckpt = ckpt["model_state_dict"]  # VM-UNet's training script saves this wrapper
    if not _is_state_dict(ckpt):
        keys = list(ckpt)[:8]
        raise ValueError(
            "unrecognised checkpoint format: expected a Lightning checkpoint ('state_dict'), a "
            "VMamba checkpoint ('model'), or a state dict of tensors; top-level keys: " + str(keys)
        )
    if any(k.startswith("vmunet.") for k in ckpt):
        sd = {}
        for k, v in ckpt.items():
            if k.startswith("vmunet."):
                sd[k[len("vmunet."):]] = v
            else:
                dropped.append((k, "not under the original VM-UNet's 'vmunet.' prefix"))
        return "vmunet_original", sd, dropped
    return "vmunet", dict(ckpt), dropped


_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(blocks\.(\d+)\.|downsample\.)")


def _vmamba_targets(key: str, model_keys: set[str], n_stages: int) -> tuple[list[str], str]:
    """Model keys a VMamba key initialises (encoder by name, blocks also into the mirrored
    decoder stage), or ([], why it is skipped)."""
    if key.startswith(("head.", "norm.")):
        return [], "ImageNet classifier part (norm/head), unused by VM-UNet"
    targets = [key] if key in model_keys else []
    m = _LAYER_KEY.match(key)
    if m and m.group(3) is not None:
        stage = int(m.group(1))
        dec = f"layers_up.{n_stages - 1 - stage}." + key[len(f"layers.{stage}."):]
        if stage < n_stages and dec in model_keys:
            targets.append(dec)
    if targets:
        return targets, ""
    if m and m.group(3) is not None:
        return [], "block beyond the model's depth"
    return [], "no parameter of that name in the model"


def _fit(name: str, value: Tensor, target: Tensor) -> tuple[Tensor | None, str]:
    """value reshaped for target, and a note of any adaptation; (None, reason) when impossible."""
    if value.shape == target.shape:
        return value, ""
    if (name == _PATCH_EMBED and value.dim() == 4 and target.shape[1] == 1
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
        return value.sum(dim=1, keepdim=True), f"summed {value.shape[1]} input channels into 1"
    return None, f"shape {tuple(value.shape)} in checkpoint vs {tuple(target.shape)} in model"


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], *,
                 strict: bool = True) -> LoadReport:
    """Load ``source`` (path or checkpoint dict, any of ``FORMATS``) into ``model`` in place.

    Raises ``ValueError`` on shape mismatches and, for the complete formats (``vmunet``,
    ``vmunet_original``), on missing or unexpected model keys — unless ``strict=False``, in which
    case those are skipped and reported. Returns a ``LoadReport`` (also logged at INFO).
    """
    ckpt = read_checkpoint(source)
    fmt, sd, dropped = detect_format(ckpt)
    own = model.state_dict()
    report = LoadReport(fmt, skipped=list(dropped))
    n_stages = len(getattr(model, "layers", ()))
    assign: dict[str, Tensor] = {}
    problems: list[str] = []
    for key, value in sd.items():
        if fmt == "vmamba":
            targets, why = _vmamba_targets(key, set(own), n_stages)
        else:
            targets, why = ([key], "") if key in own else ([], "no parameter of that name in the model")
            if not targets:
                problems.append(f"unexpected key {key}")
        if not targets:
            report.skipped.append((key, why))
            continue
        for t in targets:
            fitted, note = _fit(t, value, own[t])
            if fitted is None:
                problems.append(f"{key} -> {t}: {note}")
                report.skipped.append((key, note))
                continue
            if note:
                report.adapted.append((t, note))
            assign[t] = fitted
    report.loaded = [k for k in own if k in assign]
    report.missing = [k for k in own if k not in assign]
    if fmt != "vmamba":
        problems += [f"missing key {k}" for k in report.missing]
    if strict and problems:
        where = source if not isinstance(source, Mapping) else "checkpoint dict"
        raise ValueError(
            f"cannot load {fmt} weights from {where} into {type(model).__name__} "
            f"({len(problems)} problem(s); pass strict=False to skip them): " + "; ".join(problems[:20])
        )
    model.load_state_dict(assign, strict=False)
    logger.info("weights from %s: %s",
                source if not isinstance(source, Mapping) else "dict", report.summary())
    for key, why in report.skipped:
        logger.debug("skipped %s: %s", key, why)
    return report


def model_from_checkpoint(source: str | Path | Mapping[str, Any], **overrides: Any
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a model from one of this project's Lightning checkpoints.

    Uses ``ckpt["vmunet"]`` (``model_name``, ``model_kwargs``, ``preprocessing``, ``version``);
    ``overrides`` (e.g. ``scan_backend``) replace entries of ``model_kwargs``. Returns
    ``(model in eval mode, ckpt["vmunet"])``.
    """
    from vmunet.models.registry import create_model

    ckpt = read_checkpoint(source)
    meta = ckpt.get("vmunet")
    if not isinstance(meta, Mapping) or "model_name" not in meta:
        raise ValueError(
            f"{source if not isinstance(source, Mapping) else 'checkpoint'} has no 'vmunet' "
            "entry with 'model_name' and 'model_kwargs'; it was not written by vmunet training"
        )
    kwargs = {**dict(meta.get("model_kwargs") or {}), **overrides}
    if "num_classes" not in kwargs:
        raise ValueError("checkpoint's vmunet.model_kwargs lacks 'num_classes'")
    model = create_model(meta["model_name"], weights=ckpt, **kwargs)
    return model.eval(), dict(meta)
