"""Helpers for the inference tests: fixed fake models, contract checkpoints, scans with non-trivial geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from vmunet.data.preprocessing import make_preprocessing


class ThresholdModel(nn.Module):
    """Fixed fake model: class 1 wherever the (normalized) input exceeds ``threshold``."""

    def __init__(self, threshold: float = 0.5, num_classes: int = 2) -> None:
        super().__init__()
        self.threshold = threshold
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 40.0 * (x[:, :1] - self.threshold)
        if self.num_classes == 1:
            return fg
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def volume_record(image_size=(32, 32), **kw) -> dict:
    """Synapse-like record: window [0, 100], RAS, axial slices, 2 classes."""
    args = dict(in_chans=1, image_size=image_size, class_names=["background", "organ"], num_classes=2,
                intensity={"mode": "window", "window": [0.0, 100.0]}, orientation="RAS", slice_axis=2)
    args.update(kw)
    return make_preprocessing("synapse", **args)


def oblique_affine(spacing=(0.7, 1.3, 2.5), angles=(0.3, -0.2, 0.15), origin=(-40.0, 25.0, 10.0),
                   flips=(1, -1, 1), perm=(0, 1, 2)) -> np.ndarray:
    """voxel -> RAS affine: rotation x anisotropic spacing, with axis flips (negative strides) and a
    permutation of the voxel axes."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = (rz @ ry @ rx)[:, list(perm)]
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(np.asarray(spacing) * np.asarray(flips))
    aff[:3, 3] = origin
    return aff


def structure_volume(shape=(20, 24, 9), seed=0) -> np.ndarray:
    """Background 0, an asymmetric L-shaped structure of intensity 100 (any flip/transpose moves it)."""
    vol = np.zeros(shape, dtype=np.float32)
    x, y, z = shape
    vol[2:x // 2, 3:y - 4, 1:z - 3] = 100.0
    vol[x // 2: x - 3, 3:7, 1:3] = 100.0
    rng = np.random.default_rng(seed)
    vol += rng.uniform(-10, 10, size=shape).astype(np.float32)  # noise well below the threshold
    return vol


def save_checkpoint(path: Path, model: nn.Module, model_name: str, model_kwargs: dict,
                    preprocessing: dict | None) -> Path:
    """A checkpoint in the project contract format (what vmunet.training writes)."""
    record = {"model_name": model_name, "model_kwargs": dict(model_kwargs), "version": "0.1.0"}
    if preprocessing is not None:
        record["preprocessing"] = preprocessing
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "vmunet": record,
            "hyper_parameters": {}}
    torch.save(ckpt, path)
    return path


def write_nifti(path, data, affine, qform=None, qcode=1, scode=2):
    img = nib.Nifti1Image(data, None)
    img.set_sform(affine, code=scode)
    img.set_qform(affine if qform is None else qform, code=qcode)
    nib.save(img, str(path))
    return path


def sitk_image(data_xyz: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """SimpleITK image with the geometry of a voxel -> RAS affine (converted to ITK's LPS)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(data_xyz.transpose(2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img
