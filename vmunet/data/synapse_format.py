"""The Synapse multi-organ CT format (TransUNet / Swin-Unet / VM-UNet) and its conversion from BTCV.

Layout under a root folder::

    train_npz/<case>_slice<NNN>.npz        image float32 H x W in [0, 1], label uint8 H x W
    train_npz/<case>.geometry.json         (ours, optional) geometry of the training case
    test_vol_h5/<case>.npy.h5              image float32 D x H x W, label D x H x W
    test_vol_h5/<case>.geometry.json       geometry sidecar (see ``geometry_record``)
    lists/lists_Synapse/train.txt          slice names, one a line
    lists/lists_Synapse/test_vol.txt       case names, one a line

Everything here is plain numpy/nibabel, shared by ``prepare synapse`` and ``synth synapse`` so the
synthetic data goes through exactly the conversion real data does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data.errors import LayoutError, describe_folder
from vmunet.data.fileio import check_pair, write_h5_volume, write_json, write_lines, write_npz_slice
from vmunet.data.preprocessing import SYNAPSE_HU_WINDOW, apply_intensity, volume_to_slices
from vmunet.data.volumes import to_ras, voxel_sizes

log = logging.getLogger(__name__)

LIST_DIR_NAMES = ("lists_Synapse", "list_Synapse")
TRAIN_DIR = "train_npz"
TEST_DIR = "test_vol_h5"
H5_SUFFIX = ".npy.h5"
GEOMETRY_SUFFIX = ".geometry.json"

#: BTCV label id -> Synapse class id (aorta 8, gallbladder 4, left kidney 3, right kidney 2,
#: liver 6, pancreas 11, spleen 1, stomach 7 -> 1..8; the other five BTCV organs -> background).
BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
BTCV_NUM_LABELS = 14  # 0 background + 13 organs

#: The standard TransUNet split of the 30 labelled BTCV cases.
STANDARD_TEST_IDS = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)
STANDARD_TRAIN_IDS = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)


def case_name(case_id: int) -> str:
    """BTCV number -> Synapse case name (``1 -> case0001``)."""
    return f"case{case_id:04d}"


def slice_name(case: str, index: int) -> str:
    """``case0005_slice012``: the training-slice naming of the standard data."""
    return f"{case}_slice{index:03d}"


def case_of_slice(name: str) -> str:
    """``case0005_slice012`` -> ``case0005``."""
    return name.rsplit("_slice", 1)[0]


def remap_btcv(label: np.ndarray) -> np.ndarray:
    """BTCV ids (0..13) -> Synapse class ids (0..8) via a lookup table."""
    lut = np.zeros(BTCV_NUM_LABELS, dtype=np.uint8)
    for btcv, syn in BTCV_TO_SYNAPSE.items():
        lut[btcv] = syn
    return lut[label]


def geometry_record(source: str, affine: np.ndarray, shape: tuple[int, ...], ras_affine: np.ndarray) -> dict[str, Any]:
    """The sidecar that lets inference write predictions back in scanner space.

    ``affine``/``shape`` are the ORIGINAL file's; the h5 array is the RAS-canonical array
    transposed (2, 1, 0), whose axis spacings are the canonical voxel sizes reversed.
    """
    sx, sy, sz = voxel_sizes(ras_affine)
    return {
        "source": source,
        "affine": np.asarray(affine, dtype=float).tolist(),
        "shape": [int(s) for s in shape[:3]],
        "orientation": "RAS",
        "layout": "DHW",
        "spacing_dhw": [float(sz), float(sy), float(sx)],
    }


def convert_case(image: np.ndarray, label: np.ndarray, affine: np.ndarray, source: str,
                 where: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One raw BTCV case -> (image D x H x W in [0, 1], Synapse label D x H x W uint8, geometry).

    ``where`` names the files in error messages.
    """
    lab = check_pair(where, image, label, BTCV_NUM_LABELS)
    img_ras, ras_affine = to_ras(np.asarray(image, dtype=np.float32), affine)
    lab_ras, _ = to_ras(lab, affine)
    window = {"mode": "window", "window": list(SYNAPSE_HU_WINDOW)}
    img_dhw = volume_to_slices(apply_intensity(img_ras, window), 2)
    lab_dhw = volume_to_slices(remap_btcv(lab_ras), 2)
    geom = geometry_record(source, affine, image.shape, ras_affine)
    return np.ascontiguousarray(img_dhw), np.ascontiguousarray(lab_dhw), geom


def write_train_case(root: Path, case: str, image: np.ndarray, label: np.ndarray,
                     geometry: dict[str, Any] | None) -> list[str]:
    """Write a training case as npz slices (+ geometry); return its slice names."""
    names = []
    for k in range(image.shape[0]):
        name = slice_name(case, k)
        write_npz_slice(root / TRAIN_DIR / f"{name}.npz", image[k], label[k])
        names.append(name)
    if geometry is not None:
        write_json(root / TRAIN_DIR / f"{case}{GEOMETRY_SUFFIX}", geometry)
    return names


def write_test_case(root: Path, case: str, image: np.ndarray, label: np.ndarray,
                    geometry: dict[str, Any] | None) -> None:
    """Write a test case as one h5 volume (+ geometry sidecar)."""
    write_h5_volume(root / TEST_DIR / f"{case}{H5_SUFFIX}", image, label)
    if geometry is not None:
        write_json(root / TEST_DIR / f"{case}{GEOMETRY_SUFFIX}", geometry)


def write_lists(root: Path, train_slices: list[str], test_cases: list[str]) -> None:
    """``lists/lists_Synapse/{train.txt,test_vol.txt}``."""
    d = root / "lists" / LIST_DIR_NAMES[0]
    write_lines(d / "train.txt", train_slices)
    write_lines(d / "test_vol.txt", test_cases)


EXPECTED_LAYOUT = ("train_npz/*.npz, test_vol_h5/*.npy.h5 and "
                   "lists/lists_Synapse/{train.txt,test_vol.txt} (or lists/list_Synapse/)")


def find_list_dir(root: Path) -> Path:
    """The list folder under either community name; a LayoutError says what was found instead."""
    for name in LIST_DIR_NAMES:
        for cand in (root / "lists" / name, root / name):
            if cand.is_dir():
                # said at INFO only when it is not the standard lists/lists_Synapse (checked more than once per run)
                standard = cand == root / "lists" / LIST_DIR_NAMES[0]
                log.log(logging.DEBUG if standard else logging.INFO, "Synapse lists: using %s", cand)
                return cand
    raise LayoutError(_layout_message(root, "no list folder lists/lists_Synapse or lists/list_Synapse"))


def _layout_message(root: Path, problem: str) -> str:
    hint = ""
    if (root / "img").is_dir() and (root / "label").is_dir():
        hint = (" This looks like a raw BTCV download: convert it with "
                f"`vmunet prepare synapse --raw {root} --out OUT`.")
    return (f"{root}: not a Synapse data folder ({problem}). Expected {EXPECTED_LAYOUT}; found: "
            f"{describe_folder(root)}.{hint}")


def check_layout(root: Path) -> Path:
    """Check the top-level layout of a Synapse root; return its list folder."""
    if root.exists() and not root.is_dir():
        raise LayoutError(f"{root}: is a regular file, expected a Synapse data folder ({EXPECTED_LAYOUT})")
    if not root.is_dir():
        raise LayoutError(f"{root}: Synapse data folder does not exist (expected {EXPECTED_LAYOUT}); no data yet? "
                          "`vmunet synth synapse --out DIR` writes a synthetic one, `vmunet prepare synapse --raw "
                          "BTCV --out DIR` converts the raw BTCV download")
    for sub in (TRAIN_DIR, TEST_DIR):
        if not (root / sub).is_dir():
            raise LayoutError(_layout_message(root, f"missing {sub}/"))
    return find_list_dir(root)
