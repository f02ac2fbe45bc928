"""Every rejection branch of the preprocessing record and of the NIfTI-folder layout check, each
with its exact one-line message (the messages are written out here, not taken from the code)."""

from __future__ import annotations

import json

import pytest

from vmunet.data.errors import DataError, LayoutError
from vmunet.data.nifti_format import EXPECTED, HINT, index_folder
from vmunet.data.preprocessing import PreprocessingError, validate_preprocessing

GOOD = {"dataset": "synapse", "in_chans": 1, "image_size": [32, 32], "class_names": ["background", "organ"],
        "num_classes": 2, "intensity": {"mode": "window", "window": [-125.0, 275.0]}, "orientation": "RAS",
        "slice_axis": 2}


def test_the_good_record_passes():
    assert validate_preprocessing(GOOD) == GOOD


@pytest.mark.parametrize("change,message", [
    ({"dataset": "btcv"},
     "preprocessing field 'dataset': expected one of ('synapse', 'isic', 'nifti'), got 'btcv'"),
    ({"in_chans": 0}, "preprocessing field 'in_chans': expected a positive integer (input channels), got 0"),
    ({"in_chans": 2, "intensity": [{"mode": "none"}] * 3},
     "preprocessing field 'intensity': expected one dict per input channel (2) or one dict for all, got "
     "[{'mode': 'none'}, {'mode': 'none'}, {'mode': 'none'}]"),
    ({"intensity": {"mode": "zscore_case", "use_mask": 1}},
     "preprocessing field 'intensity.use_mask': expected true or false, got 1"),
    ({"intensity": {"mode": "ct_percentile", "clip": [5.0, 1.0], "mean": 0.0, "std": 1.0}},
     "preprocessing field 'intensity.clip': expected [low, high] with low <= high, got [5.0, 1.0]"),
    ({"intensity": {"mode": "ct_percentile", "clip": [1.0, 5.0], "mean": 0.0}},
     "preprocessing field 'intensity.std': expected a number (mode 'ct_percentile'), got None"),
    ({"image_size": [32]}, "preprocessing field 'image_size': expected [H, W] with positive integers, got [32]"),
    ({"image_size": [32, 0]},
     "preprocessing field 'image_size': expected [H, W] with positive integers, got [32, 0]"),
    ({"class_names": ["background"]},
     "preprocessing field 'class_names': expected a list of at least 2 names (index == label value, "
     "0 = background), got ['background']"),
    ({"num_classes": 3}, "preprocessing field 'num_classes': expected 1 (binary) or len(class_names) = 2, got 3"),
    ({"num_classes": 1, "class_names": ["a", "b", "c"]},
     "preprocessing field 'num_classes': expected num_classes=1 (binary) only with exactly 2 class names, got 1"),
    ({"intensity": {"mode": "sigmoid"}},
     "preprocessing field 'intensity': expected a dict with 'mode' in ('window', 'zscore', 'minmax', 'none', "
     "'zscore_case', 'ct_percentile'), "
     "got {'mode': 'sigmoid'}"),
    ({"intensity": {"mode": "minmax", "range": [1.0, 1.0]}},
     "preprocessing field 'intensity.range': expected [low, high] with low < high, got [1.0, 1.0]"),
    ({"intensity": {"mode": "window", "window": [275, -125]}},
     "preprocessing field 'intensity.window': expected [low, high] with low < high, got [275, -125]"),
    ({"intensity": {"mode": "zscore", "mean": 0.0}},
     "preprocessing field 'intensity.std' is missing (mode 'zscore')"),
    ({"intensity": {"mode": "zscore", "mean": [0.0, 0.0], "std": [1.0, 0.0]}},
     "preprocessing field 'intensity.std': expected > 0, got [1.0, 0.0]"),
    ({"orientation": "LPS"}, "preprocessing field 'orientation': expected one of ('RAS', None), got 'LPS'"),
    ({"slice_axis": 3}, "preprocessing field 'slice_axis': expected 0, 1, 2 or null, got 3"),
    ({"image_interpolation": "nearest"},
     "preprocessing field 'image_interpolation': expected one of ('bilinear', 'bicubic') (optional), got 'nearest'"),
    ({"threshold": 1.0},
     "preprocessing field 'threshold': expected a binary decision threshold in (0, 1) (optional), got 1.0"),
    ({"threshold": True},
     "preprocessing field 'threshold': expected a binary decision threshold in (0, 1) (optional), got True"),
    ({"resample": "nearest"},
     "preprocessing field 'resample': expected one of ('probabilities', 'labels') (optional), got 'nearest'"),
])
def test_preprocessing_record_rejections(change, message):
    with pytest.raises(PreprocessingError) as exc:
        validate_preprocessing({**GOOD, **change})
    assert str(exc.value) == message


def test_preprocessing_record_shape_rejections():
    with pytest.raises(PreprocessingError) as exc:
        validate_preprocessing([("dataset", "synapse")])
    assert str(exc.value) == "preprocessing record must be a dict, got list"
    partial = {k: v for k, v in GOOD.items() if k not in ("intensity", "slice_axis")}
    with pytest.raises(PreprocessingError) as exc:
        validate_preprocessing(partial)
    assert str(exc.value) == "preprocessing record is missing field(s) ['intensity', 'slice_axis']"


# ------------------------------------------------------------------------------ NIfTI layouts

NNUNET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}


def _folder(root, spec, files=()):
    """A data set folder with ``dataset.json`` = ``spec`` and empty placeholder files (the layout
    check only looks at names)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root / "dataset.json"


def _error(root, kind=DataError):
    with pytest.raises(kind) as exc:
        index_folder(root)
    assert type(exc.value) is kind
    return str(exc.value)


def test_json_that_is_not_an_object(tmp_path):
    js = _folder(tmp_path, [1, 2])
    assert _error(tmp_path, LayoutError) == f"{js}: expected a JSON object ({EXPECTED})"


@pytest.mark.parametrize("labels,message", [
    ({}, "'labels' must be a non-empty mapping, got {}"),
    ([0, 1], "'labels' must be a non-empty mapping, got [0, 1]"),
    ({"background": 0, "liver": 2}, "label values must be 0..K-1 without gaps, got [0, 2]"),
    ({"background": 0, "liver": "one"},
     "label 'liver' has value 'one'; only integer labels are supported (no nnU-Net region lists)"),
])
def test_nnunet_label_rejections(tmp_path, labels, message):
    js = _folder(tmp_path, {**NNUNET, "labels": labels})
    assert _error(tmp_path) == f"{js}: {message}"


def test_nnunet_channel_rejections(tmp_path):
    js = _folder(tmp_path, {**NNUNET, "channel_names": {}})
    assert _error(tmp_path) == (f"{js}: 'channel_names' must be a non-empty mapping of channel index -> "
                                "modality, got {}")
    js = _folder(tmp_path, {**NNUNET, "channel_names": {"zero": "CT"}})
    assert _error(tmp_path) == f"{js}: 'channel_names' keys must be channel indices '0', '1', ..., got ['zero']"


def test_nnunet_multichannel_cases_need_every_channel(tmp_path):
    root = tmp_path / "ds"
    files = ["imagesTr/a_0000.nii.gz", "imagesTr/a_0001.nii.gz", "imagesTr/b_0000.nii.gz",
             "labelsTr/a.nii.gz", "labelsTr/b.nii.gz"]
    _folder(root, {**NNUNET, "channel_names": {"0": "T2", "1": "ADC"}}, files)
    assert _error(root) == (f"{root / 'imagesTr'}: case 'b' has channel files ['b_0000.nii.gz']; expected exactly "
                            "['b_0000.nii.gz', 'b_0001.nii.gz'] (2 channel(s))")
    (root / "imagesTr" / "b_0001.nii.gz").write_bytes(b"")
    idx = index_folder(root)
    assert idx.channels == ["T2", "ADC"]
    assert [(c.name, [p.name for p in c.images]) for c in idx.train] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    (root / "imagesTr" / "b_0002.nii.gz").write_bytes(b"")  # a third channel the json does not declare
    assert "case 'b' has channel files ['b_0000.nii.gz', 'b_0001.nii.gz', 'b_0002.nii.gz']" in _error(root)


def test_decathlon_v1_multichannel_entries(tmp_path):
    # nnU-Net v1 / MSD: the list names the case, its channels are <stem>_0000 ... beside it
    root = (tmp_path / "ds").resolve()
    spec = {"labels": {"0": "background", "1": "tumour"}, "modality": {"0": "FLAIR", "1": "T1w"},
            "training": [{"image": "./imagesTr/p1.nii.gz", "label": "./labelsTr/p1.nii.gz"}]}
    js = _folder(root, spec, ["imagesTr/p1_0000.nii.gz", "labelsTr/p1.nii.gz"])
    assert _error(root) == (f"{js}: training[0] (p1.nii.gz, 2 channels) expects the channel files "
                            f"['p1_0000.nii.gz', 'p1_0001.nii.gz'] in {root / 'imagesTr'}; missing ['p1_0001.nii.gz']")
    (root / "imagesTr" / "p1_0001.nii.gz").write_bytes(b"")
    idx = index_folder(root)
    assert idx.channels == ["FLAIR", "T1w"] and idx.train[0].name == "p1"
    assert [p.name for p in idx.train[0].images] == ["p1_0000.nii.gz", "p1_0001.nii.gz"]


def test_nnunet_folder_rejections(tmp_path):
    root = tmp_path / "ds"
    _folder(root, NNUNET, ["notes.txt"])
    assert _error(root, LayoutError) == (
        f"{root}: nnU-Net layout expects imagesTr/ ({root} contains ['dataset.json', 'notes.txt']); {HINT}")
    (root / "imagesTr").mkdir()
    (root / "imagesTr" / "a_0000.mha").write_bytes(b"")
    assert _error(root) == (f"{root / 'imagesTr'}: no images ending in '.nii.gz' "
                            f"({root / 'imagesTr'} contains ['a_0000.mha'])")
    (root / "imagesTr" / "a.nii.gz").write_bytes(b"")
    (root / "imagesTr" / "b_0001.nii.gz").write_bytes(b"")
    assert _error(root) == (f"{root / 'imagesTr'}: files not named <case>_NNNN.nii.gz (nnU-Net channel files, "
                            "1 channel(s): <case>_0000.nii.gz): ['a.nii.gz']")
    (root / "imagesTr" / "a.nii.gz").unlink()
    assert _error(root) == (f"{root / 'imagesTr'}: case 'b' has channel files ['b_0001.nii.gz']; expected exactly "
                            "['b_0000.nii.gz'] (1 channel(s))")


def test_nnunet_missing_labels_are_named(tmp_path):
    root = tmp_path / "ds"
    _folder(root, NNUNET, ["imagesTr/a_0000.nii.gz", "imagesTr/b_0000.nii.gz", "labelsTr/a.nii.gz"])
    assert _error(root) == f"{root / 'labelsTr'}: no label for case(s) ['b']"


DECATHLON = {"labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"}}


@pytest.mark.parametrize("training,message", [
    ({"image": "a.nii.gz"}, "'training' must be a list"),
    ([], "the 'training' list is empty"),
    ([{"label": "a_seg.nii.gz"}], "training[0] must have an 'image' path, got {'label': 'a_seg.nii.gz'}"),
    ([{"image": "a.nii.gz"}], "training[0] has no 'label'"),
    ([{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, {"image": "b.nii.gz", "label": "gone.nii.gz"}],
     "training[1] refers to missing file {root}/gone.nii.gz"),
    ([{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, {"image": "sub/a.nii.gz", "label": "a_seg.nii.gz"}],
     "duplicate case name(s) in 'training': ['a']"),
])
def test_decathlon_list_rejections(tmp_path, training, message):
    root = (tmp_path / "ds").resolve()
    js = _folder(root, {**DECATHLON, "training": training},
                 ["a.nii.gz", "a_seg.nii.gz", "b.nii.gz", "sub/a.nii.gz"])
    assert _error(root) == f"{js}: " + message.replace("{root}", str(root))


def test_decathlon_validation_entries_need_labels(tmp_path):
    root = (tmp_path / "ds").resolve()
    js = _folder(root, {**DECATHLON, "training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}],
                        "validation": [{"image": "b.nii.gz"}]}, ["a.nii.gz", "a_seg.nii.gz", "b.nii.gz"])
    assert _error(root) == f"{js}: validation[0] has no 'label'"
