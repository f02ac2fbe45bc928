"""Pieces every model of the family shares: the constructor's argument checks (one parser of the
per-stage scan orders), the input check with optional padding to the size multiple, switching the
selective-scan backend, and the VMamba v0 encoder of the models that keep it at the top level."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers import SCAN_MODULES, PatchEmbed
from vmunet.layers.stage import vmamba_encoder_stages
from vmunet.ops.cross_scan import check_directions
from vmunet.ops.selective_scan import check_backend_name

#: ``directions`` of a model: one list of scan-order names for every stage, or one list per stage
Directions = Sequence[str] | Sequence[Sequence[str]]


def int_list(name: str, value: int | Sequence[int], n: int | None = None, *, model: str = "VMUNet") -> list[int]:
    """``value`` as a list of ints: an int repeated ``n`` times, or a sequence of exactly ``n``."""
    if isinstance(value, int):
        if n is None:
            raise TypeError(f"{model}: {name} must be a list of ints, got {value!r}")
        return [value] * n
    values = [int(v) for v in value]
    if n is not None and len(values) != n:
        raise ValueError(f"{model}: {name} must have {n} entries (one per stage), got {values}")
    return values


def check_model_args(model: str, *, num_classes: int, in_chans: int, depths: Sequence[int],
                     dims: int | Sequence[int], drop_path_rate: float, num_stages: int | None = None,
                     why_stages: str = "") -> tuple[list[int], list[int]]:
    """The checks every model's constructor starts with; returns (depths, dims) as lists, ``dims``
    given as an int meaning ``dims * 2**i`` per stage. ``num_stages`` fixes the number of stages
    (``why_stages`` says why in the error)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"{model}: in_chans must be a positive int, got {in_chans!r}")
    depths = int_list("depths", depths, model=model)
    n = len(depths)
    if num_stages is not None and n != num_stages:
        raise ValueError(f"{model}: depths must have {num_stages} entries{why_stages}, got {depths}")
    if isinstance(dims, int):
        dims = [dims * 2**i for i in range(n)]
    dims = int_list("dims", dims, n, model=model)
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"{model}: drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return depths, dims


def stage_directions(directions: Directions, model: str, encoder: int, decoder: int = 0,
                     note: str = "") -> list[tuple[str, ...]]:
    """Scan orders of each VSS stage of ``model``: ``encoder + decoder`` tuples, the encoder stages
    shallow to deep, then the decoder stages deepest first.

    ``directions`` is one list of order names for every stage (``["h", "v", "h_flip", "v_flip"]``)
    or one list per VSS stage, ``encoder + decoder`` lists in that order; ``note`` says, in the
    error, which parts of the model have no VSS stage.
    """
    if isinstance(directions, str) or not isinstance(directions, Sequence) or not directions:
        raise ValueError(f"{model}: directions must be a list of scan-order names or one such list per "
                         f"stage, got {directions!r}")
    total = encoder + decoder
    nested = [not isinstance(d, str) and isinstance(d, Sequence) for d in directions]
    try:
        if not any(nested):
            return [check_directions(directions)] * total
        if not all(nested) or len(directions) != total:
            stages = f"{encoder} encoder" + (f", then {decoder} decoder, deepest first" if decoder else "")
            raise ValueError(
                f"expected one list of names for all stages or {total} lists (one per stage: {stages}{note}), "
                f"got {len(directions)} entries of which {sum(nested)} are lists")
        return [check_directions(d) for d in directions]
    except (ValueError, TypeError) as err:
        raise ValueError(f"{model}: directions: {err}") from None


def set_scan_backend(model: nn.Module, backend: str) -> None:
    """Switch the selective-scan backend of every SS2D and Mamba block in ``model``."""
    check_backend_name(backend, "scan_backend")
    for m in model.modules():
        if isinstance(m, SCAN_MODULES):
            m.scan_backend = backend


def check_and_pad(x: Tensor, *, name: str, in_chans: int, multiple: int, pad: bool) -> tuple[Tensor, int, int]:
    """Check ``x`` is (B, in_chans, H, W) with H, W multiples of ``multiple`` -- or zero-pad it at
    the bottom/right when ``pad`` -- and return (x, H, W), H and W the sizes to crop back to."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{name} expects input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if (H % multiple or W % multiple) and not pad:
        raise ValueError(
            f"{name}: input height and width must be multiples of {multiple}, got {H}x{W}; "
            f"resize the input or build the model with pad_to_multiple=True"
        )
    pad_h, pad_w = -H % multiple, -W % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, H, W


class VSSModel(nn.Module, metaclass=ABCMeta):
    """Base of the family's models (errors name the class): the input check and padding, the
    scan-backend switch, the per-stage scan orders and, for the models that keep VMamba v0's
    encoder at the top level under its key names (``patch_embed``, ``pos_drop``, ``layers``),
    building and running that encoder."""

    def __init__(self, num_classes: int, in_chans: int, *, pad_to_multiple: bool, size_multiple: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.pad_to_multiple = pad_to_multiple
        self.size_multiple = size_multiple

    @classmethod
    @abstractmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        """(encoder, decoder, note): how many VSS stages the model has for ``num_stages`` entries of
        ``depths`` -- the length of a per-stage ``directions`` -- and what has none (for errors)."""

    @classmethod
    def parse_directions(cls, directions: Directions, num_stages: int) -> list[tuple[str, ...]]:
        """The scan orders of each VSS stage (see :func:`stage_directions`); ``ValueError`` naming
        ``directions`` and the expected count otherwise."""
        return stage_directions(directions, cls.__name__, *cls.vss_stage_counts(num_stages))

    def set_scan_backend(self, backend: str) -> None:
        """Switch the selective-scan backend of every SS2D and Mamba block ("auto" | "torch" | "numba" | "ref" |
        "cuda" | "triton")."""
        set_scan_backend(self, backend)

    def check_and_pad(self, x: Tensor) -> tuple[Tensor, int, int]:
        """:func:`check_and_pad` with this model's channels, size multiple and padding choice."""
        return check_and_pad(x, name=type(self).__name__, in_chans=self.in_chans, multiple=self.size_multiple,
                             pad=self.pad_to_multiple)

    def build_encoder(self, depths: Sequence[int], dims: Sequence[int], *, patch_size: int, drop_rate: float,
                      drop_path_rate: float, directions: Sequence[Sequence[str]], num_built: int | None = None,
                      use_checkpoint: bool = False, **block_kwargs: Any) -> None:
        """VMamba v0's encoder as ``patch_embed``, ``pos_drop`` and ``layers`` (stages with their
        ``downsample``; see :func:`vmunet.layers.stage.vmamba_encoder_stages`)."""
        self.patch_embed = PatchEmbed(self.in_chans, dims[0], patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers, _ = vmamba_encoder_stages(depths, dims, drop_path_rate, directions, num_built=num_built,
                                               use_checkpoint=use_checkpoint, **block_kwargs)

    def forward_encoder(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, C, H, W) -> the last built stage's output (channels-last) and the input of every
        built stage."""
        x = self.pos_drop(self.patch_embed(x))
        inputs = []
        for layer in self.layers:
            inputs.append(x)
            x = layer(x)
        return x, inputs
