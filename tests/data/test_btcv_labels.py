"""All eight BTCV -> Synapse label ids, pinned against the published table (not our own constant).

The expected ids come from the TransUNet paper's Synapse 8-organ setting (1 aorta, 2 gallbladder,
3 left kidney, 4 right kidney, 5 liver, 6 pancreas, 7 spleen, 8 stomach; the same table is used by
Swin-Unet and VM-UNet, and written out in mmsegmentation's ``tools/dataset_converters/synapse.py``)
and the BTCV challenge's label list. The original TransUNet / VM-UNet repositories ship only the
already converted data, so these names are the independent reference.

Each BTCV organ gets its own HU value inside the Synapse window, so every output voxel says which
raw label it came from no matter how the conversion reorients the volume.
"""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np

from vmunet.data.prepare import prepare_synapse
from vmunet.data.synapse import SynapseDataModule

# BTCV challenge labels (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen).
BTCV_ORGANS = {
    1: "spleen", 2: "right_kidney", 3: "left_kidney", 4: "gallbladder", 5: "esophagus", 6: "liver",
    7: "stomach", 8: "aorta", 9: "inferior_vena_cava", 10: "portal_and_splenic_vein", 11: "pancreas",
    12: "right_adrenal_gland", 13: "left_adrenal_gland",
}
# Synapse 8-organ classes as numbered by TransUNet / VM-UNet.
SYNAPSE_ORGANS = ("background", "aorta", "gallbladder", "left_kidney", "right_kidney",
                  "liver", "pancreas", "spleen", "stomach")


def _hu(btcv_label: int) -> int:
    return -100 + 20 * btcv_label  # -100 .. 160 HU: all inside the [-125, 275] window, all distinct


def _btcv_of(image: np.ndarray) -> np.ndarray:
    """Invert the window (HU + 125) / 400 and ``_hu`` to recover the raw BTCV label of each voxel."""
    return np.rint((image.astype(np.float64) * 400 - 125 + 100) / 20).astype(int)


def _expected_synapse(btcv: np.ndarray) -> np.ndarray:
    table = {0: 0}
    for lab, name in BTCV_ORGANS.items():
        table[lab] = SYNAPSE_ORGANS.index(name) if name in SYNAPSE_ORGANS else 0
    return np.vectorize(table.__getitem__)(btcv)


def _raw_case(root, cid):
    # Every BTCV id 0..13 on a 4 x 4 x 2 grid, in a different order in each slice; an oblique
    # (flipping) affine so the conversion's reorientation is exercised too.
    labels = np.zeros((4, 4, 2), np.uint8)
    labels.reshape(-1, 2)[:14, 0] = np.arange(14)
    labels.reshape(-1, 2)[:14, 1] = np.arange(13, -1, -1)
    hu = _hu(labels.astype(np.int16))
    affine = np.array([[-1.5, 0, 0, 5], [0, -1.5, 0, 7], [0, 0, 3.0, -9], [0, 0, 0, 1]])
    for sub, name, arr in (("img", f"img{cid:04d}.nii.gz", hu), ("label", f"label{cid:04d}.nii.gz", labels)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, affine), str(root / sub / name))


def test_btcv_to_synapse_table_pins_all_eight_organs():
    # The table itself: 8 organs kept, the other 5 BTCV organs dropped to background.
    btcv = np.arange(14)
    expected = _expected_synapse(btcv)
    assert sorted(expected[expected > 0].tolist()) == list(range(1, 9))
    assert [BTCV_ORGANS[b] for b in btcv[expected == 0][1:]] == [
        "esophagus", "inferior_vena_cava", "portal_and_splenic_vein", "right_adrenal_gland", "left_adrenal_gland"]


def test_prepare_synapse_maps_every_btcv_label(tmp_path):
    raw = tmp_path / "raw"
    for cid in (1, 5):  # 1 is a standard test case, 5 a standard training case
        _raw_case(raw, cid)
    prepare_synapse(raw, tmp_path / "out")
    with h5py.File(tmp_path / "out" / "test_vol_h5" / "case0001.npy.h5") as f:
        image, label = f["image"][()], f["label"][()]
    btcv = _btcv_of(image)
    assert sorted(np.unique(btcv).tolist()) == list(range(14))
    np.testing.assert_array_equal(label, _expected_synapse(btcv))
    assert sorted(np.unique(label).tolist()) == list(range(9))
    for k in range(2):
        with np.load(tmp_path / "out" / "train_npz" / f"case0005_slice{k:03d}.npz") as z:
            np.testing.assert_array_equal(z["label"], _expected_synapse(_btcv_of(z["image"])))
    dm = SynapseDataModule(str(tmp_path / "out"), num_workers=0, image_size=32, val_cases=0)
    dm.setup("test")
    assert dm.class_names == list(SYNAPSE_ORGANS)

