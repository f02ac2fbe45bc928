"""``vmunet predict``: segment a scan or a folder of scans with a trained checkpoint.

A thin wrapper over :class:`vmunet.inference.Predictor`: one label map per case
(``<case><suffix>.nii.gz``, ``.png`` for 2D images) in the input geometry, cases named as nnU-Net
names them (``case_0000.nii.gz`` -> ``case.nii.gz``; ``case_0000``, ``case_0001``, ... are the
channels of one case for a multi-channel model; :func:`vmunet.inference.io.group_cases`), a JSON sidecar per case,
resumable (an existing output is reused only when its sidecar shows it was made from the same
checkpoint, preprocessing, options and input bytes; otherwise it is recomputed, and the log says
why), and a failing case never stops the others -- the exit status says whether any failed.

Usage errors (no scans, unusable checkpoint, output folder that cannot be written) raise a
:class:`~vmunet.errors.VmunetError` before any case is computed; the ``vmunet`` dispatcher prints
them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data.channels import CaseFiles
from vmunet.inference import io

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CASE_FAILED, EXIT_USAGE = 0, 1, 2


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="segment scans with a trained checkpoint, write label maps in scanner space",
        description="Segment one scan or a folder of scans (NIfTI, NRRD, MHA/MHD, DICOM series folders, "
        "Synapse test_vol_h5, or png/jpg for 2D models). Preprocessing comes from the checkpoint.",
    )
    p.add_argument("-i", "--input", required=True, type=Path, help="scan file or folder of scans")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("-m", "--model", required=True, type=Path, help="checkpoint (.ckpt) written by vmunet fit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 in-plane flips averaged)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write float16 class probabilities (<case><suffix>_probabilities.npz)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every case, even those whose existing output is up to date")
    p.add_argument("--fill-nonfinite", default=None, metavar="VALUE|window-min", type=_fill_arg,
                   help="replace NaN/inf voxels with VALUE (raw units, e.g. HU) or the intensity window's lower "
                        "bound, logged and recorded in the sidecar (default: refuse such scans)")
    p.add_argument("--suffix", default="", help="appended to the case name in output files (e.g. _seg)")
    p.add_argument("--reference", type=Path, default=None,
                   help="folder of ground-truth label maps named like the cases (nnU-Net labelsTs: "
                        "<case>.nii.gz for imagesTs/<case>_0000.nii.gz); writes metrics.csv")
    p.add_argument("--hd95", choices=("pooled", "monai"), default="pooled",
                   help="HD95 definition for --reference: pooled (medpy, the papers; default) or monai "
                        "(larger of the two directed 95th percentiles)")
    p.add_argument("--metric-convention", choices=("strict", "paper"), default="strict",
                   help="empty-mask convention for --reference: strict (absent classes excluded, misses and "
                        "false positives counted; default) or paper (VM-UNet calculate_metric_percase)")
    p.set_defaults(func=run_predict)


def _fill_arg(text: str) -> float | str:
    """``--fill-nonfinite``: a finite number or ``window-min``."""
    if text == "window-min":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number or 'window-min', got {text!r}")
    return value


def _reuse_key(predictor: Any, input_sha256: str) -> dict[str, Any]:
    """What an existing output must have been made from to be reused: the checkpoint, its
    preprocessing record, the options that change labels, and the input's bytes."""
    key = {
        "checkpoint_sha256": predictor.info.get("checkpoint_sha256"),
        "preprocessing": predictor.preprocessing,
        "tta": predictor.tta,
        "fill_nonfinite": predictor.fill_nonfinite,
        "input_sha256": input_sha256,
    }
    return json.loads(json.dumps(key, default=float))  # as it reads back from a sidecar


def _input_field(case: CaseFiles) -> str | list[str]:
    """The sidecar's ``input``: the file, or the channel files of a multi-channel case."""
    return str(case.first) if len(case.files) == 1 else [str(f) for f in case.files]


def _stale_reason(sidecar: Path, key: dict[str, Any], out: Path, probabilities: Path | None) -> str | None:
    """Why the output described by ``sidecar`` cannot be reused (None: it can).

    Besides what the output was made from, the sidecar records the sha256 of the label map and
    probabilities it was written with, and both must still be those files: a run interrupted
    between a new label map and its sidecar (or a disk that filled there) leaves the old sidecar
    beside the new file, and ``--save-probabilities`` files left by an earlier run with another
    checkpoint are not this prediction's."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"its sidecar {sidecar.name} is unreadable ({type(err).__name__})"
    if not isinstance(meta, dict):
        return f"its sidecar {sidecar.name} is not a JSON object"
    for field_name, now in key.items():
        if field_name not in meta:
            return f"its sidecar {sidecar.name} does not record {field_name!r}"
        then = meta[field_name]
        if then != now:
            if field_name.endswith("sha256"):
                what = "checkpoint" if field_name.startswith("checkpoint") else "input file"
                return f"the {what} differs (sha256 {str(then)[:12]}... then, {str(now)[:12]}... now)"
            if field_name == "preprocessing":
                changed = sorted(k for k in set(then or {}) | set(now or {}) if (then or {}).get(k) != (now or {}).get(k))
                return f"the preprocessing record differs (fields {changed})"
            return f"{field_name} was {then!r}, now {now!r}"
    from vmunet.data.fileio import file_sha256

    if "output_sha256" not in meta:
        return f"its sidecar {sidecar.name} does not record 'output_sha256' (written by an older vmunet)"
    if meta["output_sha256"] != file_sha256(out):
        return f"{out.name} is not the label map its sidecar {sidecar.name} describes (sha256 differs)"
    if probabilities is not None:
        if not probabilities.exists():
            return f"--save-probabilities asks for {probabilities.name}, which is missing"
        if meta.get("probabilities_sha256") != file_sha256(probabilities):
            return (f"{probabilities.name} is not the one its sidecar {sidecar.name} describes (written by "
                    "another run, or not written with this label map)")
    return None


def _sidecar(pred: Any, predictor: Any, case: CaseFiles, out: Path, probs: Path | None, seconds: float,
             key: dict[str, Any]) -> dict[str, Any]:
    from vmunet.data.fileio import file_sha256

    return {
        "kind": io.SIDECAR_KIND,
        **key,
        "input": _input_field(case),
        "output": out.name,
        "output_sha256": file_sha256(out),
        "probabilities": None if probs is None else probs.name,
        "probabilities_sha256": None if probs is None else file_sha256(probs),
        "model": {k: predictor.info.get(k) for k in ("model_name", "model_kwargs", "vmunet_version")},
        "checkpoint": predictor.info.get("checkpoint"),
        "class_names": predictor.class_names,
        "nonfinite_filled": pred.nonfinite_filled,
        "device": str(predictor.device),
        "shape": list(pred.labels.shape),  # the label map's, as written (2D for a 2D file)
        "spacing_ras_mm": list(pred.scan.as_image(pred.labels_oriented)[1]),  # no nominal thickness for 2D
        "num_slices": pred.num_slices,
        "seconds": round(seconds, 3),
        # one of the two, named by its unit: a single 2D image's "volume" would be its area x a nominal
        # 1 mm (2D file) or x SpacingBetweenSlices (single-frame DICOM), not x a thickness
        "volumes_ml": pred.volumes_ml() if pred.size_unit == "volumes_ml" else None,
        "areas_mm2": pred.areas_mm2() if pred.size_unit == "areas_mm2" else None,
        # false: the file states no pixel spacing (a DICOM without PixelSpacing, or 0\0; an NRRD /
        # MetaImage header without one) and the sizes above are pixel counts x a nominal 1 mm (also false for png/jpg, whose sizes are null)
        "spacing_known": pred.scan.is_volume and pred.scan.spacing_known,
    }


def _sidecar_scan_facts(sidecar: Path, scan: io.Scan) -> None:
    """What a reused label map, read back, cannot tell and its sidecar recorded: a single 2D image
    (the sidecar reports ``areas_mm2``) and an unstated pixel spacing (``spacing_known`` false;
    sidecars older than that field: known)."""
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta = meta if isinstance(meta, dict) else {}
    scan.single_frame = meta.get("areas_mm2") is not None
    scan.spacing_known = meta.get("spacing_known") is not False


def reference_files(ref_dir: Path) -> dict[str, Path]:
    """The ground-truth files of ``ref_dir`` by case name (``case.nii.gz`` -> ``case``; any scan
    extension; hidden and temporary files skipped)."""
    return {io.case_name(p): p for p in sorted(ref_dir.iterdir())
            if p.is_file() and not p.name.startswith(".") and io.volumes.has_suffix(p, io.SCAN_EXTS)}


def match_references(ref_dir: Path, names: list[str]) -> dict[str, Path]:
    """Reference file of each case that has one. No match at all is a usage error listing a few
    names of both sides (a wrong folder, or names that differ); a partial match is warned once,
    naming the cases without a reference."""
    from vmunet.data.errors import short_list
    from vmunet.errors import ConfigError

    refs = reference_files(ref_dir)
    matched = {n: refs[n] for n in names if n in refs}
    if not matched:
        raise ConfigError(f"--reference {ref_dir}: no file matches a case (references {short_list(sorted(refs), 5)}, "
                          f"cases {short_list(names, 5)}); expected <case>.nii.gz (nnU-Net labelsTs naming)")
    unmatched = [n for n in names if n not in matched]
    if unmatched:
        log.warning("--reference %s: no reference for %d of %d case(s) %s; no metrics for them", ref_dir,
                    len(unmatched), len(names), short_list(unmatched, 5))
    return matched


def _reference_labels(path: Path, predictor: Any, affine: np.ndarray) -> np.ndarray:
    """The ground truth of ``path`` laid out like the prediction (its orientation), checked as
    training checks labels: integral class ids of this model's classes (a 0.5 is not rounded, a 5
    of a 3-class model not ignored, a NaN not cast), on the prediction's voxel grid (``affine``,
    voxel -> RAS mm): a reference shifted or rescaled against the scan would be scored voxel by
    voxel all the same, silently. 2D binary masks are read as training reads ISIC masks (0/1 or
    0/255, any colour mode; anything else refused)."""
    from vmunet.data import isic_format
    from vmunet.data.fileio import check_labels
    from vmunet.inference import io

    where = f"--reference {path}"
    num_labels = len(predictor.class_names)
    ref = io.read_scan(path, orientation=predictor.preprocessing["orientation"], label=True)
    if not ref.is_volume and num_labels == 2:
        return isic_format.read_mask(path).astype(np.int64)
    if ref.is_volume and not io.volumes.same_geometry(ref.affine, affine):
        raise io.ScanReadError(
            f"{where}: voxel grid differs from the scan's (voxel -> RAS mm affines after reorientation: "
            f"reference {np.round(ref.affine, 4).tolist()}, scan {np.round(affine, 4).tolist()}); expected the "
            "ground truth of this very scan, on its grid")
    arr = np.asarray(ref.array)
    if not ref.is_volume and arr.ndim == 3:
        raise io.ScanReadError(f"{where}: expected a single-channel label map, got shape {arr.shape}")
    return check_labels(f"{where} (classes {predictor.class_names})", arr, num_labels)


def _metrics_rows(case: str, pred_oriented: np.ndarray, scan: Any, ref_path: Path,
                  predictor: Any, hd95: str = "pooled") -> list[dict[str, Any]]:
    from vmunet.evaluation.metrics import case_metrics

    gt = _reference_labels(ref_path, predictor, scan.affine)
    if gt.shape != pred_oriented.shape:
        raise ValueError(f"reference {ref_path} has shape {gt.shape} after reorientation, prediction {pred_oriented.shape}")
    # a single 2D image (2D file, single-frame DICOM) is scored as the image it is: its contour,
    # distances with its two pixel spacings (on the one-slice volume every pixel would be surface,
    # the slice's faces, and HD95 would differ)
    pred_image, spacing = scan.as_image(pred_oriented)
    gt_image, _ = scan.as_image(gt)
    # no HD95 (mm) from a nominal 1 mm spacing: the mm column stays empty (as for any row without
    # spacing), HD95 (vox) is the distance in pixels
    rows = case_metrics(pred_image, gt_image, predictor.class_names, spacing=spacing if scan.spacing_known else None,
                        hd95=hd95)
    return [{"case": case, **row} for row in rows]


def _write_metrics(path: Path, rows: list[dict[str, Any]], class_names: list[str], convention: str = "strict") -> str:
    """Write the per-case CSV (``vmunet test`` columns, ``convention`` applied) and return the summary
    table, ``vmunet test``'s table (:func:`~vmunet.training.reports.format_table`)."""
    from vmunet.data.fileio import write_csv
    from vmunet.evaluation.metrics import CASE_FIELDS, convention_rows, summarize_cases
    from vmunet.training.reports import format_table

    write_csv(path, convention_rows(rows, convention), CASE_FIELDS)
    return format_table({**summarize_cases(rows, class_names, convention), "stage": "predict"}).rstrip()


def _label(case: CaseFiles) -> str:
    """How logs name a case: its file, or its name and channel files."""
    if len(case.files) == 1:
        return str(case.first)
    return f"{case.name} ({', '.join(f.name for f in case.files)})"


@dataclass
class _Tally:
    """What a ``vmunet predict`` run did, case by case."""

    done: int = 0
    skipped: int = 0
    stale: int = 0
    slices: int = 0
    failed: list[str] = field(default_factory=list)
    metric_rows: list[dict[str, Any]] = field(default_factory=list)


def _setup(args: argparse.Namespace) -> tuple[list[CaseFiles], dict[str, Path], Any]:
    """Find the cases, check ``--reference`` and the output folder, load the checkpoint, refuse
    clashing case names -- everything that can be wrong before the first case is computed
    (raises a :class:`~vmunet.errors.VmunetError`)."""
    from vmunet.data.errors import DataError
    from vmunet.data.fileio import ensure_writable_folder
    from vmunet.errors import ConfigError
    from vmunet.inference.predictor import Predictor

    try:
        found = io.find_cases(args.input)
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    if args.reference is not None and not args.reference.is_dir():
        raise ConfigError(f"--reference {args.reference} is not a folder")
    predictor = Predictor.from_checkpoint(args.model, device=args.device, batch_size=args.batch_size, tta=args.tta,
                                          fill_nonfinite=args.fill_nonfinite)
    pp = predictor.preprocessing
    # channel files group into cases for volume models; a 2D model's channels live inside each image
    cases = io.group_cases(found, pp["in_chans"] if pp["slice_axis"] is not None else 1, args.input)
    names = [c.name for c in cases]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError("several inputs share a case name, their outputs would collide: " + "; ".join(
            f"{n}: " + ", ".join(str(f) for c in cases if c.name == n for f in c.files) for n in clashes))
    refs = match_references(args.reference, names) if args.reference is not None else {}
    _check_outputs(args, cases)
    ensure_writable_folder(args.output, "--output")
    log.info("predicting %d case(s) from %s with %s on %s", len(cases), args.input, args.model, predictor.device)
    return cases, refs, predictor


def _outputs(args: argparse.Namespace, case: CaseFiles) -> tuple[Path, Path, Path | None]:
    """The files a case writes: label map, JSON sidecar, probabilities (with --save-probabilities)."""
    stem = args.output / f"{case.name}{args.suffix}"
    probs = Path(f"{stem}_probabilities.npz") if args.save_probabilities else None
    return Path(f"{stem}{io.output_extension(case.first)}"), Path(f"{stem}.json"), probs


def _check_outputs(args: argparse.Namespace, cases: list[CaseFiles]) -> None:
    """Refuse, before any case runs, a --suffix that leaves the output folder and an output file
    that is one of the inputs (inputs are never overwritten)."""
    from vmunet.errors import ConfigError

    if any(sep in args.suffix for sep in ("/", "\\")) or args.suffix in (".", ".."):
        raise ConfigError(f"--suffix {args.suffix!r}: expected text without path separators (outputs stay in --output)")
    inputs = {f.resolve(): f for c in cases for f in c.files}
    for case in cases:
        for out in _outputs(args, case):
            if out is not None and out.resolve() in inputs:
                raise ConfigError(f"--output {args.output}: {out.name} would overwrite the input "
                                  f"{inputs[out.resolve()]}; expected another --output folder or a --suffix")


def _predict_case(args: argparse.Namespace, predictor: Any, case: CaseFiles, ref: Path | None, tally: _Tally,
                  bars: bool = True) -> None:
    """Predict one case (or reuse its up-to-date output), write label map and sidecar, score it
    against its reference ``ref`` if there is one; raises on any failure of this case. ``bars``:
    a per-slice progress bar (a terminal), else one log line per case (a log file)."""
    from vmunet.data.fileio import write_json

    name, label = case.name, _label(case)
    out, sidecar, probs = _outputs(args, case)  # none of them is an input: checked by _check_outputs
    key = _reuse_key(predictor, io.input_sha256(case.files))
    # the sidecar is written last: a label map without it is from an interrupted run
    if out.exists() and sidecar.exists() and not args.overwrite:
        reason = _stale_reason(sidecar, key, out, probs)
        if reason is None:
            tally.skipped += 1
            log.info("%s: %s is up to date (same checkpoint, preprocessing, options and input), reused", label, out.name)
            if ref is not None:
                existing = io.read_scan(out, orientation=predictor.preprocessing["orientation"], label=True)
                # the one-slice NIfTI of a single-frame DICOM is scored as the image it is, like the
                # computed case: its sidecar (checked above) reported areas, i.e. a single 2D image;
                # and without HD95 (mm) where the sidecar says the spacing was unknown
                _sidecar_scan_facts(sidecar, existing)
                tally.metric_rows += _metrics_rows(name, np.asarray(existing.array), existing, ref, predictor,
                                                   args.hd95)
            return
        tally.stale += 1
        log.info("%s: recomputing %s: %s", label, out.name, reason)
    t0 = time.perf_counter()
    source = case.first if len(case.files) == 1 else list(case.files)
    pred = predictor.predict_file(source, out, probabilities_path=probs, progress=bars, name=name)
    write_json(sidecar, _sidecar(pred, predictor, case, out, probs, time.perf_counter() - t0, key))
    if not bars:
        log.info("%s: %d slices in %.1f s -> %s", label, pred.num_slices, time.perf_counter() - t0, out)
    tally.done += 1
    tally.slices += pred.num_slices
    if ref is not None:
        tally.metric_rows += _metrics_rows(name, pred.labels_oriented, pred.scan, ref, predictor, args.hd95)


def _finish(args: argparse.Namespace, predictor: Any, tally: _Tally, seconds: float) -> int:
    """Print the run summary (and the metrics table with ``--reference``); the exit status."""
    rate = tally.slices / seconds if seconds > 0 else 0.0
    print(f"predicted {tally.done} case(s), {tally.slices} slices in {seconds:.1f} s ({rate:.2f} slices/s); "
          f"reused {tally.skipped} up to date; recomputed {tally.stale} stale; failed {len(tally.failed)}")
    metrics = args.output / "metrics.csv"
    if tally.metric_rows:
        print(_write_metrics(metrics, tally.metric_rows, predictor.class_names, args.metric_convention))
    elif args.reference is not None:  # an earlier run's table must not stand for this one
        from vmunet.data.fileio import write_csv
        from vmunet.evaluation.metrics import CASE_FIELDS

        write_csv(metrics, [], CASE_FIELDS)
        log.warning("--reference %s: no case was scored; %s holds only its header", args.reference, metrics)
    elif metrics.is_file() and tally.done:
        log.warning("%s is from an earlier run with --reference: it does not describe the %d case(s) computed now",
                    metrics, tally.done)
    if tally.failed:
        log.error("%d case(s) failed: %s", len(tally.failed), ", ".join(tally.failed))
        return EXIT_CASE_FAILED
    return EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    """Run ``vmunet predict``; returns the exit status (0 ok, 1 some case failed); usage errors
    raise a VmunetError (the dispatcher: exit status 2)."""
    from tqdm.auto import tqdm

    cases, refs, predictor = _setup(args)
    tally = _Tally()
    t_start = time.perf_counter()
    # progress bars on a terminal; redrawn bars in a log file are noise: one line per case instead
    bars = sys.stderr.isatty()
    for case in tqdm(cases, desc="cases", unit="case", file=sys.stderr, disable=not bars):
        try:
            _predict_case(args, predictor, case, refs.get(case.name), tally, bars)
        except Exception as err:  # one bad case must not stop the others; reported by name at the end
            tally.failed.append(_label(case))
            log.error("%s: failed: %s", _label(case), err)
            log.debug("traceback", exc_info=True)
    return _finish(args, predictor, tally, time.perf_counter() - t_start)
