"""``vmunet data fetch-examples`` offline: a local PEP 503 index (file:// URLs) and hand-made
packages stand in for PyPI and Debian, so download, sha256 pinning, caching, atomicity, conversion
and the error messages are all exercised without the network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import plistlib
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vmunet.data import examples as E


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def local_index(root: Path, package: str, files: list[Path]) -> str:
    """A PEP 503 simple index in ``root`` listing ``files`` for ``package``; returns its URL."""
    page = root / "simple" / package
    page.mkdir(parents=True)
    links = "".join(f'<a href="{f.as_uri()}#sha256={sha(f)}">{f.name}</a><br/>' for f in files)
    (page / "index.html").write_text(f"<html><body>{links}</body></html>")
    return (root / "simple").as_uri() + "/"


class _Index:
    """urllib cannot open a file:// *folder*: map ``<index>/<pkg>/`` to its index.html."""

    def __init__(self, monkeypatch) -> None:
        import urllib.request

        self.calls: list[str] = []
        real = urllib.request.urlopen

        def urlopen(url, *a, **k):
            self.calls.append(url)
            if url.startswith("file:") and url.endswith("/"):
                url += "index.html"
            return real(url, *a, **k)

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)


# ----------------------------------------------------------------------------- fake packages
CASES = {  # case -> (shape x, y, z; direction) of a tiny NRRD like pyradiomics' (brain: LAS)
    "brain1": ((12, 10, 5), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),  # LPS-stored matrix of an LAS volume
    "brain2": ((12, 10, 4), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "breast1": ((9, 11, 3), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    "lung1": ((16, 14, 6), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    "lung2": ((16, 14, 5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
}


def fake_pyradiomics(tmp: Path) -> Path:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    data = tmp / "src"
    data.mkdir()
    for case, (shape, direction) in CASES.items():
        arr = rng.integers(-1000, 1000, size=shape[::-1], dtype=np.int16)
        lab = (rng.random(shape[::-1]) > 0.9).astype(np.int32)
        for name, a in (("image", arr), ("label", lab)):
            img = sitk.GetImageFromArray(a)
            img.SetSpacing((0.7, 0.8, 5.0))
            img.SetOrigin((10.0, -20.0, 30.0))
            img.SetDirection(direction)
            sitk.WriteImage(img, str(data / f"{case}_{name}.nrrd"), True)
    out = tmp / "pyradiomics-3.1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(data.iterdir()):
            tar.add(p, arcname=f"pyradiomics-3.1.0/data/{p.name}")
    return out


def ar_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A minimal .deb: ``ar`` archive with debian-binary and data.tar.xz holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buf.getvalue())]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, blob in members:
            f.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode())
            f.write(blob + (b"\n" if len(blob) % 2 else b""))
    return path


def fake_invesalius(tmp: Path) -> tuple[Path, np.ndarray]:
    """A Cranium.inv3 like InVesalius': int16 (z, y, x) matrix, masks padded by one in front."""
    rng = np.random.default_rng(1)
    shape = (8, 6, 5)  # z, y, x
    ct = rng.integers(-1024, 3000, size=shape).astype(np.int16)

    def mask(lo: int) -> bytes:
        m = np.zeros(tuple(s + 1 for s in shape), np.uint8)
        m[1:, 1:, 1:] = np.where(ct >= lo, 255, 0)
        m[0] = 255  # padding slice: must be cropped away
        return m.tobytes()

    main = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(shape)},
            "spacing": [0.9, 0.8, 1.5], "name": "fake CT",
            "masks": {"0": "mask_0.plist", "1": "mask_1.plist"}}
    files = {"main.plist": plistlib.dumps(main), "matrix.dat": ct.tobytes(),
             "mask_0.plist": plistlib.dumps({"mask_file": "mask_0.dat", "threshold_range": [226, 3071]}),
             "mask_1.plist": plistlib.dumps({"mask_file": "mask_1.dat", "threshold_range": [-142, 2986]}),
             "mask_0.dat": mask(226), "mask_1.dat": mask(-142)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"tmpabc/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    deb = ar_deb(tmp / E.SOURCES["invesalius"].filename,
                 {"usr/share/doc/invesalius-examples/examples/Cranium.inv3": buf.getvalue()})
    return deb, ct


def pin(monkeypatch, key: str, path: Path) -> E.Source:
    src = dataclasses.replace(E.SOURCES[key], sha256=sha(path), size=path.stat().st_size)
    monkeypatch.setitem(E.SOURCES, key, src)
    return src


# ----------------------------------------------------------------------------- tests
def test_pypi_source_downloads_verifies_converts_and_is_cached(tmp_path, monkeypatch):
    import SimpleITK as sitk

    sdist = fake_pyradiomics(tmp_path)
    pin(monkeypatch, "pyradiomics", sdist)
    monkeypatch.setenv("PIP_INDEX_URL", local_index(tmp_path / "index", "pyradiomics", [sdist]))
    index = _Index(monkeypatch)
    cache = tmp_path / "cache"

    out = E.fetch_examples(cache, ["pyradiomics"])
    assert out["pyradiomics"]["status"] == "ready", out
    assert (cache / "downloads" / sdist.name).read_bytes() == sdist.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["downloads", "pyradiomics"]  # no temp leftovers

    # converted pairs keep the NRRD geometry and voxels; labels become uint8 0/1
    for folder, cases, modality in (("lesions_ct", E.RADIOMICS_CT, "CT"), ("lesions_mr", E.RADIOMICS_MR, "MR")):
        root = cache / "pyradiomics" / folder
        from vmunet.data.nifti_format import index_folder

        idx = index_folder(root)
        assert [c.name for c in idx.train] == sorted(cases) and idx.channels == [modality]
        assert idx.class_names == ["background", "lesion"]
        for case in cases:
            for kind, conv in (("image", f"imagesTr/{case}_0000.nii.gz"), ("label", f"labelsTr/{case}.nii.gz")):
                a = sitk.ReadImage(str(cache / "pyradiomics" / "files" / f"{case}_{kind}.nrrd"))
                b = sitk.ReadImage(str(root / conv))
                np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-4)
                np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), rtol=1e-6)
                np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
                np.testing.assert_array_equal(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a))
            assert sitk.ReadImage(str(root / f"labelsTr/{case}.nii.gz")).GetPixelID() == sitk.sitkUInt8

    # rerun: nothing is downloaded, not even the index page
    n = len(index.calls)
    assert E.fetch_examples(cache, ["pyradiomics"])["pyradiomics"]["status"] == "ready"
    assert len(index.calls) == n


def test_wrong_sha256_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    sdist = fake_pyradiomics(tmp_path)
    src = pin(monkeypatch, "pyradiomics", sdist)
    monkeypatch.setitem(E.SOURCES, "pyradiomics", dataclasses.replace(src, sha256="0" * 64))
    monkeypatch.setenv("PIP_INDEX_URL", local_index(tmp_path / "index", "pyradiomics", [sdist]))
    _Index(monkeypatch)
    out = E.fetch_examples(tmp_path / "cache", ["pyradiomics"])["pyradiomics"]
    assert out["status"] == "error"
    assert out["error"] == f"pyradiomics: {sdist.name} has sha256 {sha(sdist)}, expected {'0' * 64}"
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


def test_unreachable_index_is_one_line_naming_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "nowhere").as_uri() + "/")
    _Index(monkeypatch)
    err = E.fetch_examples(tmp_path / "cache", ["pydicom"])["pydicom"]["error"]
    assert err.startswith("pydicom: cannot reach the package index ") and "\n" not in err


def test_index_without_the_pinned_file(tmp_path, monkeypatch):
    other = tmp_path / "pyradiomics-3.0.1.tar.gz"
    other.write_bytes(b"x")
    monkeypatch.setenv("PIP_INDEX_URL", local_index(tmp_path / "index", "pyradiomics", [other]))
    _Index(monkeypatch)
    err = E.fetch_examples(tmp_path / "cache", ["pyradiomics"])["pyradiomics"]["error"]
    assert err.endswith("lists no file pyradiomics-3.1.0.tar.gz")


def test_debian_source_without_apt_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(E.shutil, "which", lambda name: None)
    err = E.fetch_examples(tmp_path / "cache", ["itk"])["itk"]["error"]
    assert err.startswith("itk: apt-get not found; the Debian package insighttoolkit5-examples=5.2.1-5+deb12u1 "
                          "needs apt (Debian/Ubuntu), or put insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb")
    assert str(tmp_path / "cache" / "downloads") in err


def test_debian_package_put_by_hand_is_verified_and_converted(tmp_path, monkeypatch):
    """No apt: the .deb placed in downloads/ is used; the head CT conversion is checked voxel by voxel."""
    import nibabel as nib

    monkeypatch.setattr(E.shutil, "which", lambda name: None)
    deb, ct = fake_invesalius(tmp_path)
    pin(monkeypatch, "invesalius", deb)
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / deb.name).write_bytes(deb.read_bytes())
    assert E.fetch_examples(cache, ["invesalius"])["invesalius"]["status"] == "ready"

    whole = nib.load(str(cache / "invesalius" / "files" / "cranium.nii.gz"))
    lab = nib.load(str(cache / "invesalius" / "files" / "cranium_label.nii.gz"))
    np.testing.assert_array_equal(np.asarray(whole.dataobj), ct.transpose(2, 1, 0))  # (z,y,x) -> (x,y,z)
    expected = np.zeros(ct.shape, np.uint8)  # written out from the HU thresholds, not the masks
    expected[ct >= -142] = 1
    expected[ct >= 226] = 2
    np.testing.assert_array_equal(np.asarray(lab.dataobj), expected.transpose(2, 1, 0))
    np.testing.assert_allclose(whole.affine, np.diag([0.9, 0.8, 1.5, 1.0]))

    # 4 slabs along z (8 slices -> 2 each), slab 2 held out; each slab's origin moves with it
    root = cache / "invesalius" / "headct"
    for s in range(4):
        part = "Ts" if s == 2 else "Tr"
        img = nib.load(str(root / f"images{part}" / f"cranium_slab{s}_0000.nii.gz"))
        np.testing.assert_array_equal(np.asarray(img.dataobj), ct.transpose(2, 1, 0)[:, :, 2 * s:2 * s + 2])
        np.testing.assert_allclose(img.affine[:3, 3], [0.0, 0.0, 1.5 * 2 * s])
        seg = nib.load(str(root / f"labels{part}" / f"cranium_slab{s}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(seg.dataobj), expected.transpose(2, 1, 0)[:, :, 2 * s:2 * s + 2])


def test_masks_that_are_not_their_thresholds_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(E.shutil, "which", lambda name: None)
    monkeypatch.setattr(E, "HEADCT_BONE_HU", 300)  # the archive's masks no longer match the declared HU
    deb, _ = fake_invesalius(tmp_path)
    pin(monkeypatch, "invesalius", deb)
    (tmp_path / "cache" / "downloads").mkdir(parents=True)
    (tmp_path / "cache" / "downloads" / deb.name).write_bytes(deb.read_bytes())
    err = E.fetch_examples(tmp_path / "cache", ["invesalius"])["invesalius"]["error"]
    assert "masks are" in err and not (tmp_path / "cache" / "invesalius").exists()


def test_cli_exit_status_and_one_line_error(tmp_path, monkeypatch):
    env = {"PIP_INDEX_URL": (tmp_path / "nowhere").as_uri() + "/", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "vmunet", "data", "fetch-examples", "--cache",
                           str(tmp_path / "c"), "--source", "pydicom"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert errors[0].startswith("vmunet data fetch-examples: error: pydicom: cannot reach the package index")
    assert "Traceback" not in proc.stderr


def test_fetch_examples_parser_does_not_import_torch():
    code = ("import argparse, sys\n"
            "from vmunet.data import examples_commands as m\n"
            "p = argparse.ArgumentParser(); m.add_parsers(p.add_subparsers())\n"
            "a = p.parse_args(['data', 'fetch-examples', '--source', 'itk'])\n"
            "print(a.source, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["['itk']", "False"], out.stderr


def test_default_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VMUNET_DATA", str(tmp_path / "x"))
    assert E.default_cache() == tmp_path / "x"
    monkeypatch.delenv("VMUNET_DATA")
    assert E.default_cache() == Path.home() / ".cache" / "vmunet" / "examples"


@pytest.mark.parametrize("name,slice_axis", [("real_headct", 2), ("real_mr_kmeans", 1)])
def test_real_recipes_parse(name, slice_axis, capsys):
    """The recipes of the real tier parse without the data (their folders are only opened at fit)."""
    import yaml

    from vmunet.training.cli import run_lightning_cli

    config = Path(__file__).resolve().parents[2] / "experiments" / f"{name}.yaml"
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model_name"] == "vmunet_test"
    # constant lr: a decay over a run this short spends its high rates on the plateau before the
    # small classes start to learn (README "Real data"); no warm-up either
    assert cfg["model"]["scheduler"] == "constant"
    assert cfg["model"].get("warmup_epochs", 0) == 0
    assert cfg["data"]["class_path"] == "vmunet.data.nifti.NiftiDataModule"
    assert cfg["data"]["init_args"]["slice_axis"] == slice_axis
