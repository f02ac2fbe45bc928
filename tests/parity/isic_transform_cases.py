"""VM-UNet's ISIC data chain and vmunet's ``normalization: paper`` chain on the same files, with the
random draws forced, for ``test_original_isic_transforms.py`` and ``freeze_isic_transforms.py``.

The original chain (VM-UNet ``43c495b``, run as it is): ``datasets/dataset.py``'s ``NPY_datasets``
reads the PNG files (PIL), then the ``train_transformer`` / ``test_transformer`` of
``configs/config_setting.py`` (the ``transforms.Compose([...])`` expressions themselves, evaluated
with ``datasets = 'isic17'``) run ``utils.py``'s ``myNormalize``, ``myToTensor``,
``myRandomHorizontalFlip``, ``myRandomVerticalFlip``, ``myRandomRotation`` and ``myResize`` on
torchvision 0.14.0's tensor functions (``original_code.torchvision_0_14``). Its ``random`` module is
replaced by :class:`ScriptedRandom`, which answers ``random.random()`` with 0.0 (branch taken, as
``0.0 < p``) or 0.99 (not taken) and ``random.uniform(0, 360)`` with the case's angle.

Ours: :class:`vmunet.data.isic.ISICDataModule` (``normalization="paper"``) on the same folder, its
dataset's own transforms (``LoadISICPair`` + ``isic_transforms(paper=True)``), each random
transform's ``randomize`` replaced by one that sets the case's branch (and angle). MONAI's angle x
rotates the other way from torchvision's (clockwise), so torchvision's ``a`` degrees is MONAI's
``-radians(a)``; both pipelines draw uniformly over a full turn, so their distributions agree.
"""

from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

SIZE = (16, 20)  # (h, w) given to myResize / image_size (the paper: 256 x 256)
FROZEN_FILE = Path(__file__).resolve().with_name("frozen") / "original_isic_transforms.npz"


@dataclass(frozen=True)
class Case:
    """One run of the chain: which split's transformer, and the forced draws."""

    name: str
    image_hw: tuple[int, int]  # the PNG's size
    train: bool  # train_transformer (augmentation) or test_transformer (the val/ folder)
    hflip: bool = False
    vflip: bool = False
    angle: float | None = None  # torchvision degrees (counter-clockwise); None: rotation branch not taken


# Angles: random.Random(s).uniform(0, 360), as myRandomRotation draws its angle, for s = 1 and 2,
# and s = 63: the first seed from 0 at which MONAI's default float32 sampling grid (RandRotated's
# ``dtype``) picks other pixels than the original's float64 one on this 30 x 37 image.
CASES = (
    Case("test_downsize", (30, 37), train=False),
    Case("test_upsize", (11, 13), train=False),
    Case("train_no_branch", (30, 37), train=True),
    Case("train_hflip", (30, 37), train=True, hflip=True),
    Case("train_vflip", (30, 37), train=True, vflip=True),
    Case("train_rotate", (30, 37), train=True, angle=48.37112788046444),
    Case("train_hflip_vflip_rotate", (30, 37), train=True, hflip=True, vflip=True, angle=344.17233788012976),
    Case("train_rotate_float32_grid_differs", (30, 37), train=True, angle=160.2501210564562),
)
FLOAT32_GRID_CASE = "train_rotate_float32_grid_differs"


def image_and_mask(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image (h, w, 3) uint8 with values 40..220 from a closed formula (min-max is then no
    identity), and a 0/255 mask: an off-centre ellipse and one pixel near a corner (no symmetry)."""
    n = np.arange(h * w * 3)
    image = (n * 37 % 181 + 40).reshape(h, w, 3).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - 0.45 * h) / (0.3 * h)) ** 2 + ((xx - 0.4 * w) / (0.25 * w)) ** 2 < 1
    inside[1, w - 3] = True
    return image, np.where(inside, 255, 0).astype(np.uint8)


def write_folder(root: Path, case: Case) -> Path:
    """``root`` in the VM-UNet layout, ``train/`` and ``val/`` each holding ``c0.png`` (image, mask)."""
    from PIL import Image

    image, mask = image_and_mask(*case.image_hw)
    for split in ("train", "val"):
        for sub, arr in (("images", image), ("masks", mask)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / split / sub / "c0.png")
    return root


class ScriptedRandom:
    """Stands in for the ``random`` module in the original's namespace: the case's draws, in the
    order ``train_transformer`` makes them (h-flip, v-flip, rotation); ``uniform`` is the angle."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.answers = [0.0 if taken else 0.99 for taken in (case.hflip, case.vflip, case.angle is not None)]
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self.answers.pop(0)

    def uniform(self, a: float, b: float) -> float:
        assert (a, b) == (0, 360), (a, b)  # configs/config_setting.py: myRandomRotation(p=0.5, degree=[0, 360])
        return 0.0 if self.case.angle is None else self.case.angle


def _config_transformer(config_file: Path, name: str, namespace: dict) -> object:
    """The value of ``name = ...`` in the original config class body, evaluated in ``namespace``."""
    cls = next(n for n in ast.parse(config_file.read_text()).body if isinstance(n, ast.ClassDef))
    node = next(n for n in cls.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                and n.targets[0].id == name)
    return eval(compile(ast.Expression(node.value), str(config_file), "eval"), namespace)  # noqa: S307 - pinned original


def original_chain(vmunet_root: Path, torchvision: ModuleType, data_root: Path, case: Case):
    """VM-UNet's ``NPY_datasets(...)[0]`` with its config's transformer: (image, mask) float64
    tensors (3, h, w), (1, h, w); ``engine.py`` casts them with ``.float()`` for the model."""
    import torch
    from original_code import load_definitions
    from PIL import Image

    draws = ScriptedRandom(case)
    ns = load_definitions(vmunet_root / "utils.py",
                          ["myToTensor", "myResize", "myRandomHorizontalFlip", "myRandomVerticalFlip",
                           "myRandomRotation", "myNormalize"],
                          {"torch": torch, "TF": torchvision.functional, "np": np, "random": draws})
    ns.update(transforms=torchvision, datasets="isic17", input_size_h=SIZE[0], input_size_w=SIZE[1])
    key = "train_transformer" if case.train else "test_transformer"
    transformer = _config_transformer(vmunet_root / "configs" / "config_setting.py", key, ns)
    config = type("Config", (), {key: transformer})
    data = load_definitions(vmunet_root / "datasets" / "dataset.py", ["NPY_datasets"],
                            {"Dataset": torch.utils.data.Dataset, "np": np, "os": os, "Image": Image})
    image, mask = data["NPY_datasets"](f"{data_root}/", config, train=case.train)[0]
    assert draws.answers == [] if case.train else draws.calls == 0, "the original drew otherwise than expected"
    return image, mask


def force_draws(compose, case: Case) -> None:
    """Make every random transform of our MONAI ``compose`` take the case's branches."""
    from monai.transforms import RandFlipd, Randomizable, RandRotated

    for t in compose.transforms:
        if isinstance(t, RandFlipd):
            axis = t.flipper.spatial_axis  # of (H, W): 1 flips left-right (TF.hflip), 0 up-down (TF.vflip)
            assert axis in (0, 1), axis
            taken = case.hflip if axis == 1 else case.vflip
            t.randomize = lambda data=None, t=t, taken=taken: setattr(t, "_do_transform", taken)
        elif isinstance(t, RandRotated):
            def rotated(data=None, t=t):
                t._do_transform = case.angle is not None

            def rotate(data=None, r=t.rand_rotate):
                r._do_transform, r.y, r.z = True, 0.0, 0.0
                r.x = -math.radians(case.angle or 0.0)  # torchvision's counter-clockwise degrees

            t.randomize, t.rand_rotate.randomize = rotated, rotate
        elif isinstance(t, Randomizable):
            raise AssertionError(f"{type(t).__name__}: a random transform these cases do not force")


def our_chain(data_root: Path, case: Case, grid_dtype: type | None = None):
    """vmunet's ISIC data module (``normalization="paper"``) on ``data_root``, item 0 of the
    train (augmenting) or val dataset: (image, label) float32 (3, h, w), (1, h, w).
    ``grid_dtype``: override the rotation's resampling dtype (to show what float32 would give)."""
    from monai.transforms import RandRotated

    from vmunet.data.isic import ISICDataModule

    dm = ISICDataModule(str(data_root), batch_size=1, num_workers=0, image_size=SIZE, normalization="paper",
                        check_files=False)
    ds = dm._dataset("train" if case.train else "val", augment=case.train)
    force_draws(ds.transform, case)
    if grid_dtype is not None:
        for t in ds.transform.transforms:
            if isinstance(t, RandRotated):
                t.dtype = (grid_dtype,) * len(t.dtype)
    item = ds[0]
    return item["image"], item["label"]
