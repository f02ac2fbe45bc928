"""Load a checkpoint's weights into a VM-UNet model, whatever its layout (``vmunet.models.layouts``).

Files are read without running code from them (``vmunet.models.safe_load``). Mapping by layout:

* ``vmunet``, ``vmunet_original``: by name; names and shapes are ours (222 tensors for the paper
  config). Missing or unexpected keys are errors when strict.
* ``mamba_unet_original``: by name (Mamba-UNet's names are ours); missing/unexpected keys are
  errors when strict.
* ``swin_umamba`` (Swin-UMamba and Swin-UMamba†, ours and the original's: the same names): by
  name; the original's deep-supervision heads are skipped (``original_unused()``). VMamba v0
  weights go into its encoder by the model's ``vmamba_targets`` renaming (each original's
  ``load_pretrained_ckpt``).
* ``ultralight_vmunet`` (ours and the original's ``best.pth``/``latest.pth``: the same names): by
  name; missing/unexpected keys are errors when strict.
* ``vmunet_v2``, ``vmunet_v2_original``: by name, like ``vmunet``; the original's keys of modules
  it builds but never uses (the model's ``original_unused()``: e.g. its last encoder stage) are
  skipped with that reason.
* ``vmamba_v0`` (and ``vmamba_v0_new_names`` after renaming): the encoder by name, and each
  encoder block also into the mirrored decoder stage ``n-1-i`` (VM-UNet's ``load_from``);
  the ImageNet ``norm``/``head`` and blocks beyond the model's depth are skipped. A key that fits
  nothing else, or a file of which nothing loads, is an error when strict.
* ``vmamba_v2``, ``unknown``: an error when strict (naming the layout and what identified it);
  otherwise whatever fits by name and shape.

Our modules use VMamba's names and its stacked SS2D layout (``x_proj_weight`` (K, R+2N, d_inner),
``dt_projs_weight`` (K, d_inner, R), ``dt_projs_bias`` (K, d_inner), ``A_logs`` (K*d_inner, N),
``Ds`` (K*d_inner,)), so every mapping is a rename. One adaptation: a 3-channel patch embedding
loaded into a 1-channel model has its kernel summed over input channels, which gives a gray image
exactly the response the RGB model gives to that image repeated three times.

Shape mismatches are errors unless ``strict=False``; then every tensor that does not fit is
skipped and the report (logged as it loads) says what loaded, what was skipped and why, and which
model tensors kept their initialisation -- the fine-tuning case (e.g. another class count).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vmunet.models.layouts import LAYOUTS, Detected, detect
from vmunet.models.safe_load import WeightsError, read_checkpoint

logger = logging.getLogger(__name__)

_PATCH_EMBED = "patch_embed.proj.weight"
#: layouts whose every tensor maps by name onto ours (so missing/unexpected keys are problems)
_COMPLETE = ("vmunet", "vmunet_original", "vmunet_v2", "vmunet_v2_original", "mamba_unet_original",
             "swin_umamba", "ultralight_vmunet")


@dataclass
class LoadReport:
    """What ``load_weights`` did (or would do). Keys in ``loaded``/``missing`` are model keys;
    ``skipped`` holds (checkpoint key, reason); ``adapted`` holds (model key, what was done);
    ``problems`` what ``strict`` refuses."""

    layout: str
    entry: str = "(top level)"
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    adapted: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.layout} weights ({self.entry}): loaded {len(self.loaded)} tensors"]
        parts += self.notes
        if self.adapted:
            parts.append("adapted " + "; ".join(f"{k} ({how})" for k, how in self.adapted))
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, why in self.skipped:
                reasons[why] = reasons.get(why, 0) + 1
            parts.append(f"skipped {len(self.skipped)} (" +
                         "; ".join(f"{n}x {why}" for why, n in reasons.items()) + ")")
        if self.missing:
            parts.append(f"{len(self.missing)} model tensors not in the checkpoint kept their init")
        return ", ".join(parts)

    def details(self, limit: int = 12) -> list[str]:
        """Lines naming the skipped checkpoint keys (by reason) and the modules left at init."""
        lines = []
        by_reason: dict[str, list[str]] = {}
        for key, why in self.skipped:
            by_reason.setdefault(why, []).append(key)
        for why, keys in by_reason.items():
            lines.append(f"skipped ({why}): {_short(_modules(keys), limit)}")
        if self.missing:
            lines.append(f"kept their init: {_short(_modules(self.missing), limit)}")
        return lines


_BLOCK_PREFIX = re.compile(r"^(layers(?:_up)?\.\d+\.blocks\.\d+)\.")


def _modules(keys: list[str]) -> list[str]:
    """Keys -> the modules holding them (a VSS block as a whole), in order, once each."""
    return list(dict.fromkeys(m.group(1) if (m := _BLOCK_PREFIX.match(k)) else k.rsplit(".", 1)[0]
                              for k in keys))


def _short(names: list[str], limit: int) -> str:
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


_NO_NAME = "no parameter of that name in the model"
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(blocks\.(\d+)\.|downsample\.)")


def _vmamba_targets(key: str, model_keys: set[str], n_stages: int,
                    rename: Callable[[str], tuple[str | None, str]] | None = None) -> tuple[list[str], str]:
    """Model keys a VMamba key initialises (encoder by name, blocks also into the mirrored
    decoder stage), or ([], why it is skipped). A model with its own VMamba names (its
    ``vmamba_targets``, passed as ``rename``) gets the renamed key only, no mirroring."""
    if rename is not None:
        name, why = rename(key)
        if name is None:
            return [], why
    elif key.startswith(("head.", "classifier.")) or (key.startswith("norm.") and key not in model_keys):
        return [], "ImageNet classifier part (norm/head), unused by VM-UNet"
    # a model with an encoder-end LayerNorm `norm` (Mamba-UNet) gets VMamba's final norm, as the
    # original MambaUnet.load_from does (it loads every name-and-shape match)
    else:
        name = key
    targets = [name] if name in model_keys else []
    m = _LAYER_KEY.match(key)
    if m and m.group(3) is not None and rename is None:
        stage = int(m.group(1))
        dec = f"layers_up.{n_stages - 1 - stage}." + key[len(f"layers.{stage}."):]
        if stage < n_stages and dec in model_keys:
            targets.append(dec)
    if targets:
        return targets, ""
    if m and m.group(3) is not None:
        return [], "block beyond the model's depth"
    return [], _NO_NAME


def _fit(name: str, value: Tensor, target: Tensor) -> tuple[Tensor | None, str]:
    """value reshaped for target, and a note of any adaptation; (None, reason) when impossible."""
    if value.shape == target.shape:
        return value, ""
    if (name == _PATCH_EMBED and value.dim() == 4 and target.shape[1] == 1
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
        return value.sum(dim=1, keepdim=True), f"summed {value.shape[1]} input channels into 1"
    return None, f"shape {tuple(value.shape)} in checkpoint vs {tuple(target.shape)} in model"


def plan_weights(model: nn.Module, ckpt: Mapping[str, Any], *, entry: str = "auto",
                 where: str = "checkpoint", found: Detected | None = None) -> tuple[LoadReport, dict[str, Tensor]]:
    """What loading ``ckpt`` into ``model`` would do: the report (with ``problems``, what strict
    refuses) and the tensors to assign, by model key. Nothing is changed. ``found``: ``ckpt``'s
    ``detect(ckpt, entry=entry)`` when the caller has it already."""
    found = found or detect(ckpt, entry=entry, where=where)
    own = model.state_dict()
    report = LoadReport(found.layout, found.entry, skipped=list(found.dropped), notes=list(found.notes))
    if found.layout in ("vmamba_v2", "unknown"):
        report.problems.append(
            f"detected layout {found.layout}: {found.description}; its tensors are not VM-UNet's "
            "(VMamba v0 blocks: ln_1 + self_attention, d_state 16, patch-merging downsample)"
        )
    unused = model.original_unused() if hasattr(model, "original_unused") else []
    assign = _match(found, own, len(getattr(model, "layers", ())), report, unused,
                    getattr(model, "vmamba_targets", None))
    report.loaded = [k for k in own if k in assign]
    report.missing = [k for k in own if k not in assign]
    if found.layout in _COMPLETE:
        report.problems += [f"missing key {k}" for k in report.missing]
    elif not assign and not report.problems:
        report.problems.append(f"no tensor of this {LAYOUTS[found.layout]} checkpoint fits the model")
    return report, assign


def _match(found: Detected, own: Mapping[str, Tensor], n_stages: int, report: LoadReport,
           unused: list[tuple[str, str]], rename: Callable[[str], tuple[str | None, str]] | None
           ) -> dict[str, Tensor]:
    vmamba = found.layout.startswith("vmamba")
    assign: dict[str, Tensor] = {}
    for key, value in found.state.items():
        why_unused = next((why for prefix, why in unused if key.startswith(prefix)), None)
        if why_unused is not None and key not in own:
            report.skipped.append((key, why_unused))
            continue
        if vmamba:
            targets, why = _vmamba_targets(key, set(own), n_stages, rename)
            if not targets and why == _NO_NAME and found.layout != "vmamba_v2":
                report.problems.append(f"unexpected key {key}")
        else:
            targets, why = ([key], "") if key in own else ([], _NO_NAME)
            if not targets and found.layout in _COMPLETE:
                report.problems.append(f"unexpected key {key}")
        if not targets:
            report.skipped.append((key, why))
            continue
        for t in targets:
            fitted, note = _fit(t, value, own[t])
            if fitted is None:
                report.problems.append(f"{key} -> {t}: {note}")
                report.skipped.append((key, note))
                continue
            if note:
                report.adapted.append((t, note))
            assign[t] = fitted
    return assign


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], *,
                 strict: bool = True, entry: str = "auto", where: str | None = None) -> LoadReport:
    """Load ``source`` (a path or a checkpoint dict, any layout of ``vmunet.models.layouts``) into
    ``model`` in place; ``entry`` picks ``model``/``model_ema`` of a VMamba file (``auto``: EMA).

    Raises ``WeightsError`` (a ``ValueError``) for an unreadable or unsafe file and, when
    ``strict``, for any problem of the plan (see the module docstring); with ``strict=False``
    those tensors are skipped. ``where`` names a dict's file in messages. Returns the
    ``LoadReport``, also logged at INFO as it loads.
    """
    where = where or ("checkpoint dict" if isinstance(source, Mapping) else str(source))
    report, assign = plan_weights(model, read_checkpoint(source), entry=entry, where=where)
    if strict and report.problems:
        raise WeightsError(
            f"cannot load {report.layout} weights from {where} into {type(model).__name__} "
            f"({len(report.problems)} problem(s); load non-strictly to skip them): "
            + "; ".join(report.problems[:20])
        )
    model.load_state_dict(assign, strict=False)
    logger.info("weights from %s: %s", where, report.summary())
    if not strict or report.missing or report.skipped:
        for line in report.details():
            logger.info("weights from %s: %s", where, line)
    return report
