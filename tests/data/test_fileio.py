"""The checks and atomic writes of ``vmunet.data.fileio`` on hand-made arrays and files: label values
at the edges of the declared classes, infinities as well as NaN, boolean masks, and what an
interrupted or disk-full write leaves behind."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from vmunet.data.errors import DataError
from vmunet.data.fileio import atomic_path, check_image_finite, check_labels


def test_label_values_from_0_to_num_labels_minus_1_are_accepted_as_int64():
    lab = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    out = check_labels("l.nii.gz", lab, 3)
    assert out.dtype == np.int64 and out.tolist() == [[0, 1], [2, 2]]
    assert check_labels("l.nii.gz", np.array([0.0, 2.0], dtype=np.float32), 3).tolist() == [0, 2]


@pytest.mark.parametrize("values,bad", [([0, 3], [3]), ([-1, 0], [-1]), ([-1, 1, 3, 4], [-1, 3, 4])])
def test_label_values_just_outside_the_classes_are_refused(values, bad):
    with pytest.raises(DataError) as err:
        check_labels("l.nii.gz", np.array(values, dtype=np.int16), 3)
    assert str(err.value) == f"l.nii.gz: label values {bad} outside the declared classes 0..2"


def test_boolean_masks_are_class_ids_0_and_1():
    assert check_labels("m.png", np.array([True, False, True]), 2).tolist() == [1, 0, 1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_label_is_refused(bad):
    with pytest.raises(DataError) as err:
        check_labels("l.nii.gz", np.array([0.0, bad, 1.0]), 3)
    assert str(err.value) == "l.nii.gz: label contains NaN or infinite values"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_image_with_a_nan_or_infinite_voxel_is_refused(bad, dtype):
    image = np.zeros((2, 3, 4), dtype=dtype)
    check_image_finite("i.nii.gz", image)
    check_image_finite("i.nii.gz", np.full((2, 2), 7, dtype=np.int16))  # integer images are finite
    image[1, 2, 3] = bad
    with pytest.raises(DataError) as err:
        check_image_finite("i.nii.gz", image)
    assert str(err.value) == "i.nii.gz: image contains NaN or infinite values"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="writer crashed"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("reported", ["none", "temporary"])
def test_a_full_disk_names_the_file_being_written(tmp_path, reported):
    # writers report ENOSPC without a file name or with the temporary file's: either way the
    # error names the output path, and nothing is left behind
    target = tmp_path / "out" / "pred.nii.gz"
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", *([] if reported == "none" else [str(tmp)]))
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    assert str(err.value) == f"[Errno 28] No space left on device: '{target}'"
    assert list((tmp_path / "out").iterdir()) == []
