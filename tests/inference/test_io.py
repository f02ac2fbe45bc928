"""Reading scans to RAS (checked against MONAI) and writing label maps in exactly the input geometry."""

from __future__ import annotations

import json
import locale
import os
import warnings

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import oblique_affine, sitk_image, write_nifti

from vmunet.inference import io

# (spacing, angles, flips, perm): oblique + anisotropic; negative strides + permuted axes; plain LPS
GEOMETRIES = {
    "oblique_anisotropic": oblique_affine(),
    "negative_strides_permuted": oblique_affine(spacing=(1.1, 0.6, 3.0), angles=(0.05, 0.1, -0.4),
                                                flips=(-1, 1, -1), perm=(2, 0, 1)),
    "lps_axis_aligned": oblique_affine(spacing=(0.8, 0.8, 2.0), angles=(0, 0, 0), flips=(-1, -1, 1)),
}


def monai_ras(path) -> np.ndarray:
    """What the training side sees: MONAI LoadImage + Orientation(RAS)."""
    from monai.transforms import LoadImage, Orientation

    img = LoadImage(image_only=True)(str(path))
    with warnings.catch_warnings():  # MONAI's notice about its own default of `labels`
        warnings.simplefilter("ignore", FutureWarning)
        return np.asarray(Orientation(axcodes="RAS")(img[None])[0])


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_nifti_round_trip_keeps_header_and_matches_monai(tmp_path, name):
    affine = GEOMETRIES[name]
    rng = np.random.default_rng(1)
    data = rng.normal(size=(11, 13, 7)).astype(np.float32)
    # qform != sform (another rotation and origin, same voxel sizes as a consistent header has;
    # MONAI "rectifies" headers whose pixdim disagrees with the sform, nibabel does not)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    qform = oblique_affine(spacing=zooms, angles=(0.1, 0.0, 0.0), origin=(1.0, 2.0, 3.0))
    src = write_nifti(tmp_path / "in.nii.gz", data, affine, qform=qform, qcode=1, scode=2)
    scan = io.read_scan(src)
    np.testing.assert_array_equal(scan.array, monai_ras(src))
    assert np.allclose(scan.spacing, sorted_spacing(affine, scan))

    labels = (np.arange(scan.array.size).reshape(scan.array.shape) % 5).astype(np.int64)
    out = io.write_label_map(scan, labels, tmp_path / "out.nii.gz")
    got, ref = nib.load(str(out)), nib.load(str(src))
    assert got.shape == ref.shape and got.get_data_dtype() == np.uint8
    for attr in ("get_qform", "get_sform"):
        (g, gc), (r, rc) = getattr(got.header, attr)(coded=True), getattr(ref.header, attr)(coded=True)
        assert gc == rc
        np.testing.assert_array_equal(g, r)
    np.testing.assert_array_equal(got.header["pixdim"], ref.header["pixdim"])
    np.testing.assert_array_equal(got.header["xyzt_units"], ref.header["xyzt_units"])
    # the label map read back the same way lands on the same RAS voxels
    np.testing.assert_array_equal(io.read_scan(out).array, labels)
    # and in file layout it is the inverse reorientation of what we wrote
    np.testing.assert_array_equal(np.asarray(got.dataobj), scan.to_original(labels))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(io.TEMP_PREFIX)]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def sorted_spacing(affine, scan):
    """Voxel sizes of the RAS array: the original voxel sizes permuted by the reorientation."""
    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return [vox[int(np.flatnonzero(scan.ornt[:, 0] == j)[0])] for j in range(3)]


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
@pytest.mark.parametrize("name", ["oblique_anisotropic", "negative_strides_permuted"])
def test_sitk_round_trip(tmp_path, ext, name):
    affine = GEOMETRIES[name]
    data = np.random.default_rng(2).integers(-500, 500, size=(9, 12, 5)).astype(np.int16)
    src = tmp_path / f"case{ext}"
    sitk.WriteImage(sitk_image(data, affine), str(src))
    twin = write_nifti(tmp_path / "twin.nii.gz", data, affine)  # same voxels + geometry as NIfTI
    scan = io.read_scan(src)
    assert scan.name == "case"
    np.testing.assert_array_equal(scan.array, monai_ras(twin))
    np.testing.assert_allclose(scan.affine, io.read_scan(twin).affine, atol=1e-5)

    labels = (scan.array > 0).astype(np.uint8) + (scan.array > 300)
    out = io.write_label_map(scan, labels, tmp_path / "case_seg.nii.gz")
    got, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(src))
    assert got.GetSize() == ref.GetSize()
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-6)
    expected = (data > 0).astype(np.uint8) + (data > 300)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got).transpose(2, 1, 0), expected)


def write_synapse_h5(folder, name, nifti_path, with_sidecar=True):
    """A test_vol_h5 case per the contract: canonical array .transpose(2, 1, 0) + geometry sidecar."""
    img = nib.load(str(nifti_path))
    can = nib.as_closest_canonical(img)
    arr = np.asarray(can.dataobj)
    with h5py.File(folder / f"{name}.npy.h5", "w") as f:
        f["image"] = arr.transpose(2, 1, 0)
        f["label"] = (arr > 0).astype(np.uint8).transpose(2, 1, 0)
    if with_sidecar:
        zooms = [float(z) for z in can.header.get_zooms()]
        (folder / f"{name}.geometry.json").write_text(json.dumps({
            "source": nifti_path.name, "affine": img.affine.tolist(), "shape": list(img.shape),
            "orientation": "RAS", "layout": "DHW", "spacing_dhw": [zooms[2], zooms[1], zooms[0]]}))
    return folder / f"{name}.npy.h5"


def test_synapse_h5_with_sidecar_writes_original_geometry(tmp_path):
    affine = GEOMETRIES["negative_strides_permuted"]
    data = np.random.default_rng(3).normal(size=(10, 8, 6)).astype(np.float32)
    src = write_nifti(tmp_path / "case0001.nii.gz", data, affine, scode=1)
    h5 = write_synapse_h5(tmp_path, "case0001", src)
    scan, ref = io.read_scan(h5), io.read_scan(src)
    assert scan.name == "case0001"
    np.testing.assert_array_equal(scan.array, ref.array)
    np.testing.assert_allclose(scan.affine, ref.affine)
    np.testing.assert_allclose(scan.spacing, ref.spacing)
    labels = (scan.array > 0).astype(np.uint8)
    out = nib.load(str(io.write_label_map(scan, labels, tmp_path / "out.nii.gz")))
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj), (data > 0).astype(np.uint8))
    np.testing.assert_array_equal(io.read_scan(h5, label=True).array, labels)


def test_synapse_h5_without_sidecar_warns_and_uses_identity(tmp_path):
    src = write_nifti(tmp_path / "c.nii.gz", np.ones((4, 5, 3), np.float32), np.eye(4))
    h5 = write_synapse_h5(tmp_path, "c", src, with_sidecar=False)
    with pytest.warns(UserWarning, match=r"no geometry sidecar c\.geometry\.json"):
        scan = io.read_scan(h5)
    assert scan.array.shape == (4, 5, 3)
    out = nib.load(str(io.write_label_map(scan, np.zeros((4, 5, 3), np.uint8), tmp_path / "o.nii.gz")))
    np.testing.assert_array_equal(out.affine, np.eye(4))


def test_h5_shape_mismatching_sidecar_is_an_error(tmp_path):
    src = write_nifti(tmp_path / "c.nii.gz", np.ones((4, 5, 3), np.float32), np.eye(4))
    h5 = write_synapse_h5(tmp_path, "c", src)
    side = tmp_path / "c.geometry.json"
    meta = json.loads(side.read_text())
    meta["shape"] = [4, 5, 9]
    side.write_text(json.dumps(meta))
    with pytest.raises(io.ScanReadError, match=r"c\.npy\.h5: array shape \(3, 5, 4\) \(DHW\) does not match sidecar"):
        io.read_scan(h5)


def test_bad_inputs_are_reported_by_name(tmp_path):
    corrupt = tmp_path / "broken.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    with pytest.raises(io.ScanReadError, match=r"broken\.nii\.gz: unreadable or corrupt image file"):
        io.read_scan(corrupt)
    four_d = write_nifti(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(io.ScanReadError, match=r"fmri\.nii\.gz: expected a 3D volume, got an array of shape \(4, 4, 3, 2\) \(4D\)"):
        io.read_scan(four_d)
    rgb = np.zeros((4, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    with pytest.raises(io.ScanReadError, match=r"rgb\.nii\.gz: expected a single-channel volume, got 3-component voxels"):
        io.read_scan(tmp_path / "rgb.nii.gz")
    vec = sitk.GetImageFromArray(np.zeros((3, 4, 4, 3), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "vector.mha"))
    with pytest.raises(io.ScanReadError, match=r"vector\.mha: expected a single-channel volume, got 3 components per voxel"):
        io.read_scan(tmp_path / "vector.mha")
    with pytest.raises(io.ScanReadError, match=r"notes\.txt: unsupported file type"):
        io.read_scan(tmp_path / "notes.txt")


def test_find_cases_skips_sidecars_hidden_and_temp_files(tmp_path):
    for name in ("b.nii.gz", "a.mha", "c.npy.h5", "c.geometry.json", "notes.txt",
                 f"{io.TEMP_PREFIX}x.nii.gz", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in io.find_cases(tmp_path)] == ["a.mha", "b.nii.gz", "c.npy.h5"]
    assert [io.case_name(p) for p in io.find_cases(tmp_path)] == ["a", "b", "c"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no scans found in .*empty \(expected files ending in \.nii\.gz"):
        io.find_cases(empty)


def test_interrupted_label_map_write_leaves_nothing(tmp_path, monkeypatch):
    def write(scan, data, tmp):
        assert tmp.name.startswith(io.TEMP_PREFIX) and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "_write_nifti", write)
    arr = np.zeros((3, 4, 5), np.float32)
    scan = io.Scan("a", None, "array", arr, np.eye(4), None, arr.shape)
    with pytest.raises(KeyboardInterrupt):
        io.write_label_map(scan, np.zeros(arr.shape, np.uint8), tmp_path / "out.nii.gz")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def gdcm_writer_locale():
    """GDCM's DICOM writer sets the process's locale to "C" and leaves it so: every later test in
    the process would then read and write text as ASCII. Restore it after the test; the test checks
    that reading DICOM (what vmunet does) leaves the locale alone."""
    saved = locale.setlocale(locale.LC_ALL)
    yield saved
    locale.setlocale(locale.LC_ALL, saved)


def test_dicom_series_folder(tmp_path, gdcm_writer_locale):
    affine = oblique_affine(spacing=(0.9, 0.9, 2.0), angles=(0, 0, 0.2), flips=(-1, -1, 1))
    data = np.random.default_rng(4).integers(-100, 100, size=(8, 7, 4)).astype(np.int16)
    vol = sitk_image(data, affine)
    series = tmp_path / "patient1"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = vol.GetDirection()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")  # series instance UID
        sl.SetMetaData("0020|0037", "\\".join(f"{v:.10f}" for v in (*direction[0::3], *direction[1::3])))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in vol.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(sl)
    locale.setlocale(locale.LC_ALL, gdcm_writer_locale)
    assert [p.name for p in io.find_cases(tmp_path)] == ["patient1"]
    scan = io.read_scan(series)
    assert locale.setlocale(locale.LC_ALL) == gdcm_writer_locale  # reading leaves the locale alone
    assert scan.name == "patient1"
    twin = write_nifti(tmp_path / "twin.nii.gz", data, affine)
    np.testing.assert_array_equal(scan.array, io.read_scan(twin).array)
    np.testing.assert_allclose(scan.affine, io.read_scan(twin).affine, atol=1e-4)


def test_truncated_compressed_dicom_is_refused_in_one_line(tmp_path, gdcm_writer_locale):
    """A multi-frame JPEG 2000 DICOM whose last 8 bytes (the pixel data's sequence delimiter) are
    cut off, like pydicom's ``emri_small_jpeg_2k_lossless_too_short.dcm``: SimpleITK's error spans
    lines and names ITK's C++ source; ours is one line naming the folder, its file and what was
    expected, quoting the line that says what went wrong."""
    arr = (np.arange(3 * 16 * 16).reshape(3, 16, 16) * 7 % 997).astype(np.uint16)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG2000")
    writer.SetFileName(str(tmp_path / "whole.dcm"))
    writer.Execute(sitk.GetImageFromArray(arr))
    data = (tmp_path / "whole.dcm").read_bytes()
    assert data[-8:] == bytes.fromhex("feffdde000000000")  # (FFFE,E0DD) sequence delimiter, length 0
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "cut.dcm").write_bytes(data[:-8])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(folder / "cut.dcm")])
    with pytest.raises(RuntimeError) as raw:
        reader.Execute()
    assert len(str(raw.value).splitlines()) > 1 and ".cxx:" in str(raw.value)  # what used to be passed on
    with pytest.raises(io.ScanReadError) as err:
        io.read_scan(folder)
    assert str(err.value) == (f"{folder}: cannot read its DICOM series (1 file: cut.dcm); expected complete DICOM "
                              "files that GDCM can decode (SimpleITK: GDCMImageIO: Failed to change to Implicit "
                              "Transfer Syntax)")
    whole = tmp_path / "whole_series"
    whole.mkdir()
    (whole / "whole.dcm").write_bytes(data)
    np.testing.assert_array_equal(io.read_scan(whole, orientation=None).array, arr.transpose(2, 1, 0))


def test_input_hash_covers_every_file_of_a_case_in_blocks(tmp_path):
    """``input_sha256`` (and the checkpoint hash, :func:`file_sha256`) against hashlib over whole
    files read at once; the files span several 1 MiB blocks."""
    import hashlib

    from vmunet.data.fileio import file_sha256

    vol = np.random.default_rng(0).normal(size=(40, 90, 80)).astype(np.float32)  # 1.1 MiB of voxels
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.mhd"), False)  # a.mhd + a.raw
    other = tmp_path / "b.nii"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(other))
    mhd, raw = tmp_path / "a.mhd", tmp_path / "a.raw"
    assert raw.stat().st_size > (1 << 20)
    assert file_sha256(raw) == hashlib.sha256(raw.read_bytes()).hexdigest()

    def expected(*files):
        return hashlib.sha256(b"".join(f.name.encode() + b"\0" + f.read_bytes() for f in files)).hexdigest()

    assert io.input_sha256(mhd) == expected(mhd, raw)
    assert io.input_sha256([mhd, other]) == expected(mhd, raw, other)


def test_label_dtype_boundary_and_label_256_survives_the_write(tmp_path):
    # uint8 holds the 256 values 0..255; a label map whose largest value is 256 needs uint16
    assert io.label_dtype(256) == np.uint8 and io.label_dtype(257) == np.uint16
    src = write_nifti(tmp_path / "in.nii.gz", np.zeros((4, 3, 2), np.float32), GEOMETRIES["lps_axis_aligned"])
    scan = io.read_scan(src)
    for top, dtype in ((255, np.uint8), (256, np.uint16)):
        labels = np.zeros(scan.array.shape, np.int64)
        labels[0, 0, 0], labels[1, 0, 0], labels[-1, -1, -1] = 1, top - 1, top
        out = io.write_label_map(scan, labels, tmp_path / f"out{top}.nii.gz")
        assert nib.load(str(out)).get_data_dtype() == dtype
        np.testing.assert_array_equal(io.read_scan(out).array, labels)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_probability_file_has_the_original_affine_and_layout(tmp_path, name):
    # "negative_strides_permuted" permutes the axes by a 3-cycle, the one kind of reorientation
    # whose inverse differs from itself
    affine = GEOMETRIES[name]
    data = np.random.default_rng(6).normal(size=(7, 5, 4)).astype(np.float32)
    src = write_nifti(tmp_path / "in.nii.gz", data, affine)
    scan = io.read_scan(src)
    np.testing.assert_allclose(io.original_affine(scan), nib.load(str(src)).affine, atol=1e-6)
    # class 1 holds the file's own voxel values, so the file layout is easy to recognise
    probs = np.stack([np.zeros_like(scan.array), scan.array / 10.0])
    out = io.write_probabilities(scan, probs, ["background", "organ"], tmp_path / "p.npz")
    with np.load(out) as npz:
        np.testing.assert_allclose(npz["affine"], nib.load(str(src)).affine, atol=1e-6)
        np.testing.assert_allclose(npz["probabilities"][1], (data / 10.0).astype(np.float16))
        assert npz["class_names"].tolist() == ["background", "organ"]


#: NRRD / MetaImage headers of a 10 x 10 x 3 float volume, and whether they state a spacing (ITK
#: reads 1.0 mm where they do not, and for NRRD spacings of nan).
SPACING_HEADERS = {
    "none.nrrd": ("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 3\nencoding: raw\nendian: little\n\n", False),
    "nan.nrrd": ("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 3\nspacings: nan nan nan\nencoding: raw\n"
                 "endian: little\n\n", False),
    "spacings.nrrd": ("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 3\nspacings: 0.5 0.5 2\nencoding: raw\n"
                      "endian: little\n\n", True),
    "directions.nrrd": ("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 10 10 3\n"
                        "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)\nencoding: raw\nendian: little\n\n", True),
    "stated_1mm.nrrd": ("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 3\nspacings: 1 1 1\nencoding: raw\n"
                        "endian: little\n\n", True),
    "none.mha": ("ObjectType = Image\nNDims = 3\nDimSize = 10 10 3\nElementType = MET_FLOAT\n"
                 "ElementDataFile = LOCAL\n", False),
    "size.mha": ("ObjectType = Image\nNDims = 3\nDimSize = 10 10 3\nElementSize = 0.5 0.5 2\n"
                 "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n", True),
    "spacing.mha": ("ObjectType = Image\nNDims = 3\nDimSize = 10 10 3\nElementSpacing = 0.7 0.7 2\n"
                    "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n", True),
}


@pytest.mark.parametrize("name", sorted(SPACING_HEADERS))
def test_nrrd_and_metaimage_without_a_spacing_are_warned_and_marked(tmp_path, caplog, name):
    """What the header states decides (SimpleITK's spacing read alongside: 1.0 where nothing is
    stated); one warning naming the file where nothing is."""
    import logging

    header, stated = SPACING_HEADERS[name]
    path = tmp_path / name
    path.write_bytes(header.encode() + np.arange(300, dtype="<f4").tobytes())
    itk = sitk.ReadImage(str(path)).GetSpacing()
    assert (itk == (1.0, 1.0, 1.0)) is (not stated or name == "stated_1mm.nrrd")
    with caplog.at_level(logging.WARNING, logger="vmunet.inference.io"):
        scan = io.read_scan(path)
    assert scan.spacing_known is stated
    warned = [r.getMessage() for r in caplog.records if "states no spacing" in r.getMessage()]
    assert warned == ([] if stated else [
        f"{path}: its header states no spacing (NRRD 'spacings' / 'space directions', MetaImage 'ElementSpacing' / "
        "'ElementSize'); ITK's nominal 1.0 mm stands in, so its sizes (areas_mm2, volumes_ml) are pixel counts and "
        "HD95 (mm) is not reported (spacing_known false in the sidecar)"])
