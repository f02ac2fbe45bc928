"""Atomic writes and checked reads of the on-disk formats (npz slices, h5 volumes, NIfTI, images).

Readers turn every failure into a :class:`~vmunet.data.errors.DataError` naming the file, and check
what the data modules rely on: no NaNs, integral labels inside the declared classes, matching shapes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of new files (mkstemp creates 0600; outputs should be readable like any other file).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, *, prefix: str | None = None, suffix: str | None = None,
                fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; move it onto ``path`` only if the block succeeds.

    The temporary file is named ``<prefix>XXXX<suffix>``: by default ``.<name>.`` and the real
    suffix, so writers that dispatch on it (nibabel, PIL, SimpleITK) still work. Its permissions
    follow the umask (mkstemp alone would leave 0600). ``fsync=True`` flushes the file to disk
    before the rename and the folder after it, so after a power loss the path holds either the old
    or the complete new file (checkpoints use it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # a failed write (full disk, file-size limit, I/O error) names the file being written, not
        # its temporary name nor nothing at all ("[Errno 28] No space left on device" from a writer
        # that does not know the path); OSError(errno, ...) keeps the subclass (PermissionError, ...)
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, tmp):
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise


def _fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and the folders above it that do not exist yet, deepest first (absolute): read before a
    run creates them, they are what it may give back on failure (:func:`remove_empty_folders`) without
    touching anything that existed before."""
    missing, path = [], Path(path).absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> list[Path]:
    """Remove each of ``folders`` (deepest first) that is empty; returns those removed. A folder someone
    has written into since is kept (``rmdir`` removes only an empty one)."""
    removed = []
    for folder in folders:
        try:
            folder.rmdir()
            removed.append(folder)
        except OSError:  # not empty, gone already, or not ours to remove
            pass
    return removed


def ensure_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) if needed and check a file can be written there, so a bad
    output folder is reported before hours of computing, not after each case. ``what`` names the
    option in the :class:`DataError` (e.g. ``--output``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{what} {path}: is a regular file, expected a folder")
    created = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        raise DataError(f"{what} {path}: cannot create the folder, {blocker or 'a parent'} is a regular file") from None
    except OSError as err:
        raise DataError(f"{what} {path}: cannot create the folder ({err.strerror or err})") from None
    try:  # os.access is not enough (root, read-only mounts, ACLs): try it
        fd, probe = tempfile.mkstemp(prefix=".vmunet-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        remove_empty_folders(created)  # a refusal leaves no new empty folder behind
        raise DataError(f"{what} {path}: folder is not writable ({err.strerror or err})") from None
    return path


def hash_file(path: str | os.PathLike, digest: Any = None) -> Any:
    """Feed a file's bytes into ``digest`` (a ``hashlib`` object; default a new SHA-256) in 1 MiB
    blocks, so a large checkpoint or download is never read into memory whole; returns ``digest``."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hash_file(path).hexdigest()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically as UTF-8, line endings exactly as given (``\\n``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (indented, for humans; numpy/torch scalars via ``float``)."""
    return write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def write_lines(path: str | Path, lines: Sequence[str]) -> Path:
    """Write one item per line, atomically."""
    return write_text(path, "".join(f"{line}\n" for line in lines))


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> Path:
    """The project's one CSV writer: header ``fields``, one line per row (other keys ignored),
    ``None`` as an empty cell, ``\\n`` line endings on every platform; written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return write_text(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a DataError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None


def write_npz_slice(path: str | Path, image: np.ndarray, label: np.ndarray) -> None:
    """One Synapse training slice: ``image`` float32 H x W in [0, 1], ``label`` uint8 H x W."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, image=image.astype(np.float32), label=label.astype(np.uint8))


def write_h5_volume(path: str | Path, image: np.ndarray, label: np.ndarray) -> None:
    """One Synapse test volume: ``image`` float32 D x H x W, ``label`` uint8 D x H x W."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("image", data=image.astype(np.float32), compression="gzip")
            f.create_dataset("label", data=label.astype(np.uint8), compression="gzip")


def check_pair(path: str | Path, image: np.ndarray, label: np.ndarray, num_labels: int,
               image_shape: Sequence[int] | None = None) -> np.ndarray:
    """Validate an image/label pair read from ``path``; return the label as int64.

    ``image_shape`` is the shape the label must have (defaults to ``image.shape``); ``num_labels``
    the number of declared classes (label values must lie in ``[0, num_labels)``).
    """
    expected = tuple(image.shape if image_shape is None else image_shape)
    if tuple(label.shape) != expected:
        raise DataError(f"{path}: image/label shape mismatch: image {tuple(image.shape)}, "
                        f"label {tuple(label.shape)}")
    check_image_finite(path, image)
    return check_labels(path, label, num_labels)


def check_image_finite(path: str | Path, image: np.ndarray) -> None:
    """Refuse an image with NaN or infinite voxels, naming ``path`` (the image file, where the
    caller has it apart from its label's)."""
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise DataError(f"{path}: image contains NaN or infinite values")


def check_labels(path: str | Path, label: np.ndarray, num_labels: int) -> np.ndarray:
    """A label map's values as int64 class ids, checked: finite, integral, inside
    ``[0, num_labels)`` -- never rounded or wrapped into range (a 0.5 or a 5 of a 3-class model is an
    error naming ``path``, not a silently different class)."""
    lab = np.asarray(label)
    if np.issubdtype(lab.dtype, np.floating):
        if not np.isfinite(lab).all():
            raise DataError(f"{path}: label contains NaN or infinite values")
        if not np.array_equal(lab, np.round(lab)):
            raise DataError(f"{path}: label has non-integer values; expected class ids 0..{num_labels - 1}")
    elif not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
        raise DataError(f"{path}: label has dtype {lab.dtype}; expected integer class ids 0..{num_labels - 1}")
    lab = lab.astype(np.int64)
    bad = np.unique(lab[(lab < 0) | (lab >= num_labels)])
    if bad.size:
        raise DataError(f"{path}: label values {bad.tolist()[:10]} outside the declared classes "
                        f"0..{num_labels - 1}")
    return lab


def read_npz_slice(path: str | Path, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a Synapse training slice; returns (image float32 H x W, label int64 H x W)."""
    path = Path(path)
    try:
        with np.load(path) as z:
            missing = [k for k in ("image", "label") if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing}; expected 'image' and 'label' "
                                f"(found {list(z.files)})")
            image, label = z["image"], z["label"]
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as err:  # zipfile/pickle/OS errors all mean the same thing to the user
        raise DataError(f"{path}: unreadable or corrupt .npz file ({type(err).__name__}: {err})") from None
    if image.ndim != 2:
        raise DataError(f"{path}: expected a 2D image (H x W), got shape {tuple(image.shape)}")
    lab = check_pair(path, image, label, num_labels)
    return image.astype(np.float32), lab


def read_h5_volume(path: str | Path, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a Synapse test volume; returns (image float32 D x H x W, label int64 D x H x W)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise DataError(f"{path}: missing dataset(s) {missing}; expected 'image' and 'label' "
                                f"(found {list(f.keys())})")
            image, label = f["image"][()], f["label"][()]
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: unreadable or corrupt HDF5 file ({type(err).__name__}: {err})") from None
    if image.ndim != 3:
        raise DataError(f"{path}: expected a 3D image (D x H x W), got shape {tuple(image.shape)}")
    lab = check_pair(path, image, label, num_labels)
    return image.astype(np.float32), lab
