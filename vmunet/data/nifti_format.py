"""Generic NIfTI-folder data sets: the nnU-Net raw layout and MONAI's Decathlon datalist JSON.

nnU-Net raw (``dataset.json`` with ``channel_names``, ``labels`` name -> int, ``file_ending``)::

    imagesTr/<case>_0000<ending> [<case>_0001<ending> ...]   labelsTr/<case><ending>
    [imagesTs/<case>_0000<ending> ...                        labelsTs/<case><ending>]

One file per channel: ``channel_names`` gives their number and modality, in index order (the
grouping rule: :mod:`vmunet.data.channels`).

Decathlon datalist / nnU-Net v1 (``dataset.json`` with ``training`` [and ``validation`` /
``test``] lists of ``{"image": path, "label": path}`` relative to the JSON's folder, ``labels``
int -> name and ``modality`` {"0": "CT"}). With several modalities the ``image`` path names the
case and its channels are nnU-Net v1's files ``<image stem>_0000<ext>``, ``_0001``, ... beside it
(4D multi-channel files are refused with that advice). Any format
:func:`vmunet.data.volumes.load_volume` reads works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmunet.data.channels import channel_file_names, group_channels
from vmunet.data.errors import DataError, LayoutError, describe_folder, short_list
from vmunet.data.fileio import read_json
from vmunet.data.volumes import has_suffix, strip_suffix

log = logging.getLogger(__name__)

EXPECTED = ("an nnU-Net raw folder (dataset.json with 'channel_names', 'labels', 'file_ending'; "
            "imagesTr/<case>_0000<ending>, labelsTr/<case><ending>) or a Decathlon datalist JSON "
            "(with a 'training' list of {'image', 'label'})")
#: What to run when there is no data yet (part of the missing-folder errors).
HINT = ("no data yet? `vmunet synth nifti --out DIR` writes a synthetic nnU-Net raw dataset, "
        "`vmunet prepare synapse|isic` converts raw downloads")


@dataclass
class Case:
    """One scan: its name, image files (one per channel, in order) and (optional) label file."""

    name: str
    images: tuple[Path, ...]
    label: Path | None

    @property
    def image(self) -> Path:
        """The first channel's file (it carries the case's geometry)."""
        return self.images[0]


@dataclass
class NiftiIndex:
    """What a NIfTI-folder data set declares: classes, modality and the cases of each split."""

    layout: str  # "nnunet" | "decathlon"
    class_names: list[str]
    #: modality of each input channel, in channel order (``channel_names`` / ``modality``)
    channels: list[str]
    #: the dataset.json (or datalist) the channels and classes come from
    source: Path
    train: list[Case]
    val: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)


def _class_names(path: Path, labels: Any, name_to_int: bool) -> list[str]:
    """``labels`` -> names indexed by value; values must be 0..K-1 without gaps."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' must be a non-empty mapping, got {labels!r}")
    pairs: dict[int, str] = {}
    for k, v in labels.items():
        name, value = (k, v) if name_to_int else (v, k)
        if name_to_int and name == "ignore":  # nnU-Net v2's ignore label: not a class to learn
            raise DataError(f"{path}: label 'ignore' (value {value!r}) is nnU-Net's ignore label (voxels left out "
                            "of the loss); vmunet has no ignore label and would learn it as a class -- remove it "
                            "from 'labels' and relabel those voxels")
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{path}: label {name!r} has value {value!r}; only integer labels are "
                            "supported (no nnU-Net region lists)") from None
        if value in pairs:  # a second name for one value replaced the first one silently
            raise DataError(f"{path}: labels {pairs[value]!r} and {str(name)!r} both have value {value}; "
                            "expected one name per value")
        pairs[value] = str(name)
    if sorted(pairs) != list(range(len(pairs))):
        raise DataError(f"{path}: label values must be 0..K-1 without gaps, got {sorted(pairs)}")
    return [pairs[i] for i in range(len(pairs))]


def _channels(path: Path, channels: Any, key: str) -> list[str]:
    """``{"0": "CT", "1": "T2"}`` -> ``["CT", "T2"]``; the keys must be 0..C-1."""
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: {key!r} must be a non-empty mapping of channel index -> modality, "
                        f"got {channels!r}")
    try:
        order = sorted((int(k), str(v)) for k, v in channels.items())
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} keys must be channel indices '0', '1', ..., got {sorted(channels)}") from None
    if [i for i, _ in order] != list(range(len(order))):
        raise DataError(f"{path}: {key!r} keys must be 0..C-1 without gaps, got {[i for i, _ in order]}")
    return [v for _, v in order]


def _nnunet(root: Path, spec: dict[str, Any], json_path: Path) -> NiftiIndex:
    ending = spec.get("file_ending", ".nii.gz")
    names = _class_names(json_path, spec.get("labels"), name_to_int=True)
    channels = _channels(json_path, spec.get("channel_names"), "channel_names")

    def cases(images: str, labels: str, need_labels: bool) -> list[Case]:
        img_dir, lab_dir = root / images, root / labels
        if not img_dir.is_dir():
            if need_labels:
                raise LayoutError(f"{root}: nnU-Net layout expects {images}/ ({describe_folder(root)}); {HINT}")
            return []
        # suffixes match case-insensitively, as everywhere (vmunet.data.volumes)
        found = sorted(p for p in img_dir.iterdir() if has_suffix(p, ending) and not p.name.startswith("."))
        if not found:
            raise DataError(f"{img_dir}: no images ending in {ending!r} ({describe_folder(img_dir)})")
        labels = {strip_suffix(p.name, (ending,)): p for p in lab_dir.iterdir()
                  if p.is_file() and has_suffix(p, ending) and not p.name.startswith(".")} if lab_dir.is_dir() else {}
        groups = group_channels(found, lambda p: strip_suffix(p.name, (ending,)), len(channels), img_dir)
        out = [Case(g.name, g.files, labels.get(g.name)) for g in groups]
        missing = [c.name for c in out if c.label is None]
        if need_labels and missing:
            raise DataError(f"{lab_dir}: no label for case(s) {short_list(missing)}")
        if lab_dir.is_dir():
            extra = sorted(set(labels) - {c.name for c in out})
            if extra:
                raise DataError(f"{lab_dir}: label(s) without an image in {img_dir}: {short_list(extra)}")
        return out

    train = cases("imagesTr", "labelsTr", True)
    declared = spec.get("numTraining")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != len(train):
        # nnU-Net's dataset check refuses this; a half-copied imagesTr/labelsTr looks just like it
        log.warning("%s: numTraining is %d, but %s holds %d training case(s); training on the %d found",
                    json_path, declared, root / "imagesTr", len(train), len(train))
    test = [c for c in cases("imagesTs", "labelsTs", False) if c.label is not None]
    return NiftiIndex("nnunet", names, channels, json_path, train, [], test)


def _decathlon(base: Path, spec: dict[str, Any], json_path: Path) -> NiftiIndex:
    names = _class_names(json_path, spec.get("labels"), name_to_int=False)
    key = "modality" if "modality" in spec else "channel_names"
    channels = _channels(json_path, spec.get(key), key)

    def entries(key: str, need_labels: bool) -> list[Case]:
        raw = spec.get(key, [])
        if not isinstance(raw, list):
            raise DataError(f"{json_path}: '{key}' must be a list")
        out = []
        for i, e in enumerate(raw):
            if isinstance(e, str):  # MSD lists unlabelled test images as plain paths
                e = {"image": e}
            if not isinstance(e, dict) or not isinstance(e.get("image"), str):
                raise DataError(f"{json_path}: {key}[{i}] must have an 'image' path, got {e!r}")
            img = (base / e["image"]).resolve()
            lab = (base / e["label"]).resolve() if isinstance(e.get("label"), str) else None
            if need_labels and lab is None:
                raise DataError(f"{json_path}: {key}[{i}] has no 'label'")
            images = _entry_channels(json_path, f"{key}[{i}]", img, len(channels))
            if lab is not None and not lab.is_file():
                raise DataError(f"{json_path}: {key}[{i}] refers to missing file {lab}")
            out.append(Case(strip_suffix(img.name), images, lab))
        names_seen = [c.name for c in out]
        dups = sorted({n for n in names_seen if names_seen.count(n) > 1})
        if dups:
            raise DataError(f"{json_path}: duplicate case name(s) in '{key}': {short_list(dups)}")
        return out

    train = entries("training", True)
    if not train:
        raise DataError(f"{json_path}: the 'training' list is empty")
    val = entries("validation", True)
    test = [c for c in entries("test", False) if c.label is not None]
    return NiftiIndex("decathlon", names, channels, json_path, train, val, test)


def _entry_channels(json_path: Path, where: str, img: Path, channels: int) -> tuple[Path, ...]:
    """The channel files of a datalist entry: the file itself (one channel), or nnU-Net v1's
    ``<stem>_0000<ext>``, ... beside it (the entry then names the case)."""
    stem = strip_suffix(img.name)
    v1 = [img.with_name(n) for n in channel_file_names(stem, channels, img.name[len(stem):])]
    if channels == 1:
        for candidate in (img, v1[0]):
            if candidate.is_file():
                return (candidate,)
        raise DataError(f"{json_path}: {where} refers to missing file {img}")
    missing = [p.name for p in v1 if not p.is_file()]
    if missing:
        hint = (f"; {img.name} exists, but multi-channel 4D files are not read: split it into one file per "
                "channel (nnU-Net naming)") if img.is_file() else ""
        raise DataError(f"{json_path}: {where} ({img.name}, {channels} channels) expects the channel files "
                        f"{[p.name for p in v1]} in {img.parent}; missing {missing}{hint}")
    return tuple(v1)


def index_folder(root: str | Path, datalist: str | Path | None = None) -> NiftiIndex:
    """Read ``root/dataset.json`` (or ``datalist``) and list the cases; errors say what was found."""
    root = Path(root)
    json_path = Path(datalist) if datalist else root / "dataset.json"
    if not json_path.is_file():
        raise LayoutError(f"{root}: expected {EXPECTED}; no {json_path.name} found: {describe_folder(root)}; "
                          f"{HINT}")
    spec = read_json(json_path)
    if not isinstance(spec, dict):
        raise LayoutError(f"{json_path}: expected a JSON object ({EXPECTED})")
    if "training" in spec:
        return _decathlon(json_path.parent, spec, json_path)
    if "channel_names" in spec:
        return _nnunet(root, spec, json_path)
    raise LayoutError(f"{json_path}: expected {EXPECTED}; found keys {sorted(spec)}")
