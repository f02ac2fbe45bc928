"""Losses, metrics, test protocols, preprocessing and paper settings against the original VM-UNet
code executed (``third_party/VM-UNet``: ``utils.py``, ``engine.py``, ``engine_synapse.py``,
``datasets/dataset.py``, ``configs/config_setting*.py``; see ``original_code.py``).

Each comparison also checks outputs frozen from the original code (VM-UNet commit ``43c495b``,
numpy 2 / scipy 1.17 / medpy 0.5.2 / torch 2.13 CPU) on inputs built from closed formulas, so a
fresh clone without ``third_party/`` still checks the numbers.
"""

from __future__ import annotations

import ast
import inspect
import math
import random
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medpy import metric as medpy_metric
from original_code import load_definitions, vmunet_dir
from scipy import ndimage
from torch import nn

from vmunet.evaluation.metrics import BinaryConfusion, case_metrics, summarize_cases
from vmunet.inference.slicewise import SliceInferer
from vmunet.training.losses import DiceCELoss

SYNAPSE_PAPER = dict(squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5, batch_dice=True, include_background=True)
ISIC_PAPER = dict(squared_pred=False, smooth_nr=1.0, smooth_dr=1.0, batch_dice=False)


def _utils(*names: str) -> dict:
    """Definitions of the original utils.py, with the modules it imports for them."""
    return load_definitions(vmunet_dir() / "utils.py", list(names),
                            {"torch": torch, "nn": nn, "F": F, "np": np, "math": math, "random": random,
                             "metric": medpy_metric, "zoom": ndimage.zoom})


def _sklearn_confusion_matrix(y_true, y_pred):
    """sklearn.metrics.confusion_matrix(y_true, y_pred) (sklearn is not a dependency): rows the
    true, columns the predicted label, over the sorted labels present in either."""
    labels = np.union1d(y_true, y_pred)
    index = {v: i for i, v in enumerate(labels.tolist())}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(out, (np.vectorize(index.get)(y_true), np.vectorize(index.get)(y_pred)), 1)
    return out


class _Replay(nn.Module):
    """A "model" that returns the given outputs one call after another."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = iter(outputs)

    def forward(self, x):
        return next(self.outputs)


class _Logger:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg):
        self.lines.append(str(msg))


def _numbers(line: str, *keys: str) -> dict[str, float]:
    return {k: float(re.search(rf"{k}:? ([-0-9.e]+)", line).group(1)) for k in keys}


@pytest.fixture
def cpu_cuda(monkeypatch):
    """The original moves every tensor with ``.cuda()``: make that a no-op on this CPU machine."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)


# ------------------------------------------------------------------------------------------ losses
def _synapse_loss_input():
    logits = 3 * torch.sin(torch.arange(2 * 9 * 6 * 5, dtype=torch.float64) * 0.7).reshape(2, 9, 6, 5)
    target = (torch.arange(2 * 6 * 5).reshape(2, 6, 5) * 7 % 11).clamp(max=8)  # classes 0..8, 0 and 8 twice as often
    return logits, target


def _isic_loss_input():
    logits = 2 * torch.cos(torch.arange(3 * 1 * 8 * 8, dtype=torch.float64) * 0.3).reshape(3, 1, 8, 8)
    target = ((torch.sin(torch.arange(3 * 8 * 8, dtype=torch.float64) * 0.5) + 1) / 2).reshape(3, 1, 8, 8)
    target = torch.where(target > 0.8, 1.0, torch.where(target < 0.4, 0.0, target))  # soft edges, as resized masks
    target[2] = 0  # an image without lesion
    return logits, target


# The original CeDiceLoss(9, [1, 1]) on _synapse_loss_input and BceDiceLoss(1, 1) on sigmoid of
# _isic_loss_input, float64.
FROZEN_CE_DICE = 4.935054820284872
FROZEN_BCE_DICE = 1.5764616511424503


def _loss_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


def test_losses_equal_the_frozen_original_values():
    logits, target = _synapse_loss_input()
    x_isic, t_isic = _isic_loss_input()
    ce_dice = DiceCELoss(9, lambda_ce=1.0, lambda_dice=1.0, **SYNAPSE_PAPER)(logits, target[:, None])
    bce_dice = DiceCELoss(1, lambda_ce=1.0, lambda_dice=1.0, **ISIC_PAPER)(x_isic, t_isic)
    assert ce_dice.item() == pytest.approx(FROZEN_CE_DICE, abs=1e-10)
    assert bce_dice.item() == pytest.approx(FROZEN_BCE_DICE, abs=1e-10)


def test_losses_and_gradients_equal_the_original_ce_dice_and_bce_dice():
    ns = _utils("BCELoss", "DiceLoss", "nDiceLoss", "CeDiceLoss", "BceDiceLoss")
    logits, target = _synapse_loss_input()
    ce_dice, g1 = _loss_and_grad(lambda x: DiceCELoss(9, lambda_ce=1.0, lambda_dice=1.0, **SYNAPSE_PAPER)(
        x, target[:, None]), logits)
    x_isic, t_isic = _isic_loss_input()
    bce_dice, g2 = _loss_and_grad(lambda x: DiceCELoss(1, lambda_ce=1.0, lambda_dice=1.0, **ISIC_PAPER)(
        x, t_isic), x_isic)
    # configs/config_setting_synapse.py: CeDiceLoss(num_classes, loss_weight=[1, 1]); labels come as float
    ref, r1 = _loss_and_grad(lambda x: ns["CeDiceLoss"](9, [1, 1])(x, target.double()), logits)
    # configs/config_setting.py: BceDiceLoss(wb=1, wd=1) on the model's sigmoid output
    ref_isic, r2 = _loss_and_grad(lambda x: ns["BceDiceLoss"](wb=1, wd=1)(torch.sigmoid(x), t_isic), x_isic)
    assert ref.item() == pytest.approx(FROZEN_CE_DICE, abs=1e-10)
    assert ref_isic.item() == pytest.approx(FROZEN_BCE_DICE, abs=1e-10)
    assert (ce_dice.item(), bce_dice.item()) == pytest.approx((ref.item(), ref_isic.item()), abs=1e-12)
    torch.testing.assert_close(g1, r1, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g2, r2, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------- ISIC pooled metrics
def _isic_outputs():
    """Per-image sigmoid outputs and soft ground-truth masks (batch 1, as the original's test loader)."""
    n = np.arange(5 * 12 * 10, dtype=np.float64).reshape(5, 1, 1, 12, 10)
    prob = (np.sin(n * 0.37) + 1) / 2
    prob[0, 0, 0, 0, :3] = 0.5  # exactly at the threshold: foreground (>= 0.5)
    gt = np.clip((np.cos(n * 0.21) + 1) / 2 * 1.4 - 0.2, 0, 1)  # soft edges, many 0 and 1
    gt[1, 0, 0, 0, :4] = 0.5  # >= 0.5 is lesion
    gt[4] = 0  # an image without lesion
    return prob.astype(np.float32), gt.astype(np.float32)


# The original engine.test_one_epoch on _isic_outputs: miou, f1_or_dsc, accuracy, specificity, sensitivity
# (its log line, full float repr) and its confusion matrix [[TN, FP], [FN, TP]]
FROZEN_ISIC = {"miou": 0.3080568720379147, "f1_or_dsc": 0.47101449275362317, "accuracy": 0.5133333333333333,
               "specificity": 0.49444444444444446, "sensitivity": 0.5416666666666666}
FROZEN_ISIC_CONFUSION = [[178, 182], [110, 130]]
OURS_TO_ORIGINAL = {"iou": "miou", "dice": "f1_or_dsc", "accuracy": "accuracy", "specificity": "specificity",
                    "sensitivity": "sensitivity"}


def test_isic_pooled_metrics_equal_the_frozen_original_output():
    prob, gt = _isic_outputs()
    conf = BinaryConfusion(threshold=0.5)
    for i in range(len(prob)):
        conf.update(prob[i], gt[i], [f"img{i}"])
    assert [[conf.tn, conf.fp], [conf.fn, conf.tp]] == FROZEN_ISIC_CONFUSION
    pooled = conf.pooled()
    for ours, theirs in OURS_TO_ORIGINAL.items():
        assert pooled[ours] == pytest.approx(FROZEN_ISIC[theirs], abs=1e-12), ours


def test_isic_original_test_one_epoch_gives_the_frozen_output(cpu_cuda):
    """engine.test_one_epoch: outputs and masks pooled over the test set, thresholds, ratios."""
    prob, gt = _isic_outputs()
    ns = load_definitions(vmunet_dir() / "engine.py", ["test_one_epoch"],
                          {"np": np, "torch": torch, "tqdm": lambda it: it,
                           "confusion_matrix": _sklearn_confusion_matrix, "save_imgs": lambda *a, **k: None})
    model = _Replay(torch.from_numpy(p) for p in prob)
    loader = [(torch.zeros(1, 3, 12, 10), torch.from_numpy(g)) for g in gt]
    config = types.SimpleNamespace(threshold=0.5, save_interval=10**9, work_dir="", datasets="isic17")
    logger = _Logger()
    ns["test_one_epoch"](loader, model, lambda out, msk: torch.tensor(0.0), logger, config)
    got = _numbers(logger.lines[-1], *FROZEN_ISIC)
    assert got == pytest.approx(FROZEN_ISIC, abs=1e-12)


# ----------------------------------------------------------------------- Synapse test protocol
NATIVE, MODEL = (40, 36), 32  # native slice size and the model's input size (resized both ways)
CLASS_NAMES = ["background", *[f"organ{c}" for c in range(1, 9)]]


def _synapse_model_labels(value: int) -> np.ndarray:
    """What the stand-in model predicts at model size for a slice of constant intensity ``value``
    (= 10 * case + slice): rectangles of organs 1..5, organ 8 on slices >= 3 only (a false positive
    of the case: no ground truth of organ 8 anywhere)."""
    case, k = divmod(value, 10)
    lab = np.zeros((MODEL, MODEL), np.int64)
    for c in range(1, 6):
        if (c + k + case) % 4:  # each organ missing from some slices
            lab[4 * c - 3:4 * c + 1 + k % 2, 3 + k + case:20 + k + 2 * c] = c
    if k >= 3:
        lab[26:30, 2:6 + case] = 8
    return lab


def _synapse_volumes(case: int, depth: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) image (constant per slice: 10 * case + slice) and native-size ground truth: the
    organs 1..5 roughly where the model puts them, organ 7 that the model never predicts (a miss),
    organ 6 nowhere (absent), organ 3 missing from case 1 entirely."""
    image = np.repeat((10.0 * case + np.arange(depth))[:, None, None], NATIVE[0] * NATIVE[1]).reshape(depth, *NATIVE)
    label = np.zeros((depth, *NATIVE), np.int64)
    for k in range(depth):
        for c in range(1, 6):
            if c == 3 and case == 1:
                continue
            label[k, 5 * c - 4:5 * c + 1, 4 + k:22 + k + 2 * c - case] = c
        label[k, 35:38, 30:34] = 7
    return image.astype(np.float32), label


class _ConstantSliceModel(nn.Module):
    """Logits whose argmax is _synapse_model_labels of the slice's (constant) intensity. A constant
    slice stays constant under any resize, so the original's scipy zoom(order=3) and our bicubic
    resize give this model the same input."""

    def forward(self, x):
        out = []
        for s in x:
            lab = torch.from_numpy(_synapse_model_labels(int(round(s[0].mean().item()))))
            out.append(F.one_hot(lab, 9).permute(2, 0, 1).double() * 4.0 - 2.0)
        return torch.stack(out).to(x.dtype)


# The original engine_synapse.val_one_epoch (test_single_volume, calculate_metric_percase) on
# cases 0, 1, 2 of _synapse_volumes with _ConstantSliceModel: mean Dice and mean HD95, then the
# per-class (Dice, HD95) pairs of its log (6 decimals).
FROZEN_SYNAPSE_MEAN = (0.6206559514888299, 0.9440355937288492)
FROZEN_SYNAPSE_PER_CLASS = [(0.797618, 1.471405), (0.760847, 1.471405), (0.858065, 1.0), (0.781313, 1.609476),
                            (0.767405, 2.0), (0.0, 0.0), (0.0, 0.0), (1.0, 0.0)]


def test_synapse_test_protocol_equals_the_frozen_original_output():
    """Slice resize, argmax at model size, label map zoomed back (order 0), per-case per-organ
    Dice / HD95 in voxels under the paper convention, averaged over cases then organs."""
    model = _ConstantSliceModel().eval()
    inferer = SliceInferer(image_size=(MODEL, MODEL), image_interpolation="bicubic", resample="labels",
                           num_classes=9, in_chans=1)  # experiments/paper/synapse.yaml
    rows = []
    for case in range(3):
        image, label = _synapse_volumes(case)
        pred = inferer(model, image[:, None], NATIVE).labels
        rows += [{"case": f"case{case}", **r} for r in case_metrics(pred, label, CLASS_NAMES)]  # voxels, no spacing
    paper = summarize_cases(rows, CLASS_NAMES, "paper")
    per_class = [(paper["per_class"][n]["dice"], paper["per_class"][n]["hd95"]) for n in CLASS_NAMES[1:]]
    assert (paper["mean"]["dice"], paper["mean"]["hd95"]) == pytest.approx(FROZEN_SYNAPSE_MEAN, abs=1e-12)
    assert np.allclose(per_class, FROZEN_SYNAPSE_PER_CLASS, rtol=0, atol=5e-7)
    statuses = {r["status"] for r in rows}
    assert statuses == {"scored", "miss", "false_positive", "absent"}  # every rule of the paper convention used


def test_synapse_original_val_one_epoch_gives_the_frozen_output(cpu_cuda):
    """engine_synapse.val_one_epoch -> utils.test_single_volume -> calculate_metric_percase (medpy)."""
    model = _ConstantSliceModel().eval()
    ns = _utils("calculate_metric_percase", "test_single_volume")
    ns = load_definitions(vmunet_dir() / "engine_synapse.py", ["val_one_epoch"],
                          {"np": np, "torch": torch, "tqdm": lambda it: it, "time": time,
                           "test_single_volume": ns["test_single_volume"]})
    loader = []
    for case in range(3):
        image, label = _synapse_volumes(case)
        loader.append({"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None],
                       "case_name": [f"case{case}"]})
    config = types.SimpleNamespace(num_classes=9, input_size_h=MODEL, input_size_w=MODEL, z_spacing=1)
    logger = _Logger()
    mean_dice, mean_hd95 = ns["val_one_epoch"](loader, loader, model, 0, logger, config, None)
    logged = [_numbers(line, "mean_dice", "mean_hd95") for line in logger.lines if line.startswith("Mean class")]
    assert (mean_dice, mean_hd95) == pytest.approx(FROZEN_SYNAPSE_MEAN, abs=1e-12)
    assert [(d["mean_dice"], d["mean_hd95"]) for d in logged] == FROZEN_SYNAPSE_PER_CLASS  # as logged: %f


# ----------------------------------------------------------------------------- preprocessing
def _dataset_functions() -> dict:
    return load_definitions(vmunet_dir() / "datasets" / "dataset.py", ["random_rot_flip", "random_rotate"],
                            {"np": np, "ndimage": ndimage})


LABEL = np.arange(42).reshape(7, 6)  # non-square: a wrong axis shows
# datasets/dataset.py random_rot_flip(LABEL, LABEL) after np.random.seed(1) (k = 1, axis = 1), and
# random_rotate(LABEL, LABEL) after np.random.seed(0) (angle -20) and np.random.seed(3) (angle 4).
FROZEN_ROT_FLIP_SEED1 = [[41, 35, 29, 23, 17, 11, 5], [40, 34, 28, 22, 16, 10, 4], [39, 33, 27, 21, 15, 9, 3],
                         [38, 32, 26, 20, 14, 8, 2], [37, 31, 25, 19, 13, 7, 1], [36, 30, 24, 18, 12, 6, 0]]
FROZEN_ROTATE = {
    -20: [[0, 6, 1, 2, 0, 0], [0, 12, 7, 8, 9, 4], [0, 19, 14, 15, 16, 11], [24, 25, 20, 21, 16, 17],
          [30, 25, 26, 27, 22, 0], [37, 32, 33, 34, 29, 0], [0, 0, 39, 40, 35, 0]],
    4: [[0, 0, 0, 3, 4, 0], [6, 7, 8, 9, 10, 0], [12, 13, 14, 15, 16, 0], [18, 19, 20, 21, 22, 23],
        [0, 25, 26, 27, 28, 29], [0, 31, 32, 33, 34, 35], [0, 37, 38, 0, 0, 0]],
}


def test_synapse_paper_augmentation_equals_the_frozen_original_output():
    from vmunet.data.transforms import rot_flip, rotate_nearest

    assert rot_flip(LABEL[None], 1, 1)[0].tolist() == FROZEN_ROT_FLIP_SEED1
    for angle, frozen in FROZEN_ROTATE.items():
        assert rotate_nearest(LABEL[None], angle)[0].tolist() == frozen


def test_synapse_paper_augmentation_equals_the_original_functions():
    from vmunet.data.transforms import rot_flip, rotate_nearest

    ns = _dataset_functions()
    image = np.cos(np.arange(42.0) * 0.7).reshape(7, 6).astype(np.float32)
    for seed in range(4):
        np.random.seed(seed)
        k, axis, angle = np.random.randint(0, 4), np.random.randint(0, 2), None
        np.random.seed(seed)
        ref_img, ref_lab = ns["random_rot_flip"](image, LABEL)
        assert np.array_equal(rot_flip(image[None], k, axis)[0], ref_img)
        assert np.array_equal(rot_flip(LABEL[None], k, axis)[0], ref_lab)
        if seed == 1:
            assert ref_lab.tolist() == FROZEN_ROT_FLIP_SEED1
        np.random.seed(seed)
        angle = np.random.randint(-20, 20)
        np.random.seed(seed)
        ref_img, ref_lab = ns["random_rotate"](image, LABEL)
        assert np.array_equal(rotate_nearest(image[None], angle)[0], ref_img)
        assert np.array_equal(rotate_nearest(LABEL[None], angle)[0], ref_lab)
        if angle in FROZEN_ROTATE:
            assert ref_lab.tolist() == FROZEN_ROTATE[angle]


# utils.myNormalize('isic17', train=True) of _isic_image(): its first row (H index 0), 6 decimals, and its sum
FROZEN_MYNORMALIZE_ROW0 = [[255.0, 205.307692, 94.153846], [6.538462, 6.538462, 96.769231],
                           [206.615385, 255.0, 204.0], [92.846154, 5.230769, 7.846154]]


def _isic_image() -> np.ndarray:
    """An (H, W, C) RGB image of integer values, as the original reads it (PIL -> numpy)."""
    return (np.cos(np.arange(5 * 4 * 3).reshape(5, 4, 3) * 0.9) * 100 + 130).round()


def _paper_normalized(rgb: np.ndarray) -> np.ndarray:
    """The ISIC paper pipeline (no augmentation) on an (H, W, C) image, back as (H, W, C)."""
    from monai.transforms import Compose

    from vmunet.data.transforms import isic_transforms

    h, w = rgb.shape[:2]
    tf = Compose(isic_transforms((h, w), [0.0] * 3, [1.0] * 3, augment=False, paper=True))
    out = tf({"image": rgb.transpose(2, 0, 1).astype(np.float32), "label": np.zeros((1, h, w), np.float32)})
    return np.asarray(out["image"]).transpose(1, 2, 0)


def test_isic_paper_normalization_equals_the_frozen_original_output():
    np.testing.assert_allclose(_paper_normalized(_isic_image())[0], FROZEN_MYNORMALIZE_ROW0, rtol=0, atol=2e-4)


def test_isic_paper_normalization_equals_the_original_mynormalize():
    rgb = _isic_image()
    ours = _paper_normalized(rgb)  # float32
    ns = load_definitions(vmunet_dir() / "utils.py", ["myNormalize"], {"np": np})
    for name in ("isic17", "isic18"):
        for train in (True, False):  # different z-score constants: they cancel in the min-max
            ref, _ = ns["myNormalize"](name, train=train)((rgb, None))
            np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4)
    np.testing.assert_allclose(ns["myNormalize"]("isic17", train=True)((rgb, None))[0][0], FROZEN_MYNORMALIZE_ROW0,
                               rtol=0, atol=5e-7)


# --------------------------------------------------------------------------- paper settings
def _config_values(path: Path) -> dict:
    """The literal settings of the original ``setting_config`` class, following its ``if opt ==
    ...`` / ``if sch == ...`` branches as Python would (non-literal values are left out)."""
    cls = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef))
    values: dict = {}

    def run(body):
        for node in body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
            elif isinstance(node, ast.If):
                test = node.test
                if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                        and isinstance(test.ops[0], ast.Eq) and test.left.id in values):
                    run(node.body if values[test.left.id] == ast.literal_eval(test.comparators[0]) else node.orelse)

    run(cls.body)
    return values


SETTINGS = ["network", "num_classes", "input_size_h", "input_size_w", "seed", "batch_size", "epochs",
            "threshold", "opt", "lr", "betas", "eps", "weight_decay", "amsgrad", "sch", "T_max", "eta_min"]
# configs/config_setting.py (ISIC; ``datasets = 'isic18'``, edited to 'isic17' for ISIC 2017) and
# configs/config_setting_synapse.py, the keys above plus model_config and loss_weight.
FROZEN_CONFIG = {
    "isic": {"network": "vmunet", "num_classes": 1, "input_size_h": 256, "input_size_w": 256, "seed": 42,
             "batch_size": 32, "epochs": 300, "threshold": 0.5, "opt": "AdamW", "lr": 0.001, "betas": (0.9, 0.999),
             "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False, "sch": "CosineAnnealingLR", "T_max": 50,
             "eta_min": 1e-05},
    "synapse": {"network": "vmunet", "num_classes": 9, "input_size_h": 224, "input_size_w": 224, "seed": 42,
                "batch_size": 32, "epochs": 300, "threshold": 0.5, "opt": "AdamW", "lr": 0.001,
                "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
                "sch": "CosineAnnealingLR", "T_max": 100, "eta_min": 1e-05, "loss_weight": [1, 1]},
}
FROZEN_MODEL_CONFIG = {"depths": [2, 2, 2, 2], "depths_decoder": [2, 2, 2, 1], "drop_path_rate": 0.2,
                       "load_ckpt_path": "./pre_trained_weights/vmamba_small_e238_ema.pth"}


def _paper_yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[2] / "experiments" / "paper" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ["synapse", "isic17", "isic18"])
def test_paper_config_settings_equal_the_original_config_files(name):
    """The optimiser, schedule, run length, sizes, loss weights and model of experiments/paper/*.yaml
    against the original configs. (tests/training/test_paper_configs.py checks that the CLI
    resolves these files to the same values.)"""
    from vmunet.models.registry import model_config

    kind = "synapse" if name == "synapse" else "isic"
    frozen = FROZEN_CONFIG[kind]
    cfg = _paper_yaml(name)
    model, data = cfg["model"], cfg["data"]["init_args"]
    ours = {"lr": model["lr"], "betas": tuple(model["betas"]), "weight_decay": model["weight_decay"],
            "T_max": model["t_max"], "eta_min": model["eta_min"], "epochs": cfg["trainer"]["max_epochs"],
            "batch_size": data["batch_size"], "seed": cfg["seed_everything"], "input_size_h": data["image_size"],
            "sch": {"cosine": "CosineAnnealingLR"}[model["scheduler"]]}
    assert ours == {k: frozen[k] for k in ours}
    from vmunet.training.module import SegmentationModule

    default_warmup = inspect.signature(SegmentationModule.__init__).parameters["warmup_epochs"].default
    assert model.get("warmup_epochs", default_warmup) == 0 and model["model_name"] == frozen["network"]
    # torch.optim.AdamW defaults (the module passes lr, betas, weight_decay only): eps 1e-8, amsgrad False
    adamw = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    assert adamw.defaults["eps"] == frozen["eps"] and adamw.defaults["amsgrad"] is frozen["amsgrad"]
    if kind == "synapse":
        assert [model["lambda_ce"], model["lambda_dice"]] == frozen["loss_weight"]
    else:
        assert model["threshold"] == frozen["threshold"]
    arch = model_config(model["model_name"])
    assert {"depths": list(arch["depths"]), "depths_decoder": list(arch["depths_decoder"]),
            "drop_path_rate": arch["drop_path_rate"]} == {k: FROZEN_MODEL_CONFIG[k] for k in
                                                                  ("depths", "depths_decoder", "drop_path_rate")}
    assert Path(model["weights"]).name == Path(FROZEN_MODEL_CONFIG["load_ckpt_path"]).name
    assert model["weights_entry"] == "model"  # VMUNet.load_from reads checkpoint['model'], not 'model_ema'


@pytest.mark.parametrize("kind", ["synapse", "isic"])
def test_original_config_files_give_the_frozen_settings(kind):
    frozen = FROZEN_CONFIG[kind]
    path = vmunet_dir() / "configs" / ("config_setting_synapse.py" if kind == "synapse" else "config_setting.py")
    values = _config_values(path)
    assert {k: values[k] for k in frozen} == frozen
    assert {k: values["model_config"][k] for k in FROZEN_MODEL_CONFIG} == FROZEN_MODEL_CONFIG
