"""``vmunet export``: TorchScript / ONNX files that give PyTorch's logits, the record beside them,
atomic writes, no silent overwrite, one-line errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from vmunet.cli import main
from vmunet.inference import export as export_mod
from vmunet.inference.export import export_checkpoint, sidecar_path
from vmunet.models.checkpoint import model_from_checkpoint

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
CLASSES = ["background", "liver", "spleen"]


def _scan_calls(ckpt) -> int:
    """Selective-scan calls of one forward pass of the checkpoint's model (one per SS2D layer)."""
    from vmunet.layers.ss2d import SS2D

    model, _ = model_from_checkpoint(ckpt)
    return sum(isinstance(m, SS2D) for m in model.modules())


def _reference(ckpt, x: torch.Tensor) -> torch.Tensor:
    """Logits of the checkpoint's model as `vmunet predict` runs it (default scan backend)."""
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        return model(x)


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(123)  # not the exporter's seed; batch sizes other than the traced 2
    return [torch.randn(1, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)]


def _check_record(out, fmt, tiny_record) -> dict:
    info = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out).name == out.name + ".json"
    assert info["format"] == fmt and info["file"] == out.name
    assert info["class_names"] == CLASSES
    assert info["input"]["shape"] == ["batch", 1, 32, 32]
    assert info["output"]["shape"] == ["batch", 3, 32, 32]
    for key in ("class_names", "in_chans", "image_size", "intensity", "orientation", "slice_axis"):
        assert info["preprocessing"][key] == tiny_record[key], key
    assert info["model_kwargs"]["scan_backend"] == "torch"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
    return info


@pytest.fixture()
def tiny_record(tiny_checkpoint):
    return torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["vmunet"]["preprocessing"]


def test_torchscript_export_gives_the_pytorch_logits(tiny_checkpoint, tiny_record, tmp_path, capsys):
    out = tmp_path / "export" / "model.pt"
    # what the help and docs/export.md say: PyTorch deprecates TorchScript and warns on every export
    with pytest.warns(DeprecationWarning, match=r"`torch\.jit\.save` is deprecated"):
        assert main(["export", "-m", str(tiny_checkpoint), "--format", "torchscript", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "TorchScript is deprecated by PyTorch (torch.jit.trace/save/load warn); prefer onnx." in help_text
    info = _check_record(out, "torchscript", tiny_record)
    assert info["parity"]["max_abs_diff"] <= 1e-5
    loaded = torch.jit.load(str(out))
    # each scan is recorded as a loop over its blocks (vmunet.ops.scan_export), not unrolled
    assert str(loaded.inlined_graph).count("prim::Loop") >= _scan_calls(tiny_checkpoint) > 0
    for x in _inputs():
        with torch.no_grad():
            got = loaded(x)
        torch.testing.assert_close(got, _reference(tiny_checkpoint, x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAVE_ORT, reason="onnx/onnxruntime not installed (both are in the [dev] extra)")
def test_onnx_export_gives_the_pytorch_logits_in_onnxruntime(tiny_checkpoint, tiny_record, tmp_path):
    import onnx
    import onnxruntime

    out = tmp_path / "model.onnx"
    info = export_checkpoint(tiny_checkpoint, out, "onnx")
    assert _check_record(out, "onnx", tiny_record) == json.loads(json.dumps(info))
    assert info["parity"]["max_abs_diff"] <= 1e-4 and info["parity"]["runtime"].startswith("onnxruntime")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    # one ONNX Loop over the blocks per scan call (vmunet.ops.scan_export), not an unrolled scan
    graph = onnx.load(str(out), load_external_data=False).graph
    assert [n.op_type for n in graph.node].count("Loop") == _scan_calls(tiny_checkpoint) > 0
    for x in _inputs():
        (got,) = session.run(["logits"], {"image": x.numpy()})
        ref = _reference(tiny_checkpoint, x).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999


def _fail(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_exit_2_and_nothing_is_overwritten(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    out.write_bytes(b"keep me")
    base = ["export", "-m", str(tiny_checkpoint), "--format", "torchscript"]
    err = _fail([*base, "-o", str(out)], capsys)
    assert f"{out} exists; pass --overwrite" in err and out.read_bytes() == b"keep me"

    sidecar_only = tmp_path / "other.pt"
    sidecar_path(sidecar_only).write_text("{}")
    assert "other.pt.json exists" in _fail([*base, "-o", str(sidecar_only)], capsys)
    assert not sidecar_only.exists()

    assert "no such file" in _fail(["export", "-m", str(tmp_path / "nope.ckpt"), "--format", "onnx",
                                    "-o", str(tmp_path / "m.onnx")], capsys)
    assert "is a folder, expected a file name" in _fail([*base, "-o", str(tmp_path)], capsys)
    assert "inputs are never overwritten" in _fail([*base, "-o", str(tiny_checkpoint), "--overwrite"], capsys)
    not_a_ckpt = tmp_path / "junk.ckpt"
    not_a_ckpt.write_bytes(b"not a checkpoint")
    assert "junk.ckpt" in _fail(["export", "-m", str(not_a_ckpt), "--format", "torchscript",
                                 "-o", str(tmp_path / "j.pt")], capsys)
    no_record = tmp_path / "norecord.ckpt"
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["vmunet"]["preprocessing"] = None
    torch.save(ckpt, no_record)
    assert "has no preprocessing record" in _fail(["export", "-m", str(no_record), "--format", "torchscript",
                                                   "-o", str(tmp_path / "n.pt")], capsys)
    with pytest.raises(SystemExit) as exc:  # argparse: unknown format
        main([*base[:3], "--format", "tflite", "-o", str(tmp_path / "m.tflite")])
    assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.ckpt", "model.pt", "norecord.ckpt", "other.pt.json"]


def test_a_failed_export_keeps_the_old_file_and_leaves_no_temporary(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    out.write_bytes(b"old")

    def broken(model, example):
        raise RuntimeError("tracer failed")

    monkeypatch.setattr(export_mod, "_trace", broken)
    with pytest.raises(RuntimeError, match="tracer failed"):
        export_checkpoint(tiny_checkpoint, out, "torchscript", overwrite=True)
    assert out.read_bytes() == b"old" and not sidecar_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_record_hashes_the_checkpoint_that_was_exported(tiny_checkpoint, tmp_path, monkeypatch):
    # a checkpoint replaced while the export runs (training still writing last.ckpt): the record
    # names the bytes whose weights were exported, not the new file's
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    exported_sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    real_trace = export_mod._trace

    def trace_while_training_writes(model, example):
        ckpt.write_bytes(b"a newer checkpoint")
        return real_trace(model, example)

    monkeypatch.setattr(export_mod, "_trace", trace_while_training_writes)
    info = export_checkpoint(ckpt, tmp_path / "model.pt", "torchscript")
    assert info["checkpoint_sha256"] == exported_sha
    assert json.loads(sidecar_path(tmp_path / "model.pt").read_text())["checkpoint_sha256"] == exported_sha


@pytest.mark.slow  # torch.export of the tiny model: ~40 s to export and ~20 s to load on the 2-core VM
def test_pt2_export_gives_the_pytorch_logits_at_other_batch_sizes(tiny_checkpoint, tiny_record, tmp_path, capsys):
    out = tmp_path / "export" / "model.pt2"
    assert main(["export", "-m", str(tiny_checkpoint), "--format", "pt2", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = _check_record(out, "pt2", tiny_record)
    assert info["parity"]["max_abs_diff"] <= 1e-5 and info["parity"]["runtime"].endswith("(torch.export.load)")
    assert info["onnx_opset"] is None
    program = torch.export.load(out)
    # each scan is one scan operator (a loop over its blocks, vmunet.ops.scan_export), not unrolled
    targets = [n.target for n in program.graph.nodes]
    assert targets.count(torch.ops.higher_order.scan) == _scan_calls(tiny_checkpoint) > 0
    loaded = program.module()
    for x in _inputs():  # batch 1 and 3: the export saw a batch of 2, its batch dimension is dynamic
        with torch.no_grad():
            got = loaded(x)
        torch.testing.assert_close(got, _reference(tiny_checkpoint, x), rtol=1e-4, atol=1e-5)


def test_pt2_is_offered_checked_before_export_and_written_atomically(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    # the cheap default-tier half of the slow round trip above: the CLI takes --format pt2, checks the
    # paths before exporting, and dispatches to torch.export inside the atomic write
    out = tmp_path / "model.pt2"
    out.write_bytes(b"keep me")
    base = ["export", "-m", str(tiny_checkpoint), "--format", "pt2"]
    assert f"{out} exists; pass --overwrite" in _fail([*base, "-o", str(out)], capsys)
    assert "is a folder, expected a file name (e.g. model.pt2)" in _fail([*base, "-o", str(tmp_path)], capsys)
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "torch.export.load(FILE).module()" in " ".join(capsys.readouterr().out.split())

    def broken(model, example, path):
        assert isinstance(model, torch.nn.Module) and example.shape == (2, 1, 32, 32)
        raise RuntimeError("torch.export failed")

    monkeypatch.setattr(export_mod, "_export_pt2", broken)
    with pytest.raises(RuntimeError, match="torch.export failed"):
        export_checkpoint(tiny_checkpoint, out, "pt2", overwrite=True)
    assert out.read_bytes() == b"keep me" and not sidecar_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]
