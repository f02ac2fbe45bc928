"""The one slice inferer: stack of 2D slices -> label map (and optionally class probabilities).

Validation and ``vmunet test`` (:class:`vmunet.training.module.SegmentationModule`) and
``vmunet predict`` (:class:`vmunet.inference.Predictor`) all segment through
:class:`SliceInferer`, so the same slices give the same labels everywhere. Per mini-batch of
slices ``(B, C, h, w)``:

1. **resize** to the model's in-plane ``image_size`` with the record's ``image_interpolation``
   (bilinear unless it says bicubic; ``align_corners=False``), skipped when already that size;
   grey slices are repeated to the width of an RGB stem;
2. **model** -> logits ``(B, K, H, W)``; with ``tta`` the probabilities of the four in-plane flips
   are averaged;
3. **probabilities**: sigmoid for one output channel (binary), softmax otherwise;
4. **resample back** to ``(h, w)`` and **decide**, as ``resample`` says:

   * ``"probabilities"`` (default): probabilities are resized bilinearly to ``(h, w)``, then the
     decision rule makes labels at native size;
   * ``"labels"`` (the original VM-UNet / TransUNet Synapse test): the decision rule makes labels
     at model size and the label map is resized back with ``scipy.ndimage.zoom(order=0)``
     (nearest neighbour on scipy's grid, exactly as the original code).

Decision rule: binary (one output channel) ``p >= threshold`` (paper 0.5); multi-class argmax,
the first maximum on ties. Both settings travel in the checkpoint's preprocessing record
(``threshold``, ``resample``; see :mod:`vmunet.data.preprocessing`).

Training imports this module (and nothing else of ``vmunet.inference``); it imports only torch,
numpy and scipy, so no cycle arises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Resample = Literal["probabilities", "labels"]
RESAMPLE_MODES: tuple[str, ...] = ("probabilities", "labels")
#: In-plane flips used by ``tta=True`` (dims of a ``(B, C, H, W)`` batch); identity first.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
#: Binary decision threshold when a record does not name one (the papers' 0.5, ``p >= 0.5``).
DEFAULT_THRESHOLD = 0.5


def check_model_input_size(model: nn.Module, image_size: tuple[int, int] | list[int], where: str,
                           remedy: str = " (or model_kwargs pad_to_multiple: true)") -> None:
    """Refuse an input size the model cannot take, before anything runs: the U-Nets need height and
    width multiples of their ``size_multiple`` unless built with ``pad_to_multiple``. ``where``
    starts the one-line :class:`~vmunet.errors.ConfigError` (``data.image_size``, a checkpoint);
    ``remedy`` ends it (empty where the caller has no ``pad_to_multiple`` to set, e.g. ``vmunet info``)."""
    from vmunet.errors import ConfigError

    multiple = int(getattr(model, "size_multiple", 1) or 1)
    if getattr(model, "pad_to_multiple", False) or not any(int(s) % multiple for s in image_size):
        return
    nearest = [max(multiple, round(int(s) / multiple) * multiple) for s in image_size]
    raise ConfigError(f"{where}={[int(s) for s in image_size]}: {type(model).__name__} needs height and width "
                      f"multiples of {multiple}; expected e.g. {nearest}{remedy}")


def decide(probs: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Decision rule: ``(B, K, H, W)`` probabilities -> ``(B, H, W)`` int64 labels.

    ``K == 1`` (binary, sigmoid output): ``p >= threshold``. ``K > 1``: argmax, first maximum on
    ties (``max(dim).indices`` returns the same as ``argmax`` and is several times faster on CPU).
    """
    if probs.shape[1] == 1:
        return (probs[:, 0] >= threshold).long()
    return probs.max(dim=1).indices


def _zoom_labels(labels: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` label maps -> ``(B, *out_hw)`` by ``scipy.ndimage.zoom(order=0)`` per slice,
    the label resample of the original VM-UNet Synapse test (``zoom(out, (x / 224, y / 224), 0)``)."""
    from scipy.ndimage import zoom

    src = labels.cpu().numpy()
    h, w = src.shape[-2:]
    factors = (out_hw[0] / h, out_hw[1] / w)
    out = np.stack([zoom(s, factors, order=0) for s in src])
    if out.shape[-2:] != tuple(out_hw):  # zoom rounds the output size; guard against a surprise
        raise ValueError(f"label resample gave {out.shape[-2:]}, expected {tuple(out_hw)}")
    return torch.from_numpy(out).to(labels.device)


@dataclass(frozen=True)
class SliceOutput:
    """Labels ``(N, H, W)`` and optionally float16 probabilities ``(K, N, H, W)`` (binary models:
    ``K == 2``, background ``1 - p`` first) at the native in-plane size."""

    labels: np.ndarray
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class SliceInferer:
    """Slice-wise segmentation with one fixed recipe (see the module docstring).

    Args:
        image_size: the model's in-plane input size ``(H, W)``.
        image_interpolation: ``"bilinear"`` or ``"bicubic"``, how slices are resized to ``image_size``.
        threshold: binary decision threshold (``p >= threshold``); ignored for multi-class models.
        resample: ``"probabilities"`` or ``"labels"``, what is resized back to native size.
        batch_size: slices per forward pass.
        tta: average the probabilities of the four in-plane flips.
        in_chans: channels the model takes; 1-channel slices are repeated to fit (``None``: as given).
        num_classes: expected class count (label values); checked against the model's output.
    """

    image_size: tuple[int, int]
    image_interpolation: str = "bilinear"
    threshold: float = DEFAULT_THRESHOLD
    resample: str = "probabilities"
    batch_size: int = 8
    tta: bool = False
    in_chans: int | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.image_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"image_interpolation: expected 'bilinear' or 'bicubic', got {self.image_interpolation!r}")
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f"resample: expected one of {RESAMPLE_MODES}, got {self.resample!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold: expected a probability in (0, 1), got {self.threshold!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))

    @classmethod
    def from_record(cls, record: Mapping[str, Any], **kwargs: Any) -> SliceInferer:
        """The inferer a (validated) preprocessing record asks for; ``kwargs`` add or override
        ``batch_size``, ``tta``, ``in_chans``."""
        names = record.get("class_names")
        settings: dict[str, Any] = {
            "image_size": tuple(record["image_size"]),
            "image_interpolation": record.get("image_interpolation", "bilinear"),
            "threshold": float(record.get("threshold", DEFAULT_THRESHOLD)),
            "resample": record.get("resample", "probabilities"),
            "in_chans": int(record["in_chans"]),
            "num_classes": None if names is None else len(names),
        }
        settings.update(kwargs)
        return cls(**settings)

    # ------------------------------------------------------------------ one batch
    def probabilities(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` slices -> probabilities ``(B, K, H, W)`` at model size (K = 1: sigmoid)."""
        x = x.float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode=self.image_interpolation, align_corners=False)
        if self.in_chans is not None and x.shape[1] != self.in_chans:
            if x.shape[1] != 1:  # grey slices into an RGB-width stem (VM-UNet's Synapse recipe)
                raise ValueError(f"model takes {self.in_chans} channels, slices have {x.shape[1]}")
            x = x.expand(-1, self.in_chans, -1, -1)
        flips = TTA_FLIPS if self.tta else TTA_FLIPS[:1]
        total = None
        for dims in flips:
            logits = model(torch.flip(x, dims) if dims else x).float()
            p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total + p
        probs = total / len(flips)
        if self.num_classes is not None and max(2, probs.shape[1]) != self.num_classes:
            raise ValueError(
                f"model returned {probs.shape[1]} class channel(s), the record lists {self.num_classes} classes"
            )
        return probs

    def infer_batch(self, model: nn.Module, x: torch.Tensor, out_hw: tuple[int, int] | None = None,
                    keep_probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One mini-batch ``(B, C, h, w)`` -> labels ``(B, *out_hw)`` int64 and, if asked,
        probabilities ``(B, K', *out_hw)`` (binary: ``[1 - p, p]``). ``out_hw`` defaults to ``(h, w)``."""
        out_hw = tuple(int(s) for s in (out_hw or x.shape[-2:]))
        probs = self.probabilities(model, x)
        same = tuple(probs.shape[-2:]) == out_hw
        native = probs
        if not same and (self.resample == "probabilities" or keep_probabilities):
            native = F.interpolate(probs, size=out_hw, mode="bilinear", align_corners=False)
        if self.resample == "probabilities" or same:
            labels = decide(native, self.threshold)
        else:
            labels = _zoom_labels(decide(probs, self.threshold), out_hw)
        if not keep_probabilities:
            return labels, None
        if native.shape[1] == 1:  # binary single-output model: explicit background channel
            native = torch.cat([1.0 - native, native], dim=1)
        return labels, native

    # ------------------------------------------------------------------ a stack
    @torch.no_grad()
    def __call__(self, model: nn.Module, slices: np.ndarray | torch.Tensor, out_hw: tuple[int, int] | None = None,
                 *, keep_probabilities: bool = False, label_dtype: Any = np.int64, device: torch.device | None = None,
                 progress: Any = None) -> SliceOutput:
        """Segment ``(N, C, h, w)`` slices in mini-batches of ``batch_size`` (model in eval mode).

        ``out_hw``: the native in-plane size labels come back at (default ``(h, w)``).
        ``device``: where batches run (default: where ``slices`` are). ``progress``: an object
        with ``update(n)`` (a tqdm bar).
        """
        n = int(slices.shape[0])
        out_hw = tuple(int(s) for s in (out_hw or slices.shape[-2:]))
        labels = np.empty((n, *out_hw), dtype=label_dtype)
        probs_out = None
        for start in range(0, n, self.batch_size):
            chunk = slices[start:start + self.batch_size]
            x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)) if isinstance(chunk, np.ndarray) else chunk
            if device is not None:
                x = x.to(device)
            lab, probs = self.infer_batch(model, x, out_hw, keep_probabilities)
            stop = start + lab.shape[0]
            labels[start:stop] = lab.cpu().numpy()
            if probs is not None:
                if probs_out is None:
                    probs_out = np.empty((probs.shape[1], n, *out_hw), dtype=np.float16)
                probs_out[:, start:stop] = probs.transpose(0, 1).cpu().numpy().astype(np.float16)
            if progress is not None:
                progress.update(lab.shape[0])
        return SliceOutput(labels, probs_out)
