"""The fetched cache: pinned archives, and conversions that match the files they came from."""

from __future__ import annotations

import numpy as np
import pytest

from vmunet.data.examples import SOURCES, file_sha256

pytestmark = pytest.mark.real


@pytest.mark.parametrize("key", list(SOURCES))
def test_real_downloads_match_their_pinned_sha256(key, real_cache, request):
    request.getfixturevalue({"pydicom": "pydicom_files"}.get(key, key))
    path = real_cache / "downloads" / SOURCES[key].filename
    assert path.stat().st_size == SOURCES[key].size
    assert file_sha256(path) == SOURCES[key].sha256


def test_real_headct_labels_are_the_hu_thresholds_and_slabs_tile_the_scan(invesalius):
    import nibabel as nib

    root = invesalius["root"]
    ct_img = nib.load(str(root / "files" / "cranium.nii.gz"))
    ct = np.asarray(ct_img.dataobj)
    lab = np.asarray(nib.load(str(root / "files" / "cranium_label.nii.gz")).dataobj)
    assert ct.shape == (256, 256, 108) and ct.dtype == np.int16 and (ct.min(), ct.max()) == (-1024, 2986)
    np.testing.assert_allclose(np.diag(ct_img.affine)[:3], [0.9570312, 0.9570312, 1.5], rtol=1e-6)
    expected = (ct >= -142).astype(np.uint8) + (ct >= 226)  # soft tissue >= -142 HU, bone >= 226 HU
    np.testing.assert_array_equal(lab, expected)
    parts, labels = [], []
    for s, n in enumerate((27, 27, 27, 27)):
        split = "Ts" if s == 2 else "Tr"
        img = nib.load(str(root / "headct" / f"images{split}" / f"cranium_slab{s}_0000.nii.gz"))
        assert img.shape == (256, 256, n)
        np.testing.assert_allclose(img.affine[:3, 3], ct_img.affine[:3, :3] @ [0, 0, 27 * s] + ct_img.affine[:3, 3])
        parts.append(np.asarray(img.dataobj))
        labels.append(np.asarray(nib.load(str(root / "headct" / f"labels{split}" / f"cranium_slab{s}.nii.gz")).dataobj))
    np.testing.assert_array_equal(np.concatenate(parts, axis=2), ct)
    np.testing.assert_array_equal(np.concatenate(labels, axis=2), lab)


def test_real_mr_kmeans_labels_are_the_itk_classes(itk):
    import nibabel as nib

    root = itk["root"]
    t1 = nib.load(str(root / "files" / "KmeansTest_T1UCharRaw.nii.gz"))
    k = np.asarray(nib.load(str(root / "files" / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz")).dataobj)
    expected = np.select([k == c for c in (2, 3, 4, 5, 6)], [1, 2, 3, 4, 5], 0)  # 0, 1 -> background
    got, img = [], []
    edges = [0, 16, 31, 46, 62]  # 62 coronal slices in 4 slabs (np.linspace rounding)
    for s in range(4):
        split = "Ts" if s == 2 else "Tr"
        im = nib.load(str(root / "mr_kmeans" / f"images{split}" / f"t1_slab{s}_0000.nii.gz"))
        assert im.shape == (128, 128, edges[s + 1] - edges[s])
        np.testing.assert_allclose(im.affine, t1.affine @ np.array(
            [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, edges[s]], [0, 0, 0, 1]]), atol=1e-5)
        img.append(np.asarray(im.dataobj))
        got.append(np.asarray(nib.load(str(root / "mr_kmeans" / f"labels{split}" / f"t1_slab{s}.nii.gz")).dataobj))
    np.testing.assert_array_equal(np.concatenate(img, axis=2), np.asarray(t1.dataobj))
    np.testing.assert_array_equal(np.concatenate(got, axis=2), expected)


def test_real_lesion_pairs_match_the_nrrd_files(pyradiomics):
    import SimpleITK as sitk

    root = pyradiomics["root"]
    voxels = {}
    for folder, cases in (("lesions_ct", ("lung1", "lung2")), ("lesions_mr", ("brain1", "brain2", "breast1"))):
        for case in cases:
            for kind, conv in (("image", f"imagesTr/{case}_0000.nii.gz"), ("label", f"labelsTr/{case}.nii.gz")):
                a = sitk.ReadImage(str(root / "files" / f"{case}_{kind}.nrrd"))
                b = sitk.ReadImage(str(root / folder / conv))
                np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-3)
                np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
                np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), rtol=1e-6)
                np.testing.assert_array_equal(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a))
            voxels[case] = int(sitk.GetArrayFromImage(a).sum())
    # the lesion sizes the research notes measured independently
    assert voxels == {"brain1": 4137, "brain2": 453, "breast1": 143, "lung1": 837, "lung2": 24644}
