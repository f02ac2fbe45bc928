"""Bad training/validation files fail at setup, all listed at once, not when first drawn; files that
passed are not read again while unchanged; ``check_files=False`` skips the pass."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from vmunet.data import synapse as synapse_mod
from vmunet.data.errors import DataError
from vmunet.data.fileio import write_npz_slice
from vmunet.data.synapse import SynapseDataModule


@pytest.fixture
def synapse_copy(synapse_root, tmp_path):
    out = tmp_path / "synapse"
    shutil.copytree(synapse_root, out)
    return out


def _slices(root):
    return sorted((root / "train_npz").glob("*.npz"))


def test_bad_slices_fail_at_setup_all_named(synapse_copy):
    slices = _slices(synapse_copy)
    img = np.zeros((32, 32), np.float32)
    write_npz_slice(slices[-1], img, np.full((32, 32), 12, np.uint8))           # label outside 0..8
    np.savez(slices[-2], image=np.full((32, 32), np.nan, np.float32), label=np.zeros((32, 32), np.uint8))
    np.savez(slices[-3], image=img, label=np.zeros((16, 32), np.uint8))         # shape mismatch
    dm = SynapseDataModule(str(synapse_copy), image_size=32, num_workers=0, val_cases=1)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert msg.startswith(f"3 of {len(slices)} Synapse training/validation slices are unusable")
    assert f"{slices[-1]}: label values [12] outside the declared classes 0..8" in msg
    assert f"{slices[-2]}: image contains NaN" in msg and f"{slices[-3]}: image/label shape mismatch" in msg
    # switched off, setup passes (the files would fail when drawn)
    SynapseDataModule(str(synapse_copy), image_size=32, num_workers=0, val_cases=1, check_files=False).setup("fit")


def test_passed_files_are_not_read_again_until_they_change(synapse_copy, monkeypatch):
    reads = []
    real = synapse_mod.read_npz_slice
    monkeypatch.setattr(synapse_mod, "read_npz_slice", lambda p, n: (reads.append(p), real(p, n))[1])
    slices = _slices(synapse_copy)
    dm = lambda: SynapseDataModule(str(synapse_copy), image_size=32, num_workers=0, val_cases=1)  # noqa: E731
    dm().setup("fit")
    assert sorted(reads) == slices
    reads.clear()
    dm().setup("fit")
    assert reads == []
    st = os.stat(slices[0])
    os.utime(slices[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dm().setup("fit")
    assert reads == [slices[0]]


def test_isic_mask_of_another_size_fails_at_setup(isic_root, tmp_path):
    from PIL import Image

    from vmunet.data.isic import ISICDataModule

    root = tmp_path / "isic"
    shutil.copytree(isic_root, root)
    mask = sorted((root / "val" / "masks").iterdir())[0]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    dm = ISICDataModule(str(root), image_size=32, num_workers=0)
    with pytest.raises(DataError, match=rf"1 of \d+ ISIC training/validation image-mask pairs are unusable: {mask}"):
        dm.setup("fit")


def test_nifti_label_out_of_range_fails_at_setup(nifti_ct, tmp_path):
    import nibabel as nib

    from vmunet.data.nifti import NiftiDataModule

    root = tmp_path / "nifti"
    shutil.copytree(nifti_ct, root)
    label = sorted((root / "labelsTr").iterdir())[-1]
    img = nib.load(label)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 77
    nib.save(nib.Nifti1Image(data, img.affine), label)
    dm = NiftiDataModule(str(root), image_size=24, num_workers=0, val_cases=1, cache=False)
    with pytest.raises(DataError, match=rf"1 of \d+ NIfTI training/validation cases are unusable: .*{label.name}"
                                        r".*label values \[77\]"):
        dm.setup("fit")


def test_json_and_list_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    """What vmunet writes is UTF-8 (``fileio.write_text``); reading used the locale's encoding, so a
    dataset.json with a non-ASCII class name failed under an ASCII locale (LC_ALL=C)."""
    import subprocess
    import sys

    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "Leber (foie, 肝臓)": 1}}\n',
                                           encoding="utf-8")
    (tmp_path / "train.txt").write_text("caso_ñ\n", encoding="utf-8")
    code = ("import locale, sys; from pathlib import Path\n"
            "from vmunet.data.fileio import read_json\nfrom vmunet.data.synapse import _read_lines\n"
            "assert locale.getencoding() in ('ANSI_X3.4-1968', 'ascii', 'US-ASCII'), locale.getencoding()\n"
            "d = Path(sys.argv[1])\nprint(ascii(sorted(read_json(d / 'dataset.json')['labels'])), "
            "ascii(_read_lines(d / 'train.txt')))\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("['Leber (foie, \\u809d\\u81d3)', 'background'] ['caso_\\xf1']")
