"""The configured Dice + CE loss against the original VM-UNet losses, written out here.

The classes below are copied from VM-UNet ``utils.py`` (github.com/JCruan519/VM-UNet) with only
formatting changed: ``BCELoss``/``DiceLoss``/``BceDiceLoss`` (ISIC) and ``nDiceLoss``/``CeDiceLoss``
(Synapse). Values and gradients must agree in float32 and float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vmunet.training.losses import DiceCELoss


# ------------------------------------------------------------------------------ original VM-UNet
class OrigBCELoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.bceloss = nn.BCELoss()

    def forward(self, pred, target):
        size = pred.size(0)
        return self.bceloss(pred.view(size, -1), target.view(size, -1))


class OrigDiceLoss(nn.Module):
    def forward(self, pred, target):
        smooth = 1
        size = pred.size(0)
        pred_ = pred.view(size, -1)
        target_ = target.view(size, -1)
        intersection = pred_ * target_
        dice_score = (2 * intersection.sum(1) + smooth) / (pred_.sum(1) + target_.sum(1) + smooth)
        return 1 - dice_score.sum() / size


class OrigBceDiceLoss(nn.Module):
    def __init__(self, wb=1, wd=1):
        super().__init__()
        self.bce, self.dice, self.wb, self.wd = OrigBCELoss(), OrigDiceLoss(), wb, wd

    def forward(self, pred, target):
        return self.wd * self.dice(pred, target) + self.wb * self.bce(pred, target)


class OrigNDiceLoss(nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def _one_hot_encoder(self, input_tensor):
        return torch.cat([(input_tensor == i).unsqueeze(1) for i in range(self.n_classes)], dim=1).float()

    def _dice_loss(self, score, target):
        target = target.float()
        smooth = 1e-5
        intersect = torch.sum(score * target)
        y_sum = torch.sum(target * target)
        z_sum = torch.sum(score * score)
        return 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)

    def forward(self, inputs, target, softmax=False):
        if softmax:
            inputs = torch.softmax(inputs, dim=1)
        target = self._one_hot_encoder(target)
        loss = 0.0
        for i in range(self.n_classes):
            loss += self._dice_loss(inputs[:, i], target[:, i])
        return loss / self.n_classes


class OrigCeDiceLoss(nn.Module):
    def __init__(self, num_classes, loss_weight=(0.4, 0.6)):
        super().__init__()
        self.celoss = nn.CrossEntropyLoss()
        self.diceloss = OrigNDiceLoss(num_classes)
        self.loss_weight = loss_weight

    def forward(self, pred, target):
        loss_ce = self.celoss(pred, target[:].long())
        loss_dice = self.diceloss(pred, target, softmax=True)
        return self.loss_weight[0] * loss_ce + self.loss_weight[1] * loss_dice


# ------------------------------------------------------------------------------ comparisons
SYNAPSE_PAPER = dict(squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5, batch_dice=True, include_background=True)
ISIC_PAPER = dict(squared_pred=False, smooth_nr=1.0, smooth_dr=1.0, batch_dice=False)


def _value_and_grad(fn, logits):
    x = logits.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.4, 0.6)])
def test_synapse_paper_loss_equals_original_ce_dice(dtype, weights):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 9, 12, 10, generator=g)).to(dtype)
    target = torch.randint(0, 9, (3, 12, 10), generator=g)
    target[:, :2] = 0  # plenty of background, one class possibly absent from the batch
    ours = DiceCELoss(9, lambda_ce=weights[0], lambda_dice=weights[1], **SYNAPSE_PAPER)
    orig = OrigCeDiceLoss(9, loss_weight=weights)
    v1, g1 = _value_and_grad(lambda x: ours(x, target[:, None]), logits)
    v2, g2 = _value_and_grad(lambda x: orig(x, target.to(dtype)), logits)  # the original feeds float labels
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert v1.item() == pytest.approx(v2.item(), abs=tol)
    torch.testing.assert_close(g1, g2, atol=tol, rtol=1e-5 if dtype == torch.float32 else 1e-10)
    # the knob matters: the plain denominator gives another value on the same input
    plain = DiceCELoss(9, lambda_ce=weights[0], lambda_dice=weights[1], **{**SYNAPSE_PAPER, "squared_pred": False})
    assert abs(plain(logits, target[:, None]).item() - v2.item()) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_isic_paper_loss_equals_original_bce_dice(dtype):
    g = torch.Generator().manual_seed(1)
    # |logit| < ~8: in float32 the original BCELoss-on-sigmoid loses precision as 1 - p nears 0
    logits = (2 * torch.randn(4, 1, 16, 16, generator=g)).to(dtype)
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.6).to(dtype)
    target[3] = 0  # an image without lesion: per-sample smoothing decides its Dice
    ours = DiceCELoss(1, lambda_ce=1.0, lambda_dice=1.0, **ISIC_PAPER)
    orig = OrigBceDiceLoss(wb=1, wd=1)
    v1, g1 = _value_and_grad(lambda x: ours(x, target), logits)
    v2, g2 = _value_and_grad(lambda x: orig(torch.sigmoid(x), target), logits)  # the original model ends in sigmoid
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert v1.item() == pytest.approx(v2.item(), abs=tol)
    torch.testing.assert_close(g1, g2, atol=tol, rtol=1e-5 if dtype == torch.float32 else 1e-10)
    # batch Dice instead of per-sample Dice is a different loss here
    batch = DiceCELoss(1, **{**ISIC_PAPER, "batch_dice": True})
    assert abs(batch(logits, target).item() - v2.item()) > 1e-3


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_default_settings_and_class_weights_equal_monai_dice_ce(binary, batch_dice):
    from monai.losses import DiceCELoss as MonaiDiceCELoss

    g = torch.Generator().manual_seed(3)
    k = 1 if binary else 4
    logits = 2 * torch.randn(2, k, 10, 9, generator=g)
    if binary:
        target = (torch.rand(2, 1, 10, 9, generator=g) > 0.5).float()
        weights = [2.5]
        ref_kwargs = dict(sigmoid=True)
    else:
        target = torch.randint(0, k, (2, 1, 10, 9), generator=g)
        weights = [0.5, 1.0, 2.0, 3.0]
        ref_kwargs = dict(softmax=True, to_onehot_y=True)
    for w in (None, weights):
        ours = DiceCELoss(k, batch_dice=batch_dice, class_weights=w, lambda_ce=0.7, lambda_dice=1.3)
        ref = MonaiDiceCELoss(batch=batch_dice, lambda_ce=0.7, lambda_dice=1.3,
                              weight=None if w is None else torch.tensor(w), **ref_kwargs)
        assert ours(logits, target).item() == pytest.approx(ref(logits, target).item(), abs=1e-6)
    if not binary:
        no_bg = DiceCELoss(k, include_background=False, batch_dice=batch_dice, class_weights=weights)
        ref = MonaiDiceCELoss(include_background=False, batch=batch_dice, weight=torch.tensor(weights), **ref_kwargs)
        assert no_bg(logits, target).item() == pytest.approx(ref(logits, target).item(), abs=1e-6)


def test_module_builds_the_loss_from_its_hyperparameters():
    from vmunet.training.module import SegmentationModule

    m = SegmentationModule("vmunet_test", num_classes=1, in_chans=3, batch_dice=False, dice_squared_pred=False,
                           dice_smooth_nr=1.0, dice_smooth_dr=1.0)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    assert m.loss_fn(logits, target).item() == pytest.approx(OrigBceDiceLoss()(torch.sigmoid(logits), target).item(),
                                                             abs=1e-6)
    with pytest.raises(ValueError, match="smoothing terms must be >= 0"):
        DiceCELoss(2, smooth_nr=-1.0)


def test_unequal_smoothing_terms_equal_monai():
    # smooth_nr goes to the numerator and smooth_dr to the denominator (the papers' settings have
    # them equal, so only unequal terms tell them apart)
    from monai.losses import DiceCELoss as MonaiDiceCELoss

    g = torch.Generator().manual_seed(4)
    logits = 2 * torch.randn(2, 3, 8, 7, generator=g)
    target = torch.randint(0, 2, (2, 1, 8, 7), generator=g)  # class 2 absent: smoothing decides its term
    ours = DiceCELoss(3, smooth_nr=0.0, smooth_dr=1.0, batch_dice=False)(logits, target)
    ref = MonaiDiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=1.0, batch=False)(logits, target)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    swapped = DiceCELoss(3, smooth_nr=1.0, smooth_dr=0.0, batch_dice=False)(logits, target)
    assert abs(swapped.item() - ours.item()) > 1e-2
