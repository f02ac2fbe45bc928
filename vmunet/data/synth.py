"""Synthetic data sets in the exact on-disk formats of the real ones, with learnable content.

Volumes are abdominal "phantoms": a body ellipse with ellipsoid organs at roughly anatomical
places (RAS: liver on the right, spleen on the left, aorta posterior), each with its own CT
intensity plus noise, so a small model separates them within minutes on a CPU. ISIC images are
skin-coloured with one dark irregular blob "lesion". Everything is seeded.

Python API (used by the demo, tests and notebooks) and ``vmunet synth {synapse,isic,nifti}``:

* :func:`synth_synapse` - Synapse format (or, with ``raw=True``, a raw BTCV-style NIfTI folder).
* :func:`synth_isic` - ISIC in the VM-UNet layout or the official archive layout.
* :func:`synth_nifti` - nnU-Net raw layout or a MONAI Decathlon datalist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data import synapse_format as SF
from vmunet.data.fileio import atomic_path, write_json
from vmunet.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Organ:
    """An ellipsoid organ: in-plane centre/radii as fractions of the half field of view
    (x > 0 = patient right, y > 0 = anterior), axial extent as fractions of the slices, mean CT
    intensity and texture (noise std, HU)."""

    name: str
    btcv: int
    cx: float
    cy: float
    rx: float
    ry: float
    z0: float
    z1: float
    hu: float
    texture: float


# Painted in this order (later ones over earlier). Mean intensities >= 35 HU apart inside the
# Synapse window [-125, 275], and different textures (smooth fluid-filled gallbladder, mottled
# stomach, lobulated pancreas): a model that normalizes patch features (LayerNorm after the patch
# embedding) cannot rely on absolute intensity alone, texture and position keep classes apart.
ORGANS = (
    Organ("liver", 6, 0.40, 0.05, 0.36, 0.40, 0.30, 1.05, 100.0, 8.0),
    Organ("stomach", 7, -0.22, 0.36, 0.26, 0.22, 0.45, 0.95, -30.0, 30.0),
    Organ("spleen", 1, -0.52, -0.02, 0.19, 0.25, 0.40, 1.00, 140.0, 12.0),
    Organ("left_kidney", 3, -0.40, -0.32, 0.17, 0.22, 0.10, 0.62, 215.0, 16.0),
    Organ("right_kidney", 2, 0.40, -0.32, 0.17, 0.22, 0.05, 0.58, 175.0, 5.0),
    Organ("pancreas", 11, -0.08, 0.06, 0.30, 0.14, 0.22, 0.60, 55.0, 25.0),
    Organ("gallbladder", 4, 0.30, 0.40, 0.20, 0.20, 0.25, 0.68, 10.0, 3.0),
    Organ("aorta", 8, 0.00, -0.30, 0.13, 0.13, -0.30, 1.30, 260.0, 4.0),
    # A BTCV organ Synapse does not use (right adrenal gland, id 12): it must become background.
    Organ("right_adrenal", 12, 0.20, -0.50, 0.07, 0.07, 0.55, 0.90, -45.0, 10.0),
)
BODY_HU, AIR_HU, BODY_TEXTURE = -90.0, -1000.0, 5.0


def phantom(size: int, slices: int, rng: np.random.Generator,
            organs: tuple[Organ, ...] = ORGANS) -> tuple[np.ndarray, np.ndarray]:
    """One case in RAS array order (X, Y, Z): (HU float32, label with each organ's ``btcv`` id)."""
    half = size / 2.0
    xs = (np.arange(size) + 0.5 - half) / half  # -1..1, increasing towards patient right (R)
    zs = (np.arange(slices) + 0.5) / slices
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    body_rx, body_ry = rng.uniform(0.85, 0.95), rng.uniform(0.68, 0.78)
    body = (X / body_rx) ** 2 + (Y / body_ry) ** 2 <= 1.0
    hu = np.where(body[..., None], BODY_HU, AIR_HU).astype(np.float32).repeat(slices, axis=2)
    label = np.zeros((size, size, slices), dtype=np.uint8)
    texture = np.full(hu.shape, BODY_TEXTURE, dtype=np.float32)
    for org in organs:
        cx, cy = org.cx + rng.uniform(-0.04, 0.04), org.cy + rng.uniform(-0.04, 0.04)
        rx, ry = org.rx * rng.uniform(0.9, 1.1), org.ry * rng.uniform(0.9, 1.1)
        z0, z1 = org.z0 + rng.uniform(-0.04, 0.04), org.z1 + rng.uniform(-0.04, 0.04)
        zc, zr = (z0 + z1) / 2, (z1 - z0) / 2
        # Super-ellipsoid profile along z: cross-sections stay large until close to the ends.
        u = np.clip(np.abs(zs - zc) / zr, 0, 1)
        scale = (1 - u**4) ** 0.25
        inplane = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2
        mask = (inplane[..., None] <= scale[None, None, :] ** 2) & (scale[None, None, :] > 0) & body[..., None]
        label[mask] = org.btcv
        hu[mask] = org.hu + rng.uniform(-6, 6)
        texture[mask] = org.texture
    hu += rng.normal(0.0, 1.0, size=hu.shape).astype(np.float32) * texture
    return hu, label


def raw_affine(size: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """A CT-like voxel->RAS affine for an array stored L->R / P->A flipped (as DICOM converters do)."""
    fov = 360.0 * rng.uniform(0.9, 1.1)
    sxy, sz = fov / size, float(rng.choice([2.5, 3.0, 5.0]))
    origin = np.array([fov / 2 - rng.uniform(0, 20), fov / 2 + rng.uniform(0, 20), -rng.uniform(300, 500)])
    aff = np.diag([-sxy, -sxy, sz, 1.0])
    aff[:3, 3] = origin
    # NIfTI stores the affine as float32: round now so the raw files and the in-memory conversion
    # of ``synth_synapse(raw=False)`` carry exactly the same geometry.
    return aff.astype(np.float32).astype(np.float64)


def canonical_to_raw(volume: np.ndarray) -> np.ndarray:
    """Store a RAS-ordered array in the flipped (LPS-like) order :func:`raw_affine` describes."""
    return np.ascontiguousarray(volume[::-1, ::-1, :])


def _split_ids(cases: int) -> tuple[list[int], list[int]]:
    """Case ids for N synthetic cases, drawn from the standard split in its 18:12 proportion."""
    if not 2 <= cases <= 30:
        raise ConfigError(f"cases must be between 2 and 30 (BTCV has 30 labelled cases), got {cases}")
    n_test = max(1, round(cases * len(SF.STANDARD_TEST_IDS) / 30))
    n_train = cases - n_test
    return sorted(SF.STANDARD_TRAIN_IDS[:n_train]), sorted(SF.STANDARD_TEST_IDS[:n_test])


def _check_size(size: int, slices: int) -> None:
    if size < 16:
        raise ConfigError(f"size must be >= 16 pixels, got {size}")
    if slices < 4:
        raise ConfigError(f"slices must be >= 4, got {slices}")


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def synth_synapse(out: str | Path, cases: int = 8, size: int = 64, slices: int = 16, seed: int = 0,
                  raw: bool = False) -> dict[str, Any]:
    """Write a synthetic Synapse data set to ``out``.

    ``raw=False``: the standard format (``train_npz/``, ``test_vol_h5/`` with geometry sidecars,
    ``lists/lists_Synapse/``), produced by the same conversion ``prepare synapse`` applies.
    ``raw=True``: a BTCV-style download (``img/imgNNNN.nii.gz`` in HU, ``label/labelNNNN.nii.gz``
    with the 13 BTCV ids, flipped non-identity affine) for ``prepare synapse``.
    Case ids follow the standard split (e.g. 8 cases -> 5 train, 3 test). Returns a summary.
    """
    _check_size(size, slices)
    out = Path(out)
    train_ids, test_ids = _split_ids(cases)
    rng = np.random.default_rng(seed)
    train_slices: list[str] = []
    for cid in sorted(train_ids + test_ids):
        hu, lab = phantom(size, slices, rng)
        aff = raw_affine(size, slices, rng)
        img_raw, lab_raw = canonical_to_raw(hu).astype(np.int16), canonical_to_raw(lab)
        if raw:
            _write_nifti(out / "img" / f"img{cid:04d}.nii.gz", img_raw, aff)
            _write_nifti(out / "label" / f"label{cid:04d}.nii.gz", lab_raw, aff)
            continue
        case = SF.case_name(cid)
        img, label, geom = SF.convert_case(img_raw, lab_raw, aff, f"img{cid:04d}.nii.gz", case)
        if cid in test_ids:
            SF.write_test_case(out, case, img, label, geom)
        else:
            train_slices += SF.write_train_case(out, case, img, label, geom)
    if not raw:
        SF.write_lists(out, train_slices, [SF.case_name(c) for c in test_ids])
    summary = {"out": str(out), "train_cases": [SF.case_name(c) for c in train_ids],
               "test_cases": [SF.case_name(c) for c in test_ids], "size": size, "slices": slices,
               "raw": raw}
    log.debug("synthetic Synapse data: %s", summary)  # `vmunet synth` prints it; callers get it back
    return summary


# --------------------------------------------------------------------------------------------
# ISIC

_ISIC_OFFICIAL_NAMES = {
    "2018": {"train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
             "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
             "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")},
    "2017": {"train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
             "val": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
             "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth")},
}


def lesion_image(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dermoscopy-like RGB uint8 image with one dark irregular lesion, and its 0/1 mask."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    skin = np.array([225, 175, 150]) + rng.uniform(-20, 20, 3)
    shade = 1.0 - 0.15 * (xx**2 + yy**2) + 0.05 * np.sin(3 * xx + rng.uniform(0, 6))
    img = skin[None, None, :] * shade[..., None]
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    r0 = rng.uniform(0.3, 0.5)
    theta, rad = np.arctan2(yy - cy, xx - cx), np.hypot(xx - cx, yy - cy)
    edge = r0 * (1 + sum(rng.uniform(0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                         for k in range(2, 6)))
    mask = rad <= edge
    lesion = np.array([120, 70, 50]) + rng.uniform(-25, 25, 3)
    # Darker towards the centre, like a pigmented lesion.
    depth = np.clip(1 - rad / np.maximum(edge, 1e-6), 0, 1)[..., None]
    img = np.where(mask[..., None], lesion[None, None, :] * (1 - 0.3 * depth), img)
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _save_image(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=95)


def synth_isic(out: str | Path, cases: int = 20, size: int = 64, seed: int = 0,
               layout: str = "vmunet", year: str = "2018", official_splits: bool = False,
               split: float = 0.7) -> dict[str, Any]:
    """Write a synthetic ISIC data set.

    ``layout="vmunet"``: ``{train,val}/{images/<id>.jpg, masks/<id>_segmentation.png}``
    (``split`` of the cases in train), square ``size`` images. ``layout="official"``: the ISIC
    ``year`` archive folders with images of varying size around ``size`` (plus the files the real
    archive ships beside them); ``official_splits=True`` also writes Validation and Test folders
    (60/20/20). Masks are 0/255 PNGs. Returns a summary.
    """
    if layout not in ("vmunet", "official"):
        raise ConfigError(f"layout must be 'vmunet' or 'official', got {layout!r}")
    if year not in _ISIC_OFFICIAL_NAMES:
        raise ConfigError(f"year must be one of {sorted(_ISIC_OFFICIAL_NAMES)}, got {year!r}")
    if cases < 2 or size < 16:
        raise ConfigError(f"need cases >= 2 and size >= 16, got cases={cases}, size={size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    ids = [f"ISIC_{i:07d}" for i in range(cases)]
    if layout == "vmunet" or not official_splits:
        n_train = min(cases - 1, max(1, round(cases * split)))
        splits = {"train": ids[:n_train], "val": ids[n_train:]}
        if layout == "official":
            splits = {"train": ids}
    else:
        a, b = round(cases * 0.6), round(cases * 0.8)
        splits = {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}
    for split_name, split_ids in splits.items():
        for cid in split_ids:
            if layout == "vmunet":
                h = w = size
                img_path = out / split_name / "images" / f"{cid}.jpg"
                mask_path = out / split_name / "masks" / f"{cid}_segmentation.png"
            else:
                h, w = int(size * rng.uniform(1.0, 1.3)), int(size * rng.uniform(1.1, 1.5))
                in_dir, gt_dir = _ISIC_OFFICIAL_NAMES[year][split_name]
                img_path = out / in_dir / f"{cid}.jpg"
                mask_path = out / gt_dir / f"{cid}_segmentation.png"
            image, mask = lesion_image(h, w, rng)
            _save_image(img_path, image)
            _save_image(mask_path, mask * 255)
            if layout == "official" and year == "2017":
                _save_image(out / in_dir / f"{cid}_superpixels.png", np.zeros((h, w, 3), np.uint8))
        if layout == "official":
            (out / in_dir / "ATTRIBUTION.txt").write_text("synthetic data, vmunet synth isic\n")
            (out / gt_dir / "LICENSE.txt").write_text("CC-0\n")
    summary = {"out": str(out), "layout": layout, "year": year,
               "splits": {k: len(v) for k, v in splits.items()}, "size": size}
    log.debug("synthetic ISIC data: %s", summary)
    return summary


# --------------------------------------------------------------------------------------------
# NIfTI folder (nnU-Net raw / Decathlon datalist)

#: Classes of the synthetic NIfTI task (value == index); phantom BTCV ids mapped onto them.
NIFTI_CLASSES = ("background", "liver", "spleen", "kidney")
_NIFTI_FROM_BTCV = {6: 1, 1: 2, 2: 3, 3: 3}
#: Raw storage orientations, cycled over cases so readers must really reorient.
_RAW_ORIENTATIONS = (("L", "P", "S"), ("P", "L", "S"), ("R", "A", "I"), ("L", "S", "P"))


def synth_nifti(out: str | Path, cases: int = 6, size: int = 48, slices: int = 12, seed: int = 0,
                layout: str = "nnunet", modality: str = "CT", test_cases: int = 2) -> dict[str, Any]:
    """Write a synthetic 3-organ segmentation task (liver, spleen, kidney) as NIfTI volumes.

    ``layout="nnunet"``: ``dataset.json`` + ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/``,
    ``imagesTs/``, ``labelsTs/``. ``layout="decathlon"``: ``imagesTr/``, ``labelsTr/``,
    ``imagesTs/``, ``labelsTs/`` + a datalist ``dataset.json`` (``training``/``test`` lists).
    Volumes are stored in varying non-RAS orientations with realistic affines; ``modality="MR"``
    writes arbitrary positive signal units instead of HU. ``cases`` training + ``test_cases`` test.
    """
    import nibabel as nib
    from nibabel import orientations as ornt

    if layout not in ("nnunet", "decathlon"):
        raise ConfigError(f"layout must be 'nnunet' or 'decathlon', got {layout!r}")
    if modality not in ("CT", "MR"):
        raise ConfigError(f"modality must be 'CT' or 'MR', got {modality!r}")
    _check_size(size, slices)
    out = Path(out)
    rng = np.random.default_rng(seed)
    organs = tuple(o for o in ORGANS if o.btcv in _NIFTI_FROM_BTCV)
    lut = np.zeros(256, np.uint8)
    for b, v in _NIFTI_FROM_BTCV.items():
        lut[b] = v
    names = [f"synth_{i:03d}" for i in range(cases + test_cases)]
    entries: dict[str, list[dict[str, str]]] = {"training": [], "test": []}
    for i, name in enumerate(names):
        hu, btcv = phantom(size, slices, rng, organs)
        image = hu if modality == "CT" else (hu + 1000.0) * 0.8  # MR-like: positive, arbitrary scale
        ras_affine = np.diag([*np.abs(np.diag(raw_affine(size, slices, rng))[:3]), 1.0])
        ras_affine[:3, 3] = rng.uniform(-200, 200, 3)
        target = ornt.axcodes2ornt(_RAW_ORIENTATIONS[i % len(_RAW_ORIENTATIONS)])
        img = nib.Nifti1Image(image.astype(np.float32 if modality == "MR" else np.int16), ras_affine)
        lab = nib.Nifti1Image(lut[btcv], ras_affine)
        img, lab = img.as_reoriented(target), lab.as_reoriented(target)
        split = "Tr" if i < cases else "Ts"
        img_name = f"{name}_0000.nii.gz" if layout == "nnunet" else f"{name}.nii.gz"
        _write_nifti(out / f"images{split}" / img_name, np.asarray(img.dataobj), img.affine)
        _write_nifti(out / f"labels{split}" / f"{name}.nii.gz", np.asarray(lab.dataobj), lab.affine)
        entries["training" if split == "Tr" else "test"].append(
            {"image": f"./images{split}/{img_name}", "label": f"./labels{split}/{name}.nii.gz"})
    if layout == "nnunet":
        spec: dict[str, Any] = {"channel_names": {"0": modality},
                                "labels": {n: i for i, n in enumerate(NIFTI_CLASSES)},
                                "numTraining": cases, "file_ending": ".nii.gz", "name": "synthetic"}
    else:
        spec = {"name": "synthetic", "modality": {"0": modality},
                "labels": {str(i): n for i, n in enumerate(NIFTI_CLASSES)},
                "numTraining": cases, "numTest": test_cases, **entries}
    write_json(out / "dataset.json", spec)
    summary = {"out": str(out), "layout": layout, "modality": modality, "train": cases, "test": test_cases}
    log.debug("synthetic NIfTI data: %s", summary)
    return summary
