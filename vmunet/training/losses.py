"""Training loss: cross-entropy + Dice, with the knobs that tell the papers' losses apart.

Per channel ``c`` with probabilities ``p`` (softmax over classes, or sigmoid for one output
channel) and one-hot targets ``g``, summed over pixels (and over the batch with ``batch_dice``)::

    dice_c = 1 - (2 * sum(p * g) + smooth_nr) / (sum(p) + sum(g) + smooth_dr)          # plain
    dice_c = 1 - (2 * sum(p * g) + smooth_nr) / (sum(p**2) + sum(g**2) + smooth_dr)    # squared_pred

averaged over channels (and samples without ``batch_dice``); the total is
``lambda_ce * CE + lambda_dice * Dice``, CE the mean pixel cross-entropy (binary: BCE on logits).
Class weights follow MONAI's ``DiceCELoss``: CE weights and each channel's Dice term multiplied by
its weight before the mean (binary: BCE's ``pos_weight`` only), so the default settings give
MONAI's ``DiceCELoss`` values (tested).

Written out instead of calling MONAI because MONAI >= 1.5 computes the squared-denominator
intersection as ``(|p|^2 + |g|^2 - |p - g|^2) / 2`` with a float32 one-hot, which is exact only to
about 1e-7 even in float64; the formulas above are the original ones term by term.

The original VM-UNet losses (``utils.py``) are exactly two settings of it:

* Synapse ``CeDiceLoss(9, loss_weight=[1, 1])``: softmax, ``squared_pred=True``, smoothing
  ``1e-5`` / ``1e-5``, Dice over the whole batch, background included.
* ISIC ``BceDiceLoss(wb=1, wd=1)``: sigmoid, plain denominator, smoothing ``1`` / ``1``, Dice per
  sample then averaged. The original applies ``nn.BCELoss`` to sigmoid outputs, which clamps each
  log term at -100; BCE on the logits here is the same value wherever the sigmoid does not
  saturate in float32 (|logit| below about 16) and stays finite and differentiable beyond.

``tests/training/test_train_losses.py`` checks both against the original code, copied there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DiceCELoss(nn.Module):
    """``lambda_ce * CE + lambda_dice * Dice`` on logits (N, K, H, W); see the module docstring.

    Targets: (N, 1, H, W) class indices for ``K > 1``; 0/1 floats of the logits' shape for ``K == 1``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        lambda_ce: float = 1.0,
        lambda_dice: float = 1.0,
        squared_pred: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch_dice: bool = True,
        include_background: bool = True,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if smooth_nr < 0 or smooth_dr < 0:
            raise ValueError(f"Dice smoothing terms must be >= 0, got smooth_nr={smooth_nr}, smooth_dr={smooth_dr}")
        if lambda_ce < 0 or lambda_dice < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda_ce={lambda_ce}, lambda_dice={lambda_dice}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights: expected {num_classes} entries, got {len(class_weights)}")
        self.num_classes = num_classes
        self.lambda_ce, self.lambda_dice = float(lambda_ce), float(lambda_dice)
        self.squared_pred, self.batch_dice = bool(squared_pred), bool(batch_dice)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.include_background = bool(include_background)
        weight = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"loss expects {self.num_classes} output channels, got logits of shape {tuple(logits.shape)}")
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        if self.num_classes == 1:
            onehot = target.to(logits.dtype)
            ce = F.binary_cross_entropy_with_logits(logits, onehot, pos_weight=weight)
            probs = torch.sigmoid(logits)
        else:
            index = target[:, 0].long()
            ce = F.cross_entropy(logits, index, weight=weight)
            probs = torch.softmax(logits, dim=1)
            onehot = F.one_hot(index, self.num_classes).movedim(-1, 1).to(logits.dtype)
        dice = self.dice_terms(probs, onehot)
        if weight is not None and self.num_classes > 1:  # binary: the weight is BCE's pos_weight only
            dice = dice * (weight if self.include_background else weight[1:])
        return self.lambda_ce * ce + self.lambda_dice * dice.mean()

    def dice_terms(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """``1 - dice`` per channel (``batch_dice``) or per (sample, channel)."""
        if not self.include_background and self.num_classes > 1:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = [0, *range(2, probs.ndim)] if self.batch_dice else list(range(2, probs.ndim))
        intersection = (probs * onehot).sum(dims)
        if self.squared_pred:
            denominator = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
        else:
            denominator = probs.sum(dims) + onehot.sum(dims)
        return 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)

