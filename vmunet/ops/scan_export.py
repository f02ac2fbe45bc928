"""The selective scan as an exported graph records it: a loop over blocks, not an unrolled sequence.

``vmunet export`` records the model by tracing (``torch.jit.trace``, ``torch.onnx.export``,
``torch.export``). A Python loop over time steps is unrolled by every tracer: the paper model at
224 x 224 recorded 17 blocks x 31 steps per stage-1 scan, some 4,400 ONNX nodes per scan (40,000
for the model), minutes to export and gigabytes of memory (the tracers keep every intermediate
tensor of the recorded forward alive). Here the loop over blocks is a *graph-level* loop, so the
recorded graph has one block body whatever the sequence length:

* ``torch.jit.trace`` / ``torch.onnx.export`` (TorchScript-based): the blocks are scanned by a
  ``torch.jit.script`` function, which the tracer records as a call holding a ``prim::Loop``; the
  ONNX exporter turns it into an ONNX ``Loop`` (the steps inside a block are a nested ``Loop``).
* ``torch.export``: the blocks are scanned by the ``scan`` higher-order operator
  (``torch._higher_order_ops.scan``), which ``torch.export`` records as one loop whose body is the
  block (its steps unrolled once, T + nc of them).

The block body is the chunked scan of :mod:`vmunet.ops.scan_torch` written without in-place
writes (the ONNX exporter mistranslates in-place writes into views): the block's ``nc`` chunks of
``T`` steps are scanned at the same time from a zero state (``h_t = a_t h_{t-1} + b_t``, one
vectorised step per time index), then the state entering chunk ``c`` (``s_0`` = the previous
block's last state, ``s_c = h_end(c-1) + P_end(c-1) s_{c-1}``) is added to its steps times their
cumulative decay ``P_t = exp(A * sum_{s<=t} delta_s)``. As in the training form, only decays
``exp(delta A) <= 1`` and their products appear, never an inverse, so it is exact to float rounding
for any length. It is for inference (an exported graph has no backward); in eager mode it is also
differentiable by autograd, which the tests use to check it against the step-by-step reference.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from vmunet.ops.scan_common import finish, prepare_inputs
from vmunet.ops.scan_torch import _lay_inputs, _unlay, plan_blocks


def _block(state: Tensor, dt: Tensor, dtu: Tensor, B: Tensor, C: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """One block: ``state`` (b, G, dg, N) entering it, dt, dtu (T, nc, b, G, dg), B, C (T, nc, b, G, N),
    A (G, dg, N) -> (the state leaving it, y (T, nc, b, G, dg)). TorchScript-compatible."""
    T, nc = dt.shape[0], dt.shape[1]
    a = torch.exp(dt.unsqueeze(-1) * A)                               # (T, nc, b, G, dg, N)
    bx = dtu.unsqueeze(-1) * B.unsqueeze(-2)
    h = bx[0]
    steps = [h]
    for t in range(1, T):                                             # all chunks from zero at once
        h = a[t] * h + bx[t]
        steps.append(h)
    local = torch.stack(steps)
    decay = torch.exp(dt.cumsum(0).unsqueeze(-1) * A)                 # P_t per chunk, <= 1
    entering = [state]
    for c in range(1, nc):
        entering.append(local[T - 1, c - 1] + decay[T - 1, c - 1] * entering[-1])
    h_all = local + decay * torch.stack(entering)                     # (nc, ...) broadcast over T
    return h_all[T - 1, nc - 1], torch.matmul(h_all, C.unsqueeze(-1)).squeeze(-1)


def _scan_blocks_loop(dt_l: Tensor, dtu_l: Tensor, B_l: Tensor, C_l: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """All blocks (the leading dimension of dt_l, ...) in order; -> (y per block, last state)."""
    state = dt_l.new_zeros([dt_l.shape[3], A.shape[0], A.shape[1], A.shape[2]])
    ys = []
    for i in range(dt_l.shape[0]):
        state, y = _block(state, dt_l[i], dtu_l[i], B_l[i], C_l[i], A)
        ys.append(y)
    return torch.stack(ys), state


@functools.cache
def _scripted_loop():
    """``_scan_blocks_loop`` compiled by TorchScript (once, on first use: about a second), so that a
    tracer records its loops instead of unrolling them."""
    return torch.jit.script(_scan_blocks_loop)


def _scan_blocks_hop(dt_l: Tensor, dtu_l: Tensor, B_l: Tensor, C_l: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """``_scan_blocks_loop`` through the ``scan`` operator, the loop ``torch.export`` records."""
    from torch._higher_order_ops.scan import scan

    def step(state: Tensor, xs: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return _block(state, *xs, A)

    init = dt_l.new_zeros([dt_l.shape[3], A.shape[0], A.shape[1], A.shape[2]])
    last, ys = scan(step, init, (dt_l, dtu_l, B_l, C_l))
    return ys, last


def selective_scan_export(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                          z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                          return_last_state: bool = False, *, loop: str = "auto", chunk_steps: int | None = None,
                          slab_target: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan in its exportable form; same arguments and result as
    :func:`vmunet.ops.selective_scan`.

    ``loop`` picks how the loop over blocks is expressed: ``"script"`` (TorchScript, for
    ``torch.jit.trace`` and the TorchScript-based ``torch.onnx.export``), ``"scan"`` (the ``scan``
    operator, for ``torch.export``), ``"python"`` (a plain loop) or ``"auto"`` (``"scan"`` while
    ``torch.export`` records, else ``"script"``). The blocking is :func:`~vmunet.ops.scan_torch.plan_blocks`'s
    for a batch of 1 whatever the batch, so nothing in a recorded graph depends on the batch size;
    ``chunk_steps`` and ``slab_target`` override it (tests and tuning only).
    """
    if loop == "auto":
        loop = "scan" if torch.compiler.is_exporting() else "script"
    if loop not in ("script", "scan", "python"):
        raise ValueError(f"selective_scan_export: loop must be 'auto', 'script', 'scan' or 'python', got {loop!r}")
    s = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, L = u.shape
    N = A.shape[1]
    plan = plan_blocks(1, dim, N, L, chunk_steps, slab_target)
    A_v, dt_l, dtu_l, B_l, C_l = _lay_inputs(s.u, s.dt, s.A, s.B, s.C, plan)
    run = _scripted_loop() if loop == "script" else _scan_blocks_hop if loop == "scan" else _scan_blocks_loop
    y_l, h = run(dt_l, dtu_l, B_l, C_l, A_v)
    out = finish(_unlay(y_l, L).reshape(batch, dim, L), s.u, D, z, u.dtype)
    return (out, h.reshape(batch, dim, N)) if return_last_state else out
