"""The "cuda" selective scan: mamba-ssm's fused CUDA kernel, called through its compiled extension.

We import the compiled module ``selective_scan_cuda`` directly and never ``import mamba_ssm``: the
package's ``__init__`` pulls in transformers and the Mamba-2/3 Triton kernels, and from its next
release on it imports fine WITHOUT the extension, so "mamba_ssm imports" would no longer mean
"the kernel works". The extension comes from ``pip install mamba-ssm`` (it installs
``selective_scan_cuda`` as a top-level module) or from ``benchmarks/gpu/build_selective_scan.py``
(a lean build of just this kernel); put the ``.so`` on ``sys.path`` or name its folder in
``VMUNET_SELECTIVE_SCAN_CUDA_DIR``.

:class:`SelectiveScanCudaFn` calls ``fwd``/``bwd`` with exactly the arguments of mamba-ssm
2.3.2.post1's ``SelectiveScanFn`` (``mamba_ssm/ops/selective_scan_interface.py``).
:func:`selective_scan_cuda` adapts vmunet's looser contract to the kernel's strict one:

* dtypes: the kernel wants u, delta, B, C, z in ONE input dtype (float32, float16 or bfloat16),
  A, D and delta_bias in float32. When u, delta, B, C (and z) already share a dtype they are
  passed as they are; otherwise all are upcast to float32 (what the other backends compute in),
  and the output is returned in u's dtype. float64 is not supported by the kernel: an error.
* strides: only the last dimension must be contiguous; others are copied only when it is not.
* devices: CUDA tensors only, unless the loaded module is a CPU stand-in that declares
  ``CPU_STAND_IN = True`` (``benchmarks/gpu/standin``, used by ``gpu_check.py --smoke``).
* the last state (``return_last_state``) has no gradient (the kernel's backward ignores it, as in
  mamba-ssm); it is marked non-differentiable, so using it in a loss raises instead of silently
  dropping its contribution.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

#: the compiled module's name, as mamba-ssm's setup.py and our build script name it
EXTENSION_NAME = "selective_scan_cuda"
#: a folder holding ``selective_scan_cuda*.so``; when set, the extension is loaded from there only
EXTENSION_DIR_ENV = "VMUNET_SELECTIVE_SCAN_CUDA_DIR"

CUDA_HINT = (
    "the 'cuda' selective-scan backend needs mamba-ssm's compiled extension `selective_scan_cuda` "
    "(`MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm==2.3.2.post1` "
    "on a machine with nvcc and a CUDA build of torch, or benchmarks/gpu/build_selective_scan.py; "
    "see the README's GPU section) and a CUDA device; on CPU use backend='torch'"
)

_load_error: str | None = None


def _import_extension() -> ModuleType:
    folder = os.environ.get(EXTENSION_DIR_ENV)
    if not folder:
        return importlib.import_module(EXTENSION_NAME)
    spec = importlib.machinery.PathFinder.find_spec(EXTENSION_NAME, [folder])
    if spec is None:
        raise ImportError(f"{EXTENSION_DIR_ENV}={folder}: no {EXTENSION_NAME} module (.so) there")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[EXTENSION_NAME] = module
    return module


@functools.lru_cache(maxsize=1)
def extension() -> ModuleType | None:
    """The compiled ``selective_scan_cuda`` module (from ``$VMUNET_SELECTIVE_SCAN_CUDA_DIR`` when
    set, else ``sys.path``), or None when it does not load; the reason is logged at DEBUG level
    and kept for :func:`load_error`."""
    global _load_error
    try:
        module = _import_extension()  # its .so needs torch's libraries: torch is imported above
    except Exception as exc:  # ImportError, or an OSError/undefined symbol from a mismatched build
        _load_error = f"{type(exc).__name__}: {exc}"
        logger.debug("selective_scan_cuda unavailable: %s", _load_error)
        return None
    if not (callable(getattr(module, "fwd", None)) and callable(getattr(module, "bwd", None))):
        _load_error = f"{getattr(module, '__file__', EXTENSION_NAME)} has no fwd/bwd functions"
        return None
    _load_error = None
    return module


def load_error() -> str | None:
    """Why :func:`extension` returned None (None when it loaded or was never tried)."""
    return _load_error


def cuda_available() -> bool:
    """True when the compiled extension loads AND a CUDA device exists."""
    return torch.cuda.is_available() and extension() is not None


class SelectiveScanCudaFn(torch.autograd.Function):
    """mamba-ssm 2.3.2.post1 ``SelectiveScanFn`` with the extension module passed in (``ext``).

    Inputs already follow the kernel's dtype rules (see :func:`kernel_inputs`). Returns
    ``(out, last_state)``; ``last_state`` is non-differentiable.
    """

    @staticmethod
    def forward(ctx, ext, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        if u.stride(-1) != 1:
            u = u.contiguous()
        if delta.stride(-1) != 1:
            delta = delta.contiguous()
        if D is not None:
            D = D.contiguous()
        if B.stride(-1) != 1:
            B = B.contiguous()
        if C.stride(-1) != 1:
            C = C.contiguous()
        if z is not None and z.stride(-1) != 1:
            z = z.contiguous()
        ctx.squeeze_B = B.dim() == 3
        ctx.squeeze_C = C.dim() == 3
        if ctx.squeeze_B:
            B = B.unsqueeze(1)  # (b, N, L) -> (b, 1, N, L), a view as in mamba's rearrange
        if ctx.squeeze_C:
            C = C.unsqueeze(1)
        out, x, *rest = ext.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.ext = ext
        ctx.delta_softplus = delta_softplus
        ctx.has_z = z is not None
        last_state = x[:, :, -1, 1::2]  # (batch, dim, dstate)
        ctx.mark_non_differentiable(last_state)
        if not ctx.has_z:
            ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
            return out, last_state
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        return rest[0], last_state

    @staticmethod
    def backward(ctx, dout, _dlast):
        if not ctx.has_z:
            u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
            z = out = None
        else:
            u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = ctx.ext.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, ctx.delta_softplus,
            False,  # recompute out_z: not needed here (as in mamba-ssm)
        )
        dz = rest[0] if ctx.has_z else None
        dB = dB.squeeze(1) if ctx.squeeze_B else dB
        dC = dC.squeeze(1) if ctx.squeeze_C else dC
        return (None, du, ddelta, dA, dB, dC,
                dD if D is not None else None,
                dz,
                ddelta_bias if delta_bias is not None else None,
                None)


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_inputs(u, delta, A, B, C, D, z, delta_bias):
    """Cast the inputs to what the kernel accepts (module docstring); the casts are ordinary
    autograd ops, so gradients come back in each input's own dtype."""
    if u.dtype == torch.float64:
        raise TypeError("selective_scan: backend='cuda' computes in float32/float16/bfloat16 "
                        "(mamba-ssm's kernel has no float64); use backend='torch' or 'ref' for float64")
    seq = [t for t in (u, delta, B, C, z) if t is not None]
    itype = u.dtype if u.dtype in _KERNEL_DTYPES and all(t.dtype == u.dtype for t in seq) else torch.float32
    f32 = torch.float32
    cast = lambda t, dt: None if t is None else t.to(dt)  # noqa: E731
    # the kernel also wants delta_bias contiguous (SelectiveScanFn makes only D contiguous)
    delta_bias = None if delta_bias is None else delta_bias.to(f32).contiguous()
    return (cast(u, itype), cast(delta, itype), cast(A, f32), cast(B, itype), cast(C, itype),
            cast(D, f32), cast(z, itype), delta_bias)


def scan_with_extension(ext, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, return_last_state=False):
    """The "cuda" backend on an explicit extension object (the tests pass a stand-in on CPU)."""
    args = kernel_inputs(u, delta, A, B, C, D, z, delta_bias)
    out, last = SelectiveScanCudaFn.apply(ext, *args, bool(delta_softplus))
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """The "cuda" backend; see :func:`vmunet.ops.selective_scan` (and this module for the dtypes)."""
    ext = extension()
    if ext is None:
        raise RuntimeError(CUDA_HINT + (f" (loading it failed: {_load_error})" if _load_error else ""))
    # a pure-Python stand-in module (benchmarks/gpu/standin, for CPU smoke runs) says so
    if not u.is_cuda and not getattr(ext, "CPU_STAND_IN", False):
        raise RuntimeError(f"selective_scan: backend='cuda' needs CUDA tensors, got u on {u.device}")
    return scan_with_extension(ext, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                               return_last_state)
