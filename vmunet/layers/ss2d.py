"""SS2D: VMamba's 2D selective-scan token mixer (VMamba v0 / VM-UNet ``SS2D`` with ``forward_corev0``).

    x, z  = in_proj(x).chunk(2)                 # channels-last, d_inner = expand * d_model each
    x     = SiLU(depthwise_conv3x3(x))
    xs    = cross_scan(x)                       # K sequences (B, K, d_inner, H*W)
    dt, B, C = split(x_proj_k(xs_k))            # per direction k, sizes (dt_rank, N, N)
    dt    = dt_proj_k(dt)                       # dt_rank -> d_inner, its bias is the scan's delta_bias
    ys    = selective_scan(xs, dt, A=-exp(A_log), B, C, D, delta_softplus=True)   # ONE call, all K
    y     = out_norm(cross_merge(ys)) * SiLU(z)
    out   = out_proj(y)

The per-direction parameters are stored stacked exactly like VMamba v0 — ``x_proj_weight``
(K, dt_rank + 2N, d_inner), ``dt_projs_weight`` (K, d_inner, dt_rank), ``dt_projs_bias``
(K, d_inner), ``A_logs`` (K*d_inner, N), ``Ds`` (K*d_inner,) — so published checkpoints load by
name, and the K directions run as one batched einsum and one selective-scan call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.ops import VMAMBA_DIRECTIONS, cross_merge, cross_scan, selective_scan
from vmunet.ops.cross_scan import check_directions
from vmunet.ops.selective_scan import check_backend_name


def dt_bias_init(d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """Mamba's dt bias: softplus(bias) is log-uniform in [dt_min, dt_max] (inverse softplus)."""
    dt = torch.exp(
        torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    ).clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class SS2D(nn.Module):
    """2D selective-scan mixer on channels-last maps: (B, H, W, d_model) -> (B, H, W, d_model).

    Args:
        d_model: channels in and out.
        d_state: SSM state size N.
        d_conv: depthwise convolution kernel size.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection; "auto" = ceil(d_model / 16).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Mamba's delta initialisation.
        dropout: dropout on the output.
        conv_bias, bias: bias of the depthwise conv / of in_proj and out_proj.
        directions: scan orders (names from ``vmunet.ops.cross_scan``, e.g. ``h``, ``hilbert``,
            ``local4``); K = len(directions).
        scan_backend: selective-scan backend, "auto" | "torch" | "numba" | "ref" | "cuda" | "triton".
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        dropout: float = 0.0,
        conv_bias: bool = True,
        bias: bool = False,
        directions: Sequence[str] = VMAMBA_DIRECTIONS,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.directions = check_directions(directions)
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = check_backend_name(scan_backend, "scan_backend")  # here, not at the first forward
        K, di, R, N = len(self.directions), self.d_inner, self.dt_rank, d_state

        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        self.conv2d = nn.Conv2d(di, di, kernel_size=d_conv, padding=(d_conv - 1) // 2,
                                groups=di, bias=conv_bias)
        self.act = nn.SiLU()

        # nn.Linear's default init, as VMamba builds these from K nn.Linear(di, R + 2N) modules
        bound = 1.0 / math.sqrt(di)
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, di).uniform_(-bound, bound))

        dt_std = R**-0.5 * dt_scale
        if dt_init == "constant":
            dt_w = torch.full((K, di, R), dt_std)
        elif dt_init == "random":
            dt_w = torch.empty(K, di, R).uniform_(-dt_std, dt_std)
        else:
            raise ValueError(f"SS2D: dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.dt_projs_weight = nn.Parameter(dt_w)
        self.dt_projs_bias = nn.Parameter(
            torch.stack([dt_bias_init(di, dt_min, dt_max, dt_init_floor) for _ in range(K)])
        )
        # S4D-real: A = -(1..N) for every channel; layout "(k d) n" as in VMamba
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K * di, 1)
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(K * di))
        # No `_no_weight_decay` flags (mamba/VMamba set them for their optimiser builders): the
        # VM-UNet recipe decays every parameter with one AdamW group, and nothing here reads them.

        self.out_norm = nn.LayerNorm(di)
        self.out_proj = nn.Linear(di, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def selective_scan(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       delta_bias: Tensor) -> Tensor:
        """The single selective-scan call of a forward pass (an instance attribute of the same name
        replaces it, e.g. to count its FLOPs in ``vmunet.models.summary``)."""
        return selective_scan(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True,
                              backend=self.scan_backend)

    def forward_core(self, x: Tensor) -> Tensor:
        """(B, d_inner, H, W) -> merged scan output (B, d_inner, H*W), float32 (or float64)."""
        Bsz, D, H, W = x.shape
        L, K, N = H * W, self.num_directions, self.d_state
        xs = cross_scan(x, self.directions)                                    # (B, K, D, L)
        # VMamba's einsums "b k d l, k c d -> b k c l" and "b k r l, k d r -> b k d l" as batched
        # matmuls: same speed, and a rank-1 dt projection stays a matmul (einsum turns it into a
        # broadcast multiply that FLOP counters do not see)
        x_dbl = torch.matmul(self.x_proj_weight, xs)                           # (B, K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, N, N], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)                          # (B, K, D, L)
        # the scan runs in float32 (float64 for a float64 model) whatever the autocast dtype,
        # as in VMamba
        f = torch.float64 if x.dtype == torch.float64 else torch.float32
        ys = self.selective_scan(
            xs.to(f).reshape(Bsz, K * D, L),
            dts.to(f).reshape(Bsz, K * D, L),
            -torch.exp(self.A_logs.to(f)),
            Bs.to(f).contiguous(),
            Cs.to(f).contiguous(),
            self.Ds.to(f),
            self.dt_projs_bias.to(f).reshape(-1),
        )
        return cross_merge(ys.view(Bsz, K, D, L), H, W, self.directions)

    def forward(self, x: Tensor) -> Tensor:
        Bsz, H, W, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        # NCHW-contiguous for the depthwise conv (as VMamba): its channels-last path is no faster
        # in float32 and falls back to a per-channel loop in float64; cross_scan's row-major
        # order then becomes a free view
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        y = self.forward_core(x).transpose(1, 2).reshape(Bsz, H, W, self.d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))
