"""``vmunet prepare``: convert raw downloads into the layouts the data modules train on.

* :func:`prepare_synapse` - BTCV ``img/imgNNNN.nii.gz`` + ``label/labelNNNN.nii.gz`` -> Synapse
  format (HU window [-125, 275] -> [0, 1], RAS axial slices, BTCV ids -> 8 Synapse organs,
  geometry sidecars), with the standard TransUNet case split by default.
* :func:`prepare_isic` - official ISIC 2017/2018 archive -> VM-UNet layout at 256 x 256 plus
  ``stats.json`` (per-channel mean/std of the training images).

Inputs are only read; every output file is written atomically. The output folder must be empty (or
hold only what an earlier prepare wrote, replaced with ``overwrite=True``); what a prepare writes is
listed in its manifest (:mod:`vmunet.data.manifest`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data import isic_format as IF
from vmunet.data import synapse_format as SF
from vmunet.data.errors import DataError, LayoutError, check_paired, describe_folder, short_list
from vmunet.data.fileio import atomic_path, check_image_finite, write_json
from vmunet.data.manifest import prepared_folder
from vmunet.data.volumes import load_volume, same_geometry
from vmunet.errors import ConfigError

log = logging.getLogger(__name__)

_IMG = re.compile(r"^img(\d+)\.nii(\.gz)?$")
_LAB = re.compile(r"^label(\d+)\.nii(\.gz)?$")


def _check_out(raw: Path, out: Path) -> None:
    if out.resolve() == raw.resolve():
        raise ConfigError(f"--out {out} must differ from --raw (inputs are never overwritten)")


# ------------------------------------------------------------------------------------------
# Synapse


def find_btcv_folder(raw: str | Path) -> Path:
    """The folder holding ``img/`` and ``label/`` (the raw root or its Training subfolder)."""
    raw = Path(raw)
    for cand in (raw, raw / "Training", raw / "RawData" / "Training", raw / "Abdomen" / "RawData" / "Training"):
        if (cand / "img").is_dir() and (cand / "label").is_dir():
            return cand
    raise LayoutError(f"{raw}: expected a raw BTCV/Synapse download with img/imgNNNN.nii.gz and "
                      f"label/labelNNNN.nii.gz (directly or under Training/ or RawData/Training/); "
                      f"found: {describe_folder(raw)}")


def btcv_cases(folder: Path) -> dict[int, tuple[Path, Path]]:
    """``{case number: (image, label)}``, paired by number; unpaired files are an error."""
    def scan(sub: str, pattern: re.Pattern) -> dict[int, Path]:
        found = {}
        for p in sorted((folder / sub).iterdir()):
            m = pattern.match(p.name)
            if m:
                found[int(m.group(1))] = p
            elif not p.name.startswith("."):
                log.warning("prepare synapse: ignoring %s (not named %s)", p, pattern.pattern)
        return found

    imgs, labs = scan("img", _IMG), scan("label", _LAB)
    if not imgs:
        raise DataError(f"{folder / 'img'}: no imgNNNN.nii.gz files ({describe_folder(folder / 'img')})")
    check_paired("BTCV images and labels do not pair up by case number",
                 ("image", folder / "img", imgs), ("label", folder / "label", labs))
    return {k: (imgs[k], labs[k]) for k in sorted(imgs)}


def split_cases(ids: Sequence[int], split: str = "standard", test_cases: Sequence[int] | None = None,
                test_fraction: float = 0.4, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train ids, test ids): ``standard`` TransUNet split, seeded ``random`` split, or explicit test ids."""
    ids = sorted(ids)
    if test_cases:
        unknown = sorted(set(test_cases) - set(ids))
        if unknown:
            raise ConfigError(f"--test-cases {short_list(unknown)} are not in the raw data (cases: {short_list(ids, 40)})")
        test = sorted(set(test_cases))
    elif split == "standard":
        other = sorted(set(ids) - set(SF.STANDARD_TEST_IDS) - set(SF.STANDARD_TRAIN_IDS))
        if other:
            raise ConfigError(f"case(s) {short_list(other)} are not part of the standard Synapse split; use "
                             "--split random or --test-cases")
        test = [i for i in ids if i in SF.STANDARD_TEST_IDS]
        absent = sorted(set(SF.STANDARD_TEST_IDS + SF.STANDARD_TRAIN_IDS) - set(ids))
        if absent:
            log.warning("prepare synapse: %d standard case(s) absent from the raw data: %s", len(absent),
                        short_list(absent))
    elif split == "random":
        if not 0 < test_fraction < 1:
            raise ConfigError(f"--test-fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(seed)
        n_test = max(1, round(len(ids) * test_fraction))
        test = sorted(rng.choice(ids, size=n_test, replace=False).tolist())
    else:
        raise ConfigError(f"--split must be 'standard' or 'random', got {split!r}")
    train = [i for i in ids if i not in test]
    if not train or not test:
        raise ConfigError(f"split leaves {len(train)} training and {len(test)} test case(s); need at least one each")
    return train, test


def prepare_synapse(raw: str | Path, out: str | Path, *, split: str = "standard",
                    test_cases: Sequence[int] | None = None, test_fraction: float = 0.4,
                    seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Convert a raw BTCV download to the Synapse format under ``out``; returns a summary.
    ``overwrite`` replaces what an earlier prepare wrote there (see :mod:`vmunet.data.manifest`)."""
    raw, out = Path(raw), Path(out)
    _check_out(raw, out)
    folder = find_btcv_folder(raw)
    cases = btcv_cases(folder)
    train_ids, test_ids = split_cases(list(cases), split, test_cases, test_fraction, seed)
    with prepared_folder(out, overwrite=overwrite, command="prepare synapse", source=str(folder)):
        train_slices = _write_synapse(cases, out, test_ids)
    return {"raw": str(folder), "out": str(out), "train_cases": len(train_ids), "train_slices": len(train_slices),
            "test_cases": len(test_ids), "test": [SF.case_name(c) for c in test_ids]}


def _write_synapse(cases: dict[int, tuple[Path, Path]], out: Path, test_ids: list[int]) -> list[str]:
    train_slices: list[str] = []
    for cid in sorted(cases):
        img_path, lab_path = cases[cid]
        image, affine = load_volume(img_path)
        label, laff = load_volume(lab_path)
        check_image_finite(img_path, image)  # the image file is the culprit, not the label named by `where`
        where = f"{lab_path} (image {img_path.name})"
        if label.shape == image.shape and not same_geometry(affine, laff):
            raise DataError(f"{where}: label geometry (affine) differs from the image's")
        img, lab, geom = SF.convert_case(image, label, affine, img_path.name, where)
        name = SF.case_name(cid)
        if cid in test_ids:
            SF.write_test_case(out, name, img, lab, geom)
        else:
            train_slices += SF.write_train_case(out, name, img, lab, geom)
        log.info("prepare synapse: %s -> %s (%s, %d slices)", img_path.name, name,
                 "test" if cid in test_ids else "train", img.shape[0])
    SF.write_lists(out, train_slices, [SF.case_name(c) for c in test_ids])
    return train_slices


# ------------------------------------------------------------------------------------------
# ISIC


def _official_split_pairs(raw: Path, year: str | None) -> tuple[str, dict[str, list[IF.Pair]]]:
    folders = IF.official_folders(raw)
    years = sorted({y for y, _ in folders})
    if not years:
        raise LayoutError(f"{raw}: expected the official ISIC archive layout (e.g. ISIC2018_Task1-2_Training_Input/ "
                          f"+ ISIC2018_Task1_Training_GroundTruth/, or ISIC-2017_Training_Data/ + "
                          f"ISIC-2017_Training_Part1_GroundTruth/); found: {describe_folder(raw)}")
    if year is None:
        if len(years) > 1:
            raise ConfigError(f"{raw} holds ISIC {years}; choose one with --year")
        year = years[0]
    if year not in years:
        raise ConfigError(f"--year {year}: no ISIC {year} folders in {raw} (found {years})")
    pairs = {}
    for split in IF.SPLITS:
        inp, gt = folders.get((year, split), (None, None))
        if inp is None or gt is None:
            if split == "train":
                raise LayoutError(f"{raw}: ISIC {year} needs both the training input and ground-truth folders; "
                                  f"found: {describe_folder(raw)}")
            if inp is not None:
                log.info("prepare isic: %s has no ground truth folder; skipped", inp.name)
            continue
        pairs[split] = IF.pair_folder(inp, gt)
    return year, pairs


def _resize_pair(pair: IF.Pair, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    image, mask = IF.read_pair(pair)
    img = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    msk = np.asarray(Image.fromarray(mask * 255).resize((size, size), Image.NEAREST))
    return img, (msk > 127).astype(np.uint8) * 255


def prepare_isic(raw: str | Path, out: str | Path, *, split: float | None = None, seed: int = 0,
                 size: int = 256, year: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Official ISIC archive -> VM-UNet layout at ``size`` x ``size`` with ``stats.json``.

    ``split=None``: the official validation/test sets when their ground truth is present,
    otherwise a seeded 0.7 train / 0.3 val split of the training set. A number forces a seeded
    split of the training set with that training fraction. ``overwrite`` replaces what an earlier
    prepare wrote in ``out`` (see :mod:`vmunet.data.manifest`).
    """
    raw, out = Path(raw), Path(out)
    _check_out(raw, out)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:  # PIL's resize failed with a traceback
        raise ConfigError(f"--size: expected a positive number of pixels, got {size!r}")
    year, pairs = _official_split_pairs(raw, year)
    if split is not None or "val" not in pairs:
        frac = 0.7 if split is None else float(split)
        if not 0 < frac < 1:
            raise ConfigError(f"--split must be a training fraction in (0, 1), got {split}")
        train = pairs["train"]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(train))
        n_train = min(len(train) - 1, max(1, round(len(train) * frac)))
        pairs["train"] = sorted((train[i] for i in order[:n_train]), key=lambda p: p.case)
        pairs["val"] = sorted((train[i] for i in order[n_train:]), key=lambda p: p.case)
        log.info("prepare isic: seeded %.2f split of the training set (seed %d)", frac, seed)
    # The folders define the split, so files left from an earlier run would leak between splits.
    with prepared_folder(out, overwrite=overwrite, command="prepare isic", source=str(raw)):
        mean, std = _write_isic(pairs, out, size, year)
    return {"raw": str(raw), "out": str(out), "year": year,
            "splits": {k: len(v) for k, v in pairs.items()}, "mean": mean, "std": std}


def _write_isic(pairs: dict[str, list[IF.Pair]], out: Path, size: int, year: str) -> tuple[list[float], list[float]]:
    from PIL import Image

    train_images = []
    for name, split_pairs in pairs.items():
        for pair in split_pairs:
            img, msk = _resize_pair(pair, size)
            for arr, path in ((img, out / name / "images" / f"{pair.case}.png"),
                              (msk, out / name / "masks" / f"{pair.case}.png")):
                with atomic_path(path) as tmp:
                    Image.fromarray(arr).save(tmp, format="PNG")
            if name == "train":
                train_images.append(img)
    mean, std = IF.channel_stats(train_images)
    write_json(out / IF.STATS_FILE, {"mean": mean, "std": std, "num_images": len(train_images),
                                     "image_size": [size, size], "year": year})
    return mean, std
