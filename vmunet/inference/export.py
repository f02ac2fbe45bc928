"""``vmunet export``: a trained checkpoint -> a TorchScript, ONNX or ``torch.export`` (.pt2) file + its
preprocessing record.

The model is rebuilt with the pure-PyTorch ``torch`` selective-scan backend whatever the checkpoint
says: the ``numba`` backend runs compiled code the tracers cannot see, and ``torch`` is the one that
traces to plain tensor operations: while recording, it runs :mod:`vmunet.ops.scan_export`, whose
loop over the sequence's blocks is a loop of the recorded graph (TorchScript ``prim::Loop``, ONNX
``Loop``, the ``scan`` operator in ``torch.export``), so the graph does not grow with the input
size. Every format is recorded by tracing one example batch at the model's input size (the
record's ``image_size``):

* ``torchscript``: ``torch.jit.trace`` -> ``torch.jit.save``; load with ``torch.jit.load``. PyTorch
  deprecates TorchScript (torch 2.13 raises a ``DeprecationWarning`` from each of these calls);
  it still works; ``pt2`` or ``onnx`` are the formats to prefer.
* ``onnx``: ``torch.onnx.export`` through the TorchScript-based exporter (``dynamo=False``; the
  ``torch.export`` exporter needs onnxscript and was not tried with the scan's loops), opset
  :data:`ONNX_OPSET`, batch dimension dynamic.
* ``pt2``: ``torch.export.export`` with a dynamic batch dimension -> ``torch.export.save``; load with
  ``torch.export.load(FILE).module()``. What PyTorch recommends instead of TorchScript.

The exported graph takes ``image`` ``(batch, C, H, W)`` float32 at exactly the record's ``(H, W)``
(preprocessed: intensity normalised as the record says) and returns ``logits`` ``(batch, K, H, W)``.
Beside ``FILE`` goes ``FILE.json``: the preprocessing record (class names, channels, intensity
normalisation, patch size, orientation, decision rule), the input/output description and the
measured parity with PyTorch on a seeded random batch. Both files are written atomically; an
existing one is never replaced without ``overwrite``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from vmunet.errors import ConfigError, first_line

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "pt2")
#: ONNX opset of exported files (supported by onnxruntime >= 1.14).
ONNX_OPSET = 17
#: Batch size of the example input that is traced and checked (2: a batch dimension > 1 is
#: exercised; the exported graphs take any batch size).
EXAMPLE_BATCH = 2


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX, torch.export (.pt2) or TorchScript (+ its preprocessing record as JSON)",
        description="Export a checkpoint written by `vmunet fit` to an ONNX (.onnx), torch.export (.pt2; "
        "load with torch.export.load(FILE).module()) or TorchScript (.pt) file that maps a preprocessed "
        "batch (batch, C, H, W) at the model's input size to logits (batch, K, H, W), any batch size, "
        "through the pure-PyTorch selective scan. FILE.json beside it holds the "
        "preprocessing record (class names, channels, normalisation, input size) and the measured "
        "parity with PyTorch. TorchScript is deprecated by PyTorch (torch.jit.trace/save/load warn); "
        "prefer onnx. pt2 is PyTorch's replacement for TorchScript; exporting and loading it take "
        "longer (over a minute in all for the tests' tiny model; docs/export.md). "
        "Exit status: 0 written, 2 bad input.",
    )
    p.add_argument("-m", "--model", required=True, type=Path, help="checkpoint (.ckpt) written by vmunet fit")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (preferred; onnxruntime and other runtimes), pt2 (torch.export.save, for "
                   "PyTorch; slower to export and load) or torchscript (deprecated by PyTorch: torch.jit "
                   "warns; still works)")
    p.add_argument("-o", "--output", required=True, type=Path, help="file to write (its record goes to FILE.json)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE and FILE.json when they exist")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    result = export_checkpoint(args.model, args.output, args.format, overwrite=args.overwrite)
    parity = result["parity"]
    diff = "not checked" if parity["max_abs_diff"] is None else f"max |diff| {parity['max_abs_diff']:.3g}"
    print(f"wrote {args.output} and {sidecar_path(args.output).name} ({args.format}; logits vs PyTorch: {diff})")
    return 0


def sidecar_path(output: str | Path) -> Path:
    """Where the record of an exported file goes: ``FILE.json`` beside ``FILE``."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def _check_paths(checkpoint: Path, output: Path, fmt: str, overwrite: bool) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if not checkpoint.is_file():
        raise ConfigError(f"--model {checkpoint}: {'is a folder' if checkpoint.is_dir() else 'no such file'}, "
                          "expected a checkpoint (.ckpt) written by vmunet fit")
    if output.is_dir():
        raise ConfigError(f"--output {output}: is a folder, expected a file name (e.g. model.{_ext(fmt)})")
    if output.resolve() == checkpoint.resolve():
        raise ConfigError(f"--output {output}: is the checkpoint itself; inputs are never overwritten")
    if sidecar_path(output).resolve() == checkpoint.resolve():  # FILE.json would replace the checkpoint
        raise ConfigError(f"--output {output}: its record {sidecar_path(output).name} would overwrite the checkpoint "
                          f"{checkpoint}; inputs are never overwritten -- choose another --output")
    other = {f".{_ext(f)}": f for f in FORMATS if f != fmt and _ext(f) != _ext(fmt)}
    if output.suffix.lower() in other:  # an ONNX file named .pt fails later, in whoever loads it
        raise ConfigError(f"--output {output}: the extension {output.suffix} is {other[output.suffix.lower()]}'s, "
                          f"but --format {fmt} writes {fmt}; expected {output.with_suffix('.' + _ext(fmt)).name} "
                          f"(or --format {other[output.suffix.lower()]})")
    for path in (output, sidecar_path(output)):
        if path.exists() and not overwrite:
            raise ConfigError(f"--output: {path} exists; pass --overwrite to replace it")
    parent = output.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"--output {output}: cannot create the folder, {blocker} is a regular file")


def _ext(fmt: str) -> str:
    return {"onnx": "onnx", "pt2": "pt2"}.get(fmt, "pt")


def onnxruntime_available() -> bool:
    """True when onnxruntime imports (then exported ONNX files are checked against PyTorch)."""
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def export_checkpoint(checkpoint: str | Path, output: str | Path, fmt: str, *,
                      overwrite: bool = False) -> dict[str, Any]:
    """Export ``checkpoint`` to ``output`` in ``fmt`` (``torchscript`` | ``onnx`` | ``pt2``) and write the
    record ``output.json``; returns the record. Raises :class:`~vmunet.errors.VmunetError`
    subclasses for bad input (missing or unusable checkpoint, existing output without
    ``overwrite``), before anything is written."""
    import torch

    from vmunet import __version__
    from vmunet.data.fileio import atomic_path, write_json
    from vmunet.data.preprocessing import validate_preprocessing
    from vmunet.inference.predictor import check_class_counts
    from vmunet.inference.slicewise import check_model_input_size
    from vmunet.models.checkpoint import (
        CheckpointError,
        checkpoint_record,
        model_from_checkpoint,
        read_checkpoint_with_sha256,
    )

    checkpoint, output = Path(checkpoint), Path(output)
    _check_paths(checkpoint, output, fmt, overwrite)
    # hashed with the read, not after the export's minutes: a checkpoint replaced meanwhile (a
    # training run still writing last.ckpt) must not lend its hash to the weights exported
    try:
        ckpt, checkpoint_sha256 = read_checkpoint_with_sha256(checkpoint)
    except OSError as err:  # deleted, moved or made unreadable since it was checked above
        raise CheckpointError(f"--model {checkpoint}: cannot read the checkpoint: {err.strerror or first_line(err)} "
                              f"(was it deleted or changed while exporting?)") from None
    record = checkpoint_record(ckpt, str(checkpoint))
    if record.get("preprocessing") is None:
        raise CheckpointError(f"checkpoint {checkpoint} has no preprocessing record (ckpt['vmunet']['preprocessing']); "
                              "an exported model needs it for its input size, channels and normalisation")
    preprocessing = validate_preprocessing(record["preprocessing"])
    check_class_counts(record, preprocessing, str(checkpoint))
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it to write the file)
        except ImportError:
            raise ConfigError("--format onnx needs the onnx package: `pip install onnx` "
                              "(and onnxruntime to check the exported file)") from None
    # the traceable backend, whatever the checkpoint trained with (numba/cuda kernels do not trace)
    model, _ = model_from_checkpoint(ckpt, where=str(checkpoint), scan_backend="torch")
    model = model.float().eval()
    check_model_input_size(model, preprocessing["image_size"], f"checkpoint {checkpoint}: preprocessing image_size")
    in_chans = int(record["model_kwargs"].get("in_chans", preprocessing["in_chans"]))
    height, width = (int(s) for s in preprocessing["image_size"])
    example = torch.randn(EXAMPLE_BATCH, in_chans, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(example)

    with contextlib.ExitStack() as stack:  # both files appear together or not at all
        tmp_model = stack.enter_context(atomic_path(output))
        # seconds to a minute or more for the paper model at 224 x 224 on a small CPU (docs/export.md): say so
        log.info("exporting %s at %dx%d to %s (seconds for small models, a minute or more for large ones) ...",
                 record["model_name"], height, width, fmt)
        t0 = time.perf_counter()
        checking = "exported and saved in %.0f s; loading the written file to check it against PyTorch ..."
        if fmt == "torchscript":
            exported = _trace(model, example)
            torch.jit.save(exported, str(tmp_model))
            log.info(checking, time.perf_counter() - t0)
            got = _run_torchscript(tmp_model, example)
            runtime = f"torch {torch.__version__} (torch.jit.load)"
        elif fmt == "pt2":
            _export_pt2(model, example, tmp_model)
            log.info(checking, time.perf_counter() - t0)
            got = _run_pt2(tmp_model, example)
            runtime = f"torch {torch.__version__} (torch.export.load)"
        else:
            _export_onnx(model, example, tmp_model)
            got = None
            if onnxruntime_available():
                log.info(checking.replace("PyTorch", "PyTorch (onnxruntime)"), time.perf_counter() - t0)
                got = _run_onnx(tmp_model, example)
            runtime = None if got is None else f"onnxruntime {_onnxruntime_version()} (CPU, default graph optimisations)"
        diff = None if got is None else float((got - expected).abs().max())
        info: dict[str, Any] = {
            "format": fmt,
            "file": output.name,
            "input": {"name": "image", "shape": ["batch", in_chans, height, width], "dtype": "float32",
                      "meaning": "slices preprocessed as the record says (orientation, slice axis, intensity, "
                                 "resized to image_size); any batch size"},
            "output": {"name": "logits", "shape": ["batch", int(expected.shape[1]), height, width],
                       "dtype": "float32", "decision": "sigmoid, p >= threshold" if expected.shape[1] == 1
                       else "argmax over classes (softmax for probabilities)"},
            "preprocessing": preprocessing,
            "class_names": list(preprocessing["class_names"]),
            "model_name": record["model_name"],
            "model_kwargs": {**dict(record["model_kwargs"]), "scan_backend": "torch"},
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": checkpoint_sha256,
            "parity": {"max_abs_diff": diff, "runtime": runtime,
                       "reference": "the PyTorch model (torch scan backend) in float32 on CPU",
                       "input": f"seeded N(0, 1) batch of {EXAMPLE_BATCH} at the input size",
                       "note": None if got is not None else "onnxruntime is not installed: not checked"},
            "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
            "torch_version": torch.__version__,
            "vmunet_version": __version__,
        }
        write_json(stack.enter_context(atomic_path(sidecar_path(output))), info)
    log.info("exported %s (%s) with its record %s", output, fmt, sidecar_path(output))
    return info


def _trace(model: Any, example: Any) -> Any:
    import torch

    with torch.no_grad(), _quiet_tracer():
        return torch.jit.trace(model, example, check_trace=False)


def _export_pt2(model: Any, example: Any, path: Path) -> None:
    import torch

    # the batch dimension stays symbolic: the scan's blocking does not depend on it while exporting
    # (vmunet.ops.scan_torch.selective_scan_torch), so no guard pins it to the example's batch
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with open(path, "wb") as f:  # a file object: torch.export.save warns on a name not ending in .pt2
        torch.export.save(program, f)


def _export_onnx(model: Any, example: Any, path: Path) -> None:
    import torch

    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


@contextlib.contextmanager
def _quiet_tracer():
    """Silence the tracers' warnings about Python values becoming constants: the input size is fixed
    by design (the record's ``image_size``), and the batch size stays symbolic."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        yield


def _run_torchscript(path: Path, example: Any) -> Any:
    import torch

    with torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(example)


def _run_pt2(path: Path, example: Any) -> Any:
    import torch

    with open(path, "rb") as f, torch.no_grad():
        return torch.export.load(f).module()(example)


def _run_onnx(path: Path, example: Any) -> Any:
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"image": example.numpy()})[0])


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
