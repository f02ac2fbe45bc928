"""CPU stand-in for mamba-ssm's compiled ``selective_scan_cuda`` (``gpu_check.py --smoke``).

Same ``fwd``/``bwd`` signatures and return values as mamba-ssm 2.3.2.post1's extension; the
argument checks mirror the kernel's TORCH_CHECKs (csrc/selective_scan/selective_scan.cpp) so a
smoke run fails where the real kernel would reject an argument. The numbers come from vmunet's
"torch" backend in float32 (forward) and autograd through it (backward): this module exercises
the plumbing of the "cuda" path on CPU; it says nothing about the kernel's numerics.
Loaded by pointing ``VMUNET_SELECTIVE_SCAN_CUDA_DIR`` at this folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vmunet.ops.scan_torch import selective_scan_torch

#: tells vmunet's "cuda" wrapper that CPU tensors are expected here
CPU_STAND_IN = True


def _check(u, delta, A, B, C, D, z, delta_bias):
    it = u.dtype
    if it not in (torch.float32, torch.float16, torch.bfloat16):
        raise RuntimeError(f"stand-in selective_scan_cuda: input type {it} not supported")
    if A.dtype != torch.float32:
        raise RuntimeError("stand-in selective_scan_cuda: A must be float32")
    for name, t in (("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.dtype != it:
            raise RuntimeError(f"stand-in selective_scan_cuda: {name} must have u's dtype {it}, got {t.dtype}")
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z), ("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.stride(-1) != 1 and t.size(-1) != 1:
            raise RuntimeError(f"stand-in selective_scan_cuda: {name} must have stride(-1) == 1")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.dtype != torch.float32:
            raise RuntimeError(f"stand-in selective_scan_cuda: {name} must be float32")
    if B.dim() != 4 or C.dim() != 4:
        raise RuntimeError("stand-in selective_scan_cuda: B and C must be (batch, G, N, L)")


def _scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    f = torch.float32
    out, last = selective_scan_torch(u.to(f), delta.to(f), A, B.to(f), C.to(f), D, None, delta_bias,
                                     softplus, True)
    out_z = None if z is None else out * F.silu(z.to(f))
    return out, out_z, last


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    _check(u, delta, A, B, C, D, z, delta_bias)
    with torch.no_grad():
        out, out_z, last = _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, L = u.shape
    x = torch.zeros(b, d, (L + 2047) // 2048, 2 * A.shape[1], dtype=torch.float32)
    x[:, :, -1, 1::2] = last
    return [out.to(u.dtype), x] + ([] if z is None else [out_z.to(u.dtype)])


def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
    _check(u, delta, A, B, C, D, z, delta_bias)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    given = dict(zip(names, (u, delta, A, B, C, D, z, delta_bias), strict=True))
    leaves = {k: v.detach().float().requires_grad_() for k, v in given.items() if v is not None}
    with torch.enable_grad():
        o, oz, _ = _scan(*(leaves.get(k) for k in names), delta_softplus)
        grads = torch.autograd.grad(o if z is None else oz, list(leaves.values()), dout.float())
        grads = dict(zip(leaves, grads, strict=True))
    result = [grads["u"].to(u.dtype), grads["delta"].to(delta.dtype), grads["A"],
              grads["B"].to(B.dtype), grads["C"].to(C.dtype), grads.get("D"), grads.get("delta_bias")]
    if z is not None:
        result.append(grads["z"].to(z.dtype))
    return result
