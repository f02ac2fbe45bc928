"""Which weights a checkpoint holds (its *layout*), with the keys renamed to the names we map.

=======================  ==========================================================  ===============
layout                   recognised by                                               loaded
=======================  ==========================================================  ===============
``vmunet``               ours: our decoder keys (``layers_up.``, ``final_conv.``),     by name
                         bare or in a Lightning ``state_dict`` under ``model.``
``vmunet_original``      VM-UNet's ``VMUNet.state_dict()``: keys ``vmunet.*``          by name
                         (optionally under ``model_state_dict``)
``vmunet_v2``            ours, VM-UNet-V2: its SDI decoder keys (``sdi_1.``, ...)     by name
``vmunet_v2_original``   VM-UNet-V2's ``VMUNetV2.state_dict()``: ``vmunet.*`` encoder  by name; keys of
                         keys plus the SDI decoder's                                 modules it never
                                                                                     uses skipped
``mamba_unet_original``  Mamba-UNet's ``MambaUnet.state_dict()``: keys ``mamba_unet.*``  by name
``mamba_unet``           ours, Mamba-UNet: its Swin-UNet decoder's ``concat_back_dim.``, by name
                         ``norm_up.``, ``output.`` (it has ``layers_up.`` too)
``swin_umamba``          Swin-UMamba or Swin-UMamba† (ours or the original's, also an  by name
                         nnU-Net checkpoint's ``network_weights``): ``vssm_encoder.*``
``ultralight_vmunet``    UltraLight VM-UNet (ours or the original's ``best.pth`` /      by name
                         ``latest.pth``): PVM layers ``encoder4.0.mamba.*``
``vmamba_v0``            VMamba v0 ImageNet weights: blocks ``ln_1`` +                  encoder, and
                         ``self_attention``, ``patch_embed.proj``, ``norm``/``head``    blocks into the
                                                                                     mirrored decoder
``vmamba_v0_new_names``  v0 weights saved by later VMamba code (its ``VSSM``           renamed to v0
                         ``_load_from_state_dict`` renames): blocks ``norm`` + ``op``,
                         ``patch_embed.0/2``, ``downsample.1/2``, ``classifier.norm/head``
``vmamba_v2``            later VMamba models (v2/v3): an MLP branch (``mlp``,           nothing fits
                         ``norm2``), conv downsample, stacked-conv patch embedding,
                         grouped ``x_proj.weight``, ``d_state`` other than 16
``unknown``              anything else                                               by name
=======================  ==========================================================  ===============

The layouts are tried in the order of :data:`_RULES`, the one table of what identifies each.
Each layout names the registered models its weights are for (:data:`LAYOUT_MODELS`;
``registry.model_for_weights`` picks one); ``vmunet weights inspect`` builds that model when nothing else names one, with
the classes and input channels its tensors show (:data:`LAYOUT_SHAPES`, :func:`file_options`).

VMamba files (``save_checkpoint_ema``) may hold two state dicts, ``model`` and ``model_ema``;
``entry="auto"`` takes ``model_ema`` when present and logs that it did.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

# (the one list, torch-free for the CLI's help; re-exported here)
from vmunet.models.layout_names import LAYOUTS as LAYOUTS
from vmunet.models.safe_load import WeightsError

logger = logging.getLogger(__name__)

ENTRIES = ("auto", "model", "model_ema")

#: the registered models whose weights each layout holds: what ``vmunet weights inspect`` builds when
#: neither ``--model`` nor the file's own record names one (``registry.model_for_weights``: of
#: several, the one whose default configuration's key names fit the file best); empty where no
#: model of ours takes the weights whole. VMamba v0 classifiers name ``vmunet``: the paper
#: initialises VM-UNet's encoder and mirrored decoder from them (its ``load_from``).
_VMUNETS = ("vmunet", "vmunet_deep", "vmunet_test")  # one class; the depths tell them apart
LAYOUT_MODELS: dict[str, tuple[str, ...]] = {
    "vmunet": _VMUNETS,
    "vmunet_original": _VMUNETS,  # the original's configs build the paper model, its code's default vmunet_deep
    "vmunet_v2": ("vmunet_v2",),
    "vmunet_v2_original": ("vmunet_v2",),
    "mamba_unet_original": ("mamba_unet",),
    "mamba_unet": ("mamba_unet",),
    "swin_umamba": ("swin_umamba", "swin_umamba_d"),  # UNETR decoder or Mamba decoder
    "ultralight_vmunet": ("ultralight_vmunet",),
    "vmamba_v0": ("vmunet",),
    "vmamba_v0_new_names": ("vmunet",),
    "vmamba_v2": (),
    "unknown": (),
}
@dataclass(frozen=True)
class Shapes:
    """Where a layout's tensors (under ``Detected.state``'s names) give the model's options: the
    final head's weight (dim 0: ``num_classes``) and the first conv's (dim 1: ``in_chans``), the
    first of each tuple that the file holds; ``gray`` says the original code repeats a 1-channel
    image to 3 channels, so its 3-channel kernel also takes gray input (summed, ``weights._fit``);
    ``no_head`` / ``no_stem``: why the file cannot tell (empty tuple)."""

    head: tuple[str, ...] = ()
    stem: tuple[str, ...] = ()
    gray: bool = False
    no_head: str = ""
    no_stem: str = ""


_CLASSIFIER = "an ImageNet classifier: its 1000-class head is not a segmentation head"
_FOREIGN = "no model of ours takes these weights"
#: what ``vmunet weights inspect`` reads ``num_classes`` / ``in_chans`` from when neither an option
#: nor the file's own record gives them (:func:`file_options`)
LAYOUT_SHAPES: dict[str, Shapes] = {
    "vmunet": Shapes(("final_conv.weight",), ("patch_embed.proj.weight",)),
    "vmunet_original": Shapes(("final_conv.weight",), ("patch_embed.proj.weight",), gray=True),
    "vmunet_v2": Shapes(("seg_outs.3.weight",), ("patch_embed.proj.weight",)),
    "vmunet_v2_original": Shapes(("seg_outs.3.weight",), ("patch_embed.proj.weight",), gray=True),
    "mamba_unet_original": Shapes(("output.weight",), ("patch_embed.proj.weight",), gray=True),
    "mamba_unet": Shapes(("output.weight",), ("patch_embed.proj.weight",)),
    # Swin-UMamba's UNETR head, else Swin-UMamba†'s full-resolution head (the last of its seg_layers)
    "swin_umamba": Shapes(("out_layers.0.conv.conv.weight", "decoder.seg_layers.3.weight"),
                          ("stem.0.weight", "vssm_encoder.patch_embed.proj.weight")),
    "ultralight_vmunet": Shapes(("final.weight",), ("encoder1.0.weight",)),
    "vmamba_v0": Shapes((), ("patch_embed.proj.weight",), gray=True, no_head=_CLASSIFIER),
    "vmamba_v0_new_names": Shapes((), ("patch_embed.proj.weight",), gray=True, no_head=_CLASSIFIER),
    "vmamba_v2": Shapes(no_head=_FOREIGN, no_stem=_FOREIGN),
    "unknown": Shapes(no_head=_FOREIGN, no_stem=_FOREIGN),
}


def file_options(found: Detected) -> dict[str, tuple[int | None, str]]:
    """``num_classes`` and ``in_chans`` as ``found``'s tensors give them (:data:`LAYOUT_SHAPES`):
    option -> (value, where it was read), or (None, why the file does not tell)."""
    rule = LAYOUT_SHAPES[found.layout]
    out: dict[str, tuple[int | None, str]] = {}
    for option, keys, dim, what, why_not in (
        ("num_classes", rule.head, 0, "output", rule.no_head),
        ("in_chans", rule.stem, 1, "input", rule.no_stem),
    ):
        key = next((k for k in keys if k in found.state and found.state[k].dim() > dim), None)
        if key is not None:
            n = int(found.state[key].shape[dim])
            gray = ("; the original repeats gray input to 3 channels, and --in-chans 1 takes it with the "
                    "kernel summed" if option == "in_chans" and rule.gray and n == 3 else "")
            out[option] = (n, f"from the file: {key} has {n} {what} channel{'s' * (n != 1)}{gray}")
        elif keys:
            out[option] = (None, f"layout {found.layout}'s {' / '.join(keys)} is not in the file")
        else:
            out[option] = (None, f"layout {found.layout}: {why_not}")
    return out


_BLOCK = re.compile(r"^layers\.\d+\.blocks\.\d+\.([A-Za-z_0-9]+)\.")
#: top-level modules of VM-UNet-V2's SDI decoder (ours and the original's)
_V2_DECODER = ("sdi_1.", "Translayer_1.")
#: a PVM layer's Mamba block at a top-level encoder/decoder (UltraLight VM-UNet, ours and the original's)
_PVM_KEY = re.compile(r"^(?:en|de)coder\d+\.0\.mamba\.")
_V0_BLOCK_PARTS = {"ln_1", "self_attention"}
_NEW_BLOCK_PARTS = {"norm", "op"}
#: later VMamba names -> v0 names: the inverse of ``change_name`` in VMamba's
#: ``VSSM._load_from_state_dict`` (vmamba.py), which loads v0 files into the new modules
_NEW_TO_V0 = [
    (re.compile(r"^patch_embed\.0\."), "patch_embed.proj."),
    (re.compile(r"^patch_embed\.2\."), "patch_embed.norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)norm\."), r"\1ln_1."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)op\."), r"\1self_attention."),
    (re.compile(r"^(layers\.\d+\.downsample\.)1\."), r"\1norm."),
    (re.compile(r"^(layers\.\d+\.downsample\.)2\."), r"\1reduction."),
    (re.compile(r"^classifier\.norm\."), "norm."),
    (re.compile(r"^classifier\.head\."), "head."),
]


@dataclass
class Detected:
    """A checkpoint's weights: ``layout`` (a key of :data:`LAYOUTS`), the tensors under the names
    the loader maps (ours for ``vmunet*``/``unknown``, VMamba v0's for ``vmamba*``), where in the
    file they were (``entry``), keys dropped while unwrapping, what was done, what identified it."""

    layout: str
    state: dict[str, Tensor]
    entry: str
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return LAYOUTS[self.layout] + (f" ({'; '.join(self.features)})" if self.features else "")


def is_state_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(v, Tensor) for v in d.values())


def detect(ckpt: Mapping[str, Any], *, entry: str = "auto", where: str = "checkpoint") -> Detected:
    """Unwrap the weights of ``ckpt`` (choosing ``entry`` in VMamba files) and name their layout:
    the first of :data:`_RULES` whose test holds, else ``unknown``."""
    if entry not in ENTRIES:
        raise WeightsError(f"weights entry must be one of {', '.join(ENTRIES)}, got {entry!r}")
    state, used, dropped = _unwrap(ckpt, entry, where)
    parts = {m.group(1) for k in state if (m := _BLOCK.match(k))}
    for layout, test, prepare in _RULES:
        if test(state, parts):
            return prepare(Detected(layout, state, used, dropped), parts)
    sample = sorted(state)[:4]
    return Detected("unknown", state, used, dropped, features=["keys like " + ", ".join(sample)])


def _has(state: Mapping[str, Tensor], prefixes: str | tuple[str, ...]) -> bool:
    return any(k.startswith(prefixes) for k in state)


def _as_is(found: Detected, parts: set[str]) -> Detected:
    return found


def _strip_prefix(prefix: str, name: str) -> Callable[[Detected, set[str]], Detected]:
    """The keys under a wrapper module's ``prefix``, without it; the others dropped."""
    def prepare(found: Detected, parts: set[str]) -> Detected:
        kept = {}
        for k, v in found.state.items():
            if k.startswith(prefix):
                kept[k[len(prefix):]] = v
            else:
                found.dropped.append((k, f"not under the original {name}'s {prefix!r} prefix"))
        found.state = kept
        return found
    return prepare


def _v2_original(found: Detected, parts: set[str]) -> Detected:
    # VMUNetV2 holds its VMamba encoder as ``self.vmunet``, the SDI decoder at the top level
    found.state = {k.removeprefix("vmunet."): v for k, v in found.state.items()}
    return found


def _later_vmamba(found: Detected, parts: set[str]) -> Detected:
    found.features = _later_vmamba_features(found.state, parts)
    return found


def _v0_renamed(found: Detected, parts: set[str]) -> Detected:
    n = sum(_to_v0(k) != k for k in found.state)
    found.state = {_to_v0(k): v for k, v in found.state.items()}
    found.notes.append(f"renamed {n} keys from later VMamba names (norm/op, patch_embed.0/2, downsample.1/2, "
                       "classifier.*) to v0's")
    return found


_Test = Callable[[Mapping[str, Tensor], set[str]], bool]
#: layout, what identifies it (the weights, their VMamba block parts), what is done to the weights;
#: tried in this order, so a rule may rely on the ones above it not holding (ours after the
#: originals' wrapper prefixes; Mamba-UNet's decoder has ``layers_up`` like VM-UNet's, so before it)
_RULES: tuple[tuple[str, _Test, Callable[[Detected, set[str]], Detected]], ...] = (
    ("vmunet_v2_original", lambda s, p: _has(s, _V2_DECODER) and _has(s, "vmunet."), _v2_original),
    ("vmunet_v2", lambda s, p: _has(s, _V2_DECODER), _as_is),
    ("swin_umamba", lambda s, p: _has(s, "vssm_encoder."), _as_is),
    ("ultralight_vmunet", lambda s, p: any(_PVM_KEY.match(k) for k in s), _as_is),
    ("mamba_unet_original", lambda s, p: _has(s, "mamba_unet."), _strip_prefix("mamba_unet.", "Mamba-UNet")),
    ("vmunet_original", lambda s, p: _has(s, "vmunet."), _strip_prefix("vmunet.", "VM-UNet")),
    ("mamba_unet", lambda s, p: _has(s, ("concat_back_dim.", "norm_up.", "output.")), _as_is),
    ("vmunet", lambda s, p: _has(s, ("layers_up.", "final_conv.", "final_up.")), _as_is),
    ("vmamba_v0", lambda s, p: bool(p) and p <= _V0_BLOCK_PARTS, _as_is),
    ("vmamba_v2", lambda s, p: bool(p & _NEW_BLOCK_PARTS) and bool(_later_vmamba_features(s, p)), _later_vmamba),
    ("vmamba_v0_new_names", lambda s, p: bool(p & _NEW_BLOCK_PARTS), _v0_renamed),
)


def _unwrap(ckpt: Mapping[str, Any], entry: str, where: str
            ) -> tuple[dict[str, Tensor], str, list[tuple[str, str]]]:
    dropped: list[tuple[str, str]] = []
    holders = [k for k in ("model", "model_ema") if is_state_dict(ckpt.get(k))]
    if entry != "auto" and not holders:
        raise WeightsError(f"{where}: weights entry {entry!r} is for VMamba files with 'model'/'model_ema' "
                           f"state dicts; this file has top-level keys {sorted(map(str, ckpt))[:8]}")
    if holders:
        if entry == "auto":
            used = "model_ema" if "model_ema" in holders else "model"
            if used == "model_ema":
                logger.info("%s: using its 'model_ema' weights (the EMA of training; weights entry 'model' "
                            "picks the raw ones)", where)
        elif entry not in holders:
            raise WeightsError(f"{where} has no {entry!r} weights; it has {', '.join(holders)}")
        else:
            used = entry
        return dict(ckpt[used]), used, dropped
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):  # Lightning
        state = {}
        for k, v in ckpt["state_dict"].items():
            if k.startswith("model."):
                state[k[len("model."):]] = v
            else:
                dropped.append((k, "not under the LightningModule's 'model.' prefix"))
        if not state:
            raise WeightsError(f"{where}: Lightning checkpoint has no 'model.*' keys in its state_dict")
        return state, "state_dict", dropped
    if is_state_dict(ckpt.get("model_state_dict")):  # the original VM-UNet training script's wrapper
        return dict(ckpt["model_state_dict"]), "model_state_dict", dropped
    if is_state_dict(ckpt.get("network_weights")):  # nnU-Net's checkpoints (Swin-UMamba)
        return dict(ckpt["network_weights"]), "network_weights", dropped
    if is_state_dict(ckpt):
        return dict(ckpt), "(top level)", dropped
    raise WeightsError(
        f"{where}: unrecognised checkpoint: expected a Lightning checkpoint ('state_dict'), a VMamba "
        "checkpoint ('model'/'model_ema'), or a state dict of tensors; top-level keys: "
        + str(sorted(map(str, ckpt))[:8])
    )


def _to_v0(key: str) -> str:
    for pattern, repl in _NEW_TO_V0:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def _later_vmamba_features(state: Mapping[str, Tensor], parts: set[str]) -> list[str]:
    """What marks weights in later VMamba's names as not v0 (empty for v0 weights renamed)."""
    found = []
    if parts & {"mlp", "norm2"}:
        found.append("blocks with an MLP branch (mlp, norm2)")
    if other := sorted(parts - _NEW_BLOCK_PARTS - {"mlp", "norm2"}):
        found.append("block parts " + ", ".join(other))
    if any(re.match(r"^layers\.\d+\.downsample\.1\.weight$", k) and v.dim() == 4 for k, v in state.items()):
        found.append("conv downsample (downsample.1.weight is a conv kernel)")
    if any(k.startswith("patch_embed.5.") for k in state):
        found.append("stacked-conv patch embedding (patch_embed.5)")
    if any(k.endswith(".op.x_proj.weight") for k in state):
        found.append("grouped x_proj (op.x_proj.weight)")
    n_states = {v.shape[-1] for k, v in state.items() if k.endswith(".op.A_logs") and v.dim() == 2}
    if found and n_states - {16}:  # informative only: any d_state is v0-shaped, shapes decide the fit
        found.append("d_state=" + "/".join(map(str, sorted(n_states))) + " (v0 uses 16)")
    return found
