"""The ``torch`` scan backend under tracing (``vmunet export``): the exportable form it records
(:mod:`vmunet.ops.scan_export`) equals the step-by-step "ref" loop, in TorchScript, in
``torch.export`` and, when onnxruntime is installed, in ONNX; its loop over blocks is a loop of the
recorded graph (the graph does not grow with the sequence length). Exported graphs are for
inference; the exportable form's eager gradients are checked against the reference too.)"""

from __future__ import annotations

import importlib.util
import io
import warnings

import pytest
import torch
from test_ops_selective_scan import TOL, assert_matches_ref, make_inputs

from vmunet.ops.scan_export import selective_scan_export
from vmunet.ops.scan_ref import selective_scan_ref
from vmunet.ops.scan_torch import plan_blocks, selective_scan_torch

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
# chunk_steps / slab_target force several blocks (state carried between them) and several chunks per
# block (states joined across chunks), the two places the in-place scan writes into views
PLANS = [dict(chunk_steps=4, slab_target=1), dict(chunk_steps=3, slab_target=10_000)]


class _Scan(torch.nn.Module):
    def __init__(self, A, D, delta_bias, **blocking):
        super().__init__()
        self.A, self.D, self.delta_bias, self.blocking = A, D, delta_bias, blocking

    def forward(self, u, delta, B, C, z):
        return selective_scan_torch(u, delta, self.A, B, C, self.D, z, self.delta_bias, delta_softplus=True,
                                    return_last_state=True, **self.blocking)


def _case(dtype, blocking, L=37):
    ins = make_inputs(batch=2, dim=6, L=L, N=4, groups=2, dtype=dtype)
    n_blocks, nc, _ = plan_blocks(2, 6, 4, L, **blocking)
    module = _Scan(ins["A"], ins["D"], ins["delta_bias"], **blocking)
    args = tuple(ins[k] for k in ("u", "delta", "B", "C", "z"))
    ref = selective_scan_ref(**ins, delta_softplus=True, return_last_state=True)
    return module, args, ref, (n_blocks, nc)


@pytest.mark.parametrize("blocking", PLANS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_traced_torch_scan_equals_the_reference(dtype, blocking):
    module, args, (out_r, last_r), (n_blocks, nc) = _case(dtype, blocking)
    assert n_blocks > 1 or nc > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, args, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    out, last = torch.jit.load(buf)(*args)
    torch.testing.assert_close(out, out_r, **TOL[dtype])
    torch.testing.assert_close(last, last_r, **TOL[dtype])
    # other inputs of the same shape: nothing input-dependent was frozen into the graph
    other = tuple(a.flip(-1) for a in args)
    torch.testing.assert_close(traced(*other)[0], selective_scan_ref(
        other[0], other[1], module.A, other[2], other[3], module.D, other[4], module.delta_bias,
        delta_softplus=True), **TOL[dtype])


@pytest.mark.skipif(not HAVE_ORT, reason="onnx/onnxruntime not installed (pip install -e .[dev])")
@pytest.mark.parametrize("blocking", PLANS)
def test_onnx_exported_torch_scan_equals_the_reference(blocking):
    import onnxruntime

    module, args, (out_r, last_r), _ = _case(torch.float32, blocking)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17,
                          input_names=["u", "delta", "B", "C", "z"], output_names=["out", "last"])
    session = onnxruntime.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    out, last = session.run(None, {k: a.numpy() for k, a in zip(["u", "delta", "B", "C", "z"], args, strict=True)})
    torch.testing.assert_close(torch.from_numpy(out), out_r, **TOL[torch.float32])
    torch.testing.assert_close(torch.from_numpy(last), last_r, **TOL[torch.float32])


def test_torch_export_with_a_dynamic_batch_equals_the_reference_at_other_batch_sizes():
    # torch.export keeps the batch symbolic: the scan's blocking must not depend on it (a plan computed
    # from the batch size makes export fail or pins the batch); the graph, saved and loaded again, is
    # then checked at batch sizes other than the exported one against the step-by-step loop. One dtype
    # (each export costs seconds): float64, where the tolerance is tight enough to catch a misjoined chunk.
    dtype = torch.float64
    blocking = dict(chunk_steps=3, slab_target=10_000)
    module, args, _, _ = _case(dtype, blocking)
    assert plan_blocks(1, 6, 4, 37, **blocking)[1] > 1  # the exported plan joins several chunks
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
    # the blocks are one scan operator of the graph, not unrolled
    assert [n.target for n in program.graph.nodes].count(torch.ops.higher_order.scan) == 1
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    for b in (1, 3):
        ins = make_inputs(batch=b, dim=6, L=37, N=4, groups=2, dtype=dtype, seed=b)
        other = tuple(ins[k] for k in ("u", "delta", "B", "C", "z"))
        out, last = loaded(*other)
        out_r, last_r = selective_scan_ref(other[0], other[1], module.A, other[2], other[3], module.D, other[4],
                                           module.delta_bias, delta_softplus=True, return_last_state=True)
        assert out.shape[0] == b
        torch.testing.assert_close(out, out_r, **TOL[dtype])
        torch.testing.assert_close(last, last_r, **TOL[dtype])


@pytest.mark.parametrize("loop", ["script", "python"])
@pytest.mark.parametrize("blocking", PLANS + [{}], ids=["blocks", "chunks", "default"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_exportable_form_equals_the_reference_forward_and_backward(dtype, blocking, loop):
    # the loop over blocks as TorchScript and as plain Python, run eagerly: output, last state and
    # (autograd through it) every input gradient against the step-by-step loop; L=37 pads the last chunk
    ins = make_inputs(batch=2, dim=6, L=37, N=4, groups=2, dtype=dtype)

    def fn(**kw):
        return selective_scan_export(**kw, loop=loop, **blocking)

    assert_matches_ref(fn, ins, True, dtype)


def test_exportable_form_rejects_an_unknown_loop():
    ins = make_inputs(batch=1, dim=2, L=5, N=2)
    with pytest.raises(ValueError, match="loop must be 'auto', 'script', 'scan' or 'python', got 'unrolled'"):
        selective_scan_export(**ins, loop="unrolled")


def _onnx_bytes(module, args) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17,
                          input_names=["u", "delta", "B", "C", "z"], output_names=["out", "last"])
    return buf.getvalue()


@pytest.mark.skipif(not HAVE_ORT, reason="onnx/onnxruntime not installed (pip install -e .[dev])")
def test_recorded_graph_loops_over_blocks_instead_of_unrolling_them():
    # 37 and 370 steps in blocks of 4 x 1 steps: 10 and 93 blocks. The traced and the ONNX graphs
    # hold one loop and have the same size at both lengths; the long ONNX graph still computes the scan.
    blocking = dict(chunk_steps=4, slab_target=1)
    import onnx
    import onnxruntime

    sizes = []
    for L in (37, 370):
        module, args, (out_r, last_r), (n_blocks, _) = _case(torch.float32, blocking, L=L)
        assert n_blocks == -(-L // 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(module, args, check_trace=False)
        assert "prim::Loop" in str(traced.inlined_graph)
        model = _onnx_bytes(module, args)
        nodes = list(onnx.load_from_string(model).graph.node)
        assert [n.op_type for n in nodes].count("Loop") == 1
        sizes.append((len(list(traced.inlined_graph.nodes())), len(nodes)))
    assert sizes[0] == sizes[1]
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    out, last = session.run(None, {k: a.numpy() for k, a in zip(["u", "delta", "B", "C", "z"], args, strict=True)})
    torch.testing.assert_close(torch.from_numpy(out), out_r, **TOL[torch.float32])
    torch.testing.assert_close(torch.from_numpy(last), last_r, **TOL[torch.float32])
