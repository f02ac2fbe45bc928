"""ISIC 2017 / 2018 lesion segmentation: the two on-disk layouts, pairing by case id, checked reads.

VM-UNet layout (what the data module trains on; written by ``vmunet prepare isic``)::

    <root>/{train,val[,test]}/images/<id>.{jpg,png}
    <root>/{train,val[,test]}/masks/<id>[_segmentation].png      0/255 (or 0/1)
    <root>/stats.json                                            per-channel mean/std (prepare)

Official ISIC archive layout (input of ``prepare isic``), e.g. for 2018::

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png
    (and the same for Validation / Test; 2017: ISIC-2017_Training_Data,
    ISIC-2017_Training_Part1_GroundTruth, ISIC-2017_Test_v2_Data, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmunet.data.errors import DataError, LayoutError, check_paired, describe_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")
SPLITS = ("train", "val", "test")
CLASS_NAMES = ("background", "lesion")
STATS_FILE = "stats.json"

_OFFICIAL_INPUT = re.compile(r"^ISIC-?(\d{4})_(?:Task1-2_)?(Training|Validation|Test)(?:_v2)?_(?:Input|Data)$")
_OFFICIAL_GT = re.compile(r"^ISIC-?(\d{4})_(?:Task1_)?(Training|Validation|Test)(?:_v2)?_(?:Part1_)?GroundTruth$")
_OFFICIAL_SPLIT = {"Training": "train", "Validation": "val", "Test": "test"}


def case_id(name: str) -> str:
    """File name -> case id: ``ISIC_0000000_segmentation.png`` and ``ISIC_0000000.jpg`` -> ``ISIC_0000000``."""
    stem = Path(name).stem
    return stem[: -len("_segmentation")] if stem.endswith("_segmentation") else stem


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by case id."""

    case: str
    image: Path
    mask: Path


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            if p.stem.endswith("_superpixels"):  # ISIC 2017 ships superpixel maps beside the images
                continue
            cid = case_id(p.name)
            if cid in out:
                raise DataError(f"{folder}: two files for case {cid}: {out[cid].name} and {p.name}")
            out[cid] = p
    return out


def pair_folder(images: Path, masks: Path) -> list[Pair]:
    """Pair every image with its mask by case id; missing or extra masks are an error listing ids."""
    for d in (images, masks):
        if not d.is_dir():
            raise LayoutError(f"{d}: folder not found ({describe_folder(d.parent)})")
    imgs, msks = _files(images, IMAGE_SUFFIXES), _files(masks, MASK_SUFFIXES)
    if not imgs:
        raise DataError(f"{images}: no images ({'/'.join(IMAGE_SUFFIXES)}) found")
    check_paired("ISIC images and masks do not pair up by case id", ("image", images, imgs), ("mask", masks, msks))
    return [Pair(c, imgs[c], msks[c]) for c in sorted(imgs)]


def vmunet_splits(root: Path) -> dict[str, list[Pair]]:
    """The VM-UNet layout's splits present under ``root`` (train and val required)."""
    root = Path(root)
    found = {s for s in SPLITS if (root / s / "images").is_dir()}
    if not {"train", "val"} <= found:
        hint = ""
        if official_folders(root):
            hint = (" This is the official ISIC archive layout: convert it with "
                    f"`vmunet prepare isic --raw {root} --out OUT`.")
        raise LayoutError(
            f"{root}: not an ISIC folder in the VM-UNet layout. Expected "
            f"{{train,val}}/{{images,masks}}/ (optional test/); found: {describe_folder(root)}.{hint}")
    return {s: pair_folder(root / s / "images", root / s / "masks") for s in SPLITS if s in found}


def official_folders(root: Path) -> dict[tuple[str, str], tuple[Path | None, Path | None]]:
    """``{(year, split): (input folder, ground-truth folder)}`` of the official layout under root."""
    out: dict[tuple[str, str], list[Path | None]] = {}
    if not Path(root).is_dir():
        return {}
    for d in sorted(Path(root).iterdir()):
        if not d.is_dir():
            continue
        for pattern, slot in ((_OFFICIAL_INPUT, 0), (_OFFICIAL_GT, 1)):
            m = pattern.match(d.name)
            if m:
                out.setdefault((m.group(1), _OFFICIAL_SPLIT[m.group(2)]), [None, None])[slot] = d
    return {k: (v[0], v[1]) for k, v in out.items()}


def check_8bit(path: str | Path, mode: str) -> None:
    """Refuse images of more than 8 bits per sample (PIL modes ``I;16*``, ``I``, ``F``): the ISIC
    statistics and the models' normalisation are on the 0..255 scale, and PIL's ``convert("RGB")``
    clips larger values at 255 -- a 16-bit dermoscopy image came out all white, silently. Training,
    ``prepare isic`` and ``predict`` read images through this one rule."""
    if mode == "F" or mode.startswith("I"):
        depth = "32-bit float" if mode == "F" else "32-bit integer" if mode == "I" else "16-bit"
        raise DataError(f"{path}: {depth} image (PIL mode {mode}); expected an 8-bit RGB or grayscale image "
                        "(values 0..255) -- convert it to 8 bits first (scale its range to 0..255)")


def read_image(path: Path) -> np.ndarray:
    """RGB image as uint8 (H, W, 3) (grayscale, palette and alpha images converted by PIL);
    unreadable files and images of more than 8 bits are a DataError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            check_8bit(path, im.mode)
            arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: unreadable or corrupt image ({type(err).__name__}: {err})") from None
    return arr


def read_mask(path: Path) -> np.ndarray:
    """Binary mask as uint8 (H, W) with values 0/1; accepts 0/255 or 0/1 files."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "P") else im)
    except Exception as err:
        raise DataError(f"{path}: unreadable or corrupt mask ({type(err).__name__}: {err})") from None
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a single-channel mask, got shape {arr.shape}")
    arr = arr.astype(np.uint8)
    values = np.unique(arr)
    if set(values.tolist()) <= {0, 1}:
        return arr
    if set(values.tolist()) <= {0, 255}:
        return (arr == 255).astype(np.uint8)
    raise DataError(f"{path}: mask values {values.tolist()[:10]} are not binary; expected 0/255 (or 0/1)")


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and mask (H, W) uint8 0/1, checked to have the same size."""
    image, mask = read_image(pair.image), read_mask(pair.mask)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{pair.mask}: mask size {mask.shape} does not match image {pair.image.name} "
                        f"size {image.shape[:2]} (case {pair.case})")
    return image, mask


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..255 scale) over all pixels of all images."""
    if not images:
        raise ValueError("no images to compute statistics from")
    n = 0
    s = np.zeros(3)
    s2 = np.zeros(3)
    for im in images:
        x = im.reshape(-1, 3).astype(np.float64)
        n += x.shape[0]
        s += x.sum(0)
        s2 += (x**2).sum(0)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    return mean.tolist(), std.tolist()
