"""Real example scans from the package registries: download, verify, convert.

``vmunet data fetch-examples`` (explicit opt-in; nothing here runs at import or in default tests)
brings four packages into a cache folder, checks each file's sha256 against the value pinned
below, and converts what they hold into image/label pairs with their geometry:

=============  ========================================  ==========================================
source         package (registry)                        what it holds
=============  ========================================  ==========================================
pyradiomics    ``pyradiomics`` 3.1.0 sdist (PyPI)        5 patients as NRRD with lesion masks:
                                                         2 chest CT, 2 brain MR (LAS), 1 breast MR
invesalius     ``invesalius-examples`` (Debian)          a head CT (InVesalius project) with two
                                                         HU-threshold masks (bone, body)
itk            ``insighttoolkit5-examples`` (Debian)     a T1 MR (coronal, LSA) with a 6-class
                                                         k-means segmentation; MetaImage/NRRD files
pydicom        ``pydicom-data`` 1.0.0 wheel (PyPI)       68 single-file DICOM objects, no labels
=============  ========================================  ==========================================

Cache layout (``--cache``, default ``$VMUNET_DATA`` or ``~/.cache/vmunet/examples``)::

    downloads/<package file>        the verified archives (a rerun downloads nothing)
    <source>/source.json            package, version, sha256, licence, the files below
    <source>/files/...              the scan files as the package ships them (+ the converted
                                    whole head CT), for reader and geometry checks
    <source>/<dataset>/             nnU-Net raw folders: dataset.json, imagesTr/, labelsTr/
                                    [imagesTs/, labelsTs/] -- ready for NiftiDataModule

Each ``<source>/`` folder is built in a temporary folder and renamed into place only when
complete, so an interrupted run leaves no half-converted source behind.

The PyPI files are taken from the index pip uses (``PIP_INDEX_URL``, else pip's default) through
the simple repository API (PEP 503) -- ``pip download pyradiomics==3.1.0`` itself fails, because
the sdist's built metadata says 3.0.1a1. The Debian files come from ``apt-get download`` (needs
apt and its package lists); on other systems the ``.deb`` can be put into ``downloads/`` by hand
and is verified like a download.
"""

from __future__ import annotations

import html.parser
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data.fileio import atomic_path, file_sha256, read_json, write_json
from vmunet.data.volumes import from_sitk

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder.
CACHE_ENV = "VMUNET_DATA"


class FetchError(RuntimeError):
    """A source could not be downloaded, verified or converted (one line, names the source)."""


@dataclass(frozen=True)
class Source:
    """One registry package with real scans, pinned by file name and sha256."""

    key: str
    registry: str  # "pypi" | "debian"
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    license: str
    content: str


SOURCES: dict[str, Source] = {s.key: s for s in (
    Source("pyradiomics", "pypi", "pyradiomics", "3.1.0", "pyradiomics-3.1.0.tar.gz",
           "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4", 34461233, "BSD-3-Clause",
           "5 patients (2 chest CT, 2 brain MR, 1 breast MR) as NRRD with lesion masks"),
    Source("invesalius", "debian", "invesalius-examples", "3.1.99998-4",
           "invesalius-examples_3.1.99998-4_all.deb",
           "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97", 18696652, "GPL-2",
           "head CT (108 x 256 x 256, HU) with bone and body masks (HU thresholds)"),
    Source("itk", "debian", "insighttoolkit5-examples", "5.2.1-5+deb12u1",
           "insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
           "6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69", 1688552, "Apache-2.0",
           "T1 MR (128 x 128 x 62, coronal) with a 6-class k-means segmentation; MetaImage/NRRD files"),
    Source("pydicom", "pypi", "pydicom-data", "1.0.0", "pydicom_data-1.0.0-py3-none-any.whl",
           "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637", 34128415, "MIT",
           "68 single-file DICOM objects (CT, MR, CR, US, NM, SEG; many transfer syntaxes), no labels"),
)}

#: Label names of the converted data sets (index == label value).
HEADCT_CLASSES = ("background", "soft_tissue", "bone")
#: InVesalius' two masks are these HU thresholds (checked on every voxel at conversion).
HEADCT_BONE_HU = 226
HEADCT_BODY_HU = -142
#: The k-means classes 2..6 of the ITK example become labels 1..5; class 1 (and the 126 voxels of
#: class 0, a border artefact of the example) are background.
KMEANS_CLASSES = ("background", "kmeans_2", "kmeans_3", "kmeans_4", "kmeans_5", "kmeans_6")
LESION_CLASSES = ("background", "lesion")
RADIOMICS_CT = ("lung1", "lung2")
RADIOMICS_MR = ("brain1", "brain2", "breast1")
#: Training volumes are cut into this many slabs along the slice axis; slab HELD_OUT_SLAB is the
#: test set (never seen in training), so "held-out slices" are a contiguous block of the scan.
SLABS = 4
HELD_OUT_SLAB = 2


def default_cache() -> Path:
    """``$VMUNET_DATA`` if set, else ``~/.cache/vmunet/examples``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vmunet" / "examples"


# ------------------------------------------------------------------------------------ download
def _index_url() -> str:
    """The simple index pip would use: ``PIP_INDEX_URL``, else pip's default index."""
    env = os.environ.get("PIP_INDEX_URL")
    if env:
        return env.rstrip("/") + "/"
    try:
        from pip._internal.models.index import PyPI  # pip's own default, so no host is hard-coded
    except ImportError as err:
        raise FetchError("cannot tell which package index to use: set PIP_INDEX_URL or install pip") from err
    return PyPI.simple_url.rstrip("/") + "/"


class _Links(html.parser.HTMLParser):
    """The ``<a href>`` targets of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _pypi_file_url(src: Source) -> str:
    index = _index_url()
    page = urllib.parse.urljoin(index, src.package.lower().replace("_", "-").replace(".", "-") + "/")
    try:
        with urllib.request.urlopen(page, timeout=60) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"{src.key}: cannot reach the package index {page} ({_reason(err)})") from None
    parser = _Links()
    parser.feed(text)
    for href in parser.hrefs:
        url = urllib.parse.urljoin(page, href)
        if urllib.parse.unquote(urllib.parse.urlsplit(url).path).endswith("/" + src.filename):
            return url.split("#", 1)[0]
    raise FetchError(f"{src.key}: {page} lists no file {src.filename}")


def _reason(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or err)


def _download_pypi(src: Source, dest: Path) -> None:
    url = _pypi_file_url(src)
    log.info("%s: downloading %s (%.1f MB)", src.key, url, src.size / 1e6)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(dest, "wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"{src.key}: download of {url} failed ({_reason(err)})") from None


def _download_debian(src: Source, dest: Path) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise FetchError(
            f"{src.key}: apt-get not found; the Debian package {src.package}={src.version} needs apt "
            f"(Debian/Ubuntu), or put {src.filename} (sha256 {src.sha256[:12]}...) into {dest.parent}"
        )
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".apt-") as tmp:
        log.info("%s: apt-get download %s=%s", src.key, src.package, src.version)
        proc = subprocess.run([apt, "download", f"{src.package}={src.version}"], cwd=tmp,
                              capture_output=True, text=True, timeout=600, check=False)
        got = Path(tmp) / src.filename
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("E:")]
            why = lines[-1] if lines else f"exit status {proc.returncode}"
            raise FetchError(f"{src.key}: apt-get download {src.package}={src.version} failed ({why}); "
                             "run `apt-get update` first, or use a Debian bookworm package source")
        os.replace(got, dest)


def download(src: Source, downloads: Path) -> Path:
    """The verified package file in ``downloads`` (downloaded only when not there already)."""
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / src.filename
    if final.is_file():
        digest = file_sha256(final)
        if digest == src.sha256:
            return final
        raise FetchError(f"{final}: sha256 {digest} differs from the pinned {src.sha256}; "
                         "delete the file to download it again")
    with atomic_path(final) as tmp:  # a failed or wrong download leaves nothing behind
        (_download_pypi if src.registry == "pypi" else _download_debian)(src, tmp)
        digest = file_sha256(tmp)
        if digest != src.sha256:
            raise FetchError(f"{src.key}: {src.filename} has sha256 {digest}, expected {src.sha256}")
    return final


# ------------------------------------------------------------------------------------ archives
def _deb_data(deb: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive), without dpkg."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            data = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                try:
                    return tarfile.open(fileobj=io.BytesIO(data))
                except tarfile.TarError as err:
                    raise FetchError(f"{deb}: cannot open {name} ({err})") from None
    raise FetchError(f"{deb}: no data.tar member")


def _copy_members(tar: tarfile.TarFile, prefix: str, names: Iterable[str], out: Path) -> list[Path]:
    """Write ``prefix + name`` members of ``tar`` to ``out/name`` (regular files only, no paths
    outside ``out``: members are read, never extracted)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        member = tar.getmember(prefix + name)
        if not member.isfile():
            raise FetchError(f"{prefix + name}: not a regular file in the archive")
        target = out / Path(name).name
        with tar.extractfile(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        written.append(target)
    return written


# ------------------------------------------------------------------------------------ writing
def _dataset_json(folder: Path, classes: Sequence[str], modality: str, num_training: int,
                  description: str) -> None:
    write_json(folder / "dataset.json", {
        "name": folder.name,
        "description": description,
        "channel_names": {"0": modality},
        "labels": {name: i for i, name in enumerate(classes)},
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    })


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_slabs(image: Any, label: Any, case: str, axis: int, out: Path) -> list[str]:
    """Cut a nibabel image/label pair into :data:`SLABS` slabs along file axis ``axis`` (affines
    shifted by nibabel's slicer, so each slab keeps its place in scanner space); slab
    :data:`HELD_OUT_SLAB` goes to imagesTs/labelsTs."""
    n = image.shape[axis]
    edges = np.linspace(0, n, SLABS + 1).round().astype(int)
    names = []
    for s in range(SLABS):
        index: list[Any] = [slice(None)] * 3
        index[axis] = slice(int(edges[s]), int(edges[s + 1]))
        part = "Ts" if s == HELD_OUT_SLAB else "Tr"
        name = f"{case}_slab{s}"
        for img, folder, fname in ((image, f"images{part}", f"{name}_0000.nii.gz"),
                                   (label, f"labels{part}", f"{name}.nii.gz")):
            sub = img.slicer[tuple(index)]
            _save_nifti(np.asarray(sub.dataobj), sub.affine, out / folder / fname)
        names.append(name)
    return names


def _convert_pyradiomics(archive: Path, work: Path) -> dict[str, Any]:
    import SimpleITK as sitk

    cases = RADIOMICS_CT + RADIOMICS_MR
    names = [f"{c}_{k}.nrrd" for c in cases for k in ("image", "label")]
    with tarfile.open(archive) as tar:
        files = _copy_members(tar, "pyradiomics-3.1.0/data/", names, work / "files")
    datasets = {}
    for folder, group, modality in (("lesions_ct", RADIOMICS_CT, "CT"), ("lesions_mr", RADIOMICS_MR, "MR")):
        out = work / folder
        for case in group:
            image = sitk.ReadImage(str(work / "files" / f"{case}_image.nrrd"))
            label = sitk.ReadImage(str(work / "files" / f"{case}_label.nrrd"))
            _check_same_grid(f"pyradiomics {case}", image, label)
            # the NRRD's LPS geometry as the NIfTI's RAS qform/sform, through the one conversion
            # (volumes.from_sitk); written by nibabel: SimpleITK's writer reports no full disk
            for vol, path in ((from_sitk(image, f"pyradiomics {case}_image.nrrd"), f"imagesTr/{case}_0000.nii.gz"),
                              (from_sitk(label, f"pyradiomics {case}_label.nrrd"), f"labelsTr/{case}.nii.gz")):
                data = vol.array if path.startswith("images") else (vol.array > 0).astype(np.uint8)
                _save_nifti(data, vol.affine, out / path)
        _dataset_json(out, LESION_CLASSES, modality, len(group),
                      f"pyradiomics 3.1.0 test cases ({modality}) with lesion masks")
        datasets[folder] = list(group)
    return {"files": [f"files/{p.name}" for p in files], "datasets": datasets}


def _check_same_grid(what: str, a: Any, b: Any) -> None:
    same = (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))
    if not same:
        raise FetchError(f"{what}: label grid differs from the image's")


def _plist(data: bytes) -> dict[str, Any]:
    import plistlib

    return plistlib.loads(data)


def _convert_invesalius(archive: Path, work: Path) -> dict[str, Any]:
    """Cranium.inv3 (a gzip tar) -> whole-volume NIfTI pair + slabbed nnU-Net folder ``headct``.

    The project has no real-world affine: the voxel grid is written with InVesalius' spacing as a
    RAS diagonal, which matches the anatomy on two axes (rows run posterior -> anterior, slices
    inferior -> superior); left/right cannot be told from the image, so the orientation is nominal.
    """
    data = _deb_data(archive)
    inv3 = data.extractfile("./usr/share/doc/invesalius-examples/examples/Cranium.inv3")
    project = tarfile.open(fileobj=io.BytesIO(inv3.read()))
    members = {Path(m.name).name: m for m in project.getmembers() if m.isfile()}

    def read(name: str) -> bytes:
        return project.extractfile(members[name]).read()

    main = _plist(read("main.plist"))
    shape = tuple(int(s) for s in main["matrix"]["shape"])  # (z, y, x)
    spacing = [float(s) for s in main["spacing"]]  # (x, y, z)
    ct = np.frombuffer(read(main["matrix"]["filename"]), dtype=main["matrix"]["dtype"]).reshape(shape)
    masks = {}
    for plist_name in main["masks"].values():
        meta = _plist(read(plist_name))
        raw = np.frombuffer(read(meta["mask_file"]), dtype=np.uint8)
        padded = tuple(s + 1 for s in shape)  # InVesalius keeps one padding row/column/slice in front
        masks[tuple(meta["threshold_range"])] = raw.reshape(padded)[1:, 1:, 1:] > 127
    bone, body = masks.get((HEADCT_BONE_HU, 3071)), masks.get((HEADCT_BODY_HU, 2986))
    if bone is None or body is None:
        raise FetchError(f"{archive.name}: Cranium.inv3 masks are {sorted(masks)}, expected the bone "
                         f"({HEADCT_BONE_HU}..3071) and body ({HEADCT_BODY_HU}..2986) thresholds")
    if not (np.array_equal(bone, ct >= HEADCT_BONE_HU) and np.array_equal(body, ct >= HEADCT_BODY_HU)):
        raise FetchError(f"{archive.name}: Cranium.inv3 masks are not the HU thresholds they declare")
    label = np.where(bone, 2, np.where(body, 1, 0)).astype(np.uint8)
    affine = np.diag([*spacing, 1.0])
    image_xyz = np.ascontiguousarray(ct.transpose(2, 1, 0))
    label_xyz = np.ascontiguousarray(label.transpose(2, 1, 0))
    _save_nifti(image_xyz, affine, work / "files" / "cranium.nii.gz")
    _save_nifti(label_xyz, affine, work / "files" / "cranium_label.nii.gz")
    import nibabel as nib

    image = nib.load(str(work / "files" / "cranium.nii.gz"))
    lab = nib.load(str(work / "files" / "cranium_label.nii.gz"))
    out = work / "headct"
    names = _write_slabs(image, lab, "cranium", 2, out)
    _dataset_json(out, HEADCT_CLASSES, "CT", SLABS - 1,
                  "InVesalius 'Cranium' head CT (ProMED CT 0051); labels are HU thresholds: "
                  f"soft tissue {HEADCT_BODY_HU}..{HEADCT_BONE_HU - 1} HU, bone >= {HEADCT_BONE_HU} HU")
    return {"files": ["files/cranium.nii.gz", "files/cranium_label.nii.gz"],
            "datasets": {"headct": names}, "study": str(main.get("name", ""))}


ITK_DATA = "./usr/share/doc/insighttoolkit5-examples/examples/Data/"
#: Scan files of the ITK examples read by the geometry tests (BrainProtonDensity*/BrainT1* are
#: BrainWeb simulations: used for their headers -- +-30 degree directions, .zraw -- not as real data).
ITK_SCAN_SUFFIXES = (".nii.gz", ".mha", ".mhd", ".nhdr")
ITK_DATA_SUFFIXES = (".raw", ".zraw")


def _convert_itk(archive: Path, work: Path) -> dict[str, Any]:
    tar = _deb_data(archive)
    names = sorted(m.name[len(ITK_DATA):] for m in tar.getmembers()
                   if m.isfile() and m.name.startswith(ITK_DATA) and "/" not in m.name[len(ITK_DATA):]
                   and m.name.endswith(ITK_SCAN_SUFFIXES + ITK_DATA_SUFFIXES))
    files = _copy_members(tar, ITK_DATA, names, work / "files")
    import nibabel as nib

    image = nib.load(str(work / "files" / "KmeansTest_T1UCharRaw.nii.gz"))
    seg = nib.load(str(work / "files" / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))
    if not np.allclose(image.affine, seg.affine) or image.shape != seg.shape:
        raise FetchError("KmeansTest: segmentation grid differs from the T1 image's")
    k = np.asarray(seg.dataobj)
    lut = np.array([0, 0, 1, 2, 3, 4, 5], dtype=np.uint8)  # k-means class -> label (see KMEANS_CLASSES)
    if k.max() >= len(lut):
        raise FetchError(f"KmeansTest: unexpected k-means class {int(k.max())}")
    label = nib.Nifti1Image(lut[k], image.affine, header=image.header)
    label.set_data_dtype(np.uint8)
    # The coronal acquisition axis (file axis 2, anterior) is the slab axis, so training slices are
    # the native 2 x 2 mm coronal planes.
    out = work / "mr_kmeans"
    cases = _write_slabs(image, label, "t1", 2, out)
    _dataset_json(out, KMEANS_CLASSES, "MR", SLABS - 1,
                  "ITK KmeansTest T1 MR (coronal, LSA); labels are ITK's preliminary k-means classes 2..6")
    scans = [f"files/{p.name}" for p in files if p.name.endswith(ITK_SCAN_SUFFIXES)]
    return {"files": scans, "datasets": {"mr_kmeans": cases}}


def _convert_pydicom(archive: Path, work: Path) -> dict[str, Any]:
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.startswith("data_store/data/") and n.endswith(".dcm"))
        out = work / "files"
        out.mkdir(parents=True, exist_ok=True)
        for n in names:
            with z.open(n) as src, open(out / Path(n).name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return {"files": [f"files/{Path(n).name}" for n in names], "datasets": {}}


CONVERTERS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "pyradiomics": _convert_pyradiomics,
    "invesalius": _convert_invesalius,
    "itk": _convert_itk,
    "pydicom": _convert_pydicom,
}


# ------------------------------------------------------------------------------------ driver
def source_ready(cache: Path, src: Source) -> bool:
    """Whether ``cache/<key>/`` is a complete conversion of exactly this pinned package file."""
    meta = cache / src.key / "source.json"
    if not meta.is_file():
        return False
    try:
        rec = read_json(meta)
    except ValueError:
        return False
    return isinstance(rec, dict) and rec.get("sha256") == src.sha256


def fetch_source(src: Source, cache: Path) -> dict[str, Any]:
    """Download (if needed), verify and convert one source; returns its ``source.json`` record."""
    final = cache / src.key
    if source_ready(cache, src):
        log.info("%s: ready in %s (cached)", src.key, final)
        return read_json(final / "source.json")
    archive = download(src, cache / "downloads")
    work = Path(tempfile.mkdtemp(prefix=f".{src.key}-", dir=cache))
    try:
        try:
            rec = CONVERTERS[src.key](archive, work)
        except FetchError:
            raise
        except Exception as err:  # a changed package layout: name it, no traceback
            raise FetchError(f"{src.key}: cannot convert {archive.name} ({type(err).__name__}: {err})") from err
        rec = {**asdict(src), **rec}
        write_json(work / "source.json", rec)
        if final.exists():  # an older, different conversion: swap it out only now
            old = Path(tempfile.mkdtemp(prefix=f".{src.key}-old-", dir=cache))
            os.replace(final, old / src.key)
            shutil.rmtree(old)
        os.replace(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work)
    log.info("%s: ready in %s", src.key, final)
    return rec


def fetch_examples(cache: str | os.PathLike | None = None,
                   sources: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Fetch the named sources (default: all) into ``cache``.

    Returns ``{key: {"status": "ready", "path": ..., ...} | {"status": "error", "error": msg}}``;
    one unreachable source does not stop the others.
    """
    root = Path(cache).expanduser() if cache is not None else default_cache()
    keys = list(sources) if sources else list(SOURCES)
    unknown = [k for k in keys if k not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {list(SOURCES)}")
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        try:
            rec = fetch_source(SOURCES[key], root)
            out[key] = {"status": "ready", "path": str(root / key), "files": len(rec["files"]),
                        "datasets": sorted(rec["datasets"])}
        except FetchError as err:
            out[key] = {"status": "error", "error": str(err)}
    return out
