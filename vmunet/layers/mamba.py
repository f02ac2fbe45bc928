"""The Mamba (v1) block (Gu & Dao 2023; mamba-ssm's ``mamba_ssm.modules.mamba_simple.Mamba``) on
this package's selective scan, for sequences (B, L, d_model):

    x, z  = in_proj(u).chunk(2)                   # d_inner = expand * d_model each, channels-first
    x     = SiLU(causal_depthwise_conv1d(x))       # kernel d_conv, left zero padding d_conv - 1
    dt, B, C = split(x_proj(x))                    # sizes (dt_rank, N, N)
    dt    = dt_proj.weight @ dt                    # dt_proj's bias is the scan's delta_bias
    y     = selective_scan(x, dt, A=-exp(A_log), B, C, D, z, delta_softplus=True)   # y * SiLU(z) inside
    out   = out_proj(y)

This is mamba-ssm's forward without its inference cache (``inference_params``, step by step
decoding) and without its fused CUDA path (``mamba_inner_fn`` + ``causal_conv1d``), which computes
the same function. Parameter names and shapes are mamba-ssm's (``in_proj``, ``conv1d``, ``x_proj``,
``dt_proj``, ``A_log``, ``D``, ``out_proj``), so its state dicts load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers.ss2d import dt_bias_init
from vmunet.ops import selective_scan
from vmunet.ops.selective_scan import check_backend_name


class Mamba(nn.Module):
    """Mamba block on (B, L, d_model) sequences -> (B, L, d_model).

    Args:
        d_model: channels in and out.
        d_state: SSM state size N.
        d_conv: causal depthwise convolution width.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection; "auto" = ceil(d_model / 16).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Mamba's delta initialisation.
        conv_bias, bias: bias of the conv1d / of in_proj and out_proj.
        scan_backend: selective-scan backend ("auto" | "torch" | "numba" | "ref" | "cuda" | "triton").
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if d_model < 1 or d_state < 1 or d_conv < 1:
            raise ValueError(f"Mamba: d_model, d_state and d_conv must be positive, got {d_model}, {d_state}, {d_conv}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = check_backend_name(scan_backend, "scan_backend")
        di, R, N = self.d_inner, self.dt_rank, d_state

        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        # causal: padded d_conv - 1 on both sides, the first L outputs kept (mamba-ssm's slow path)
        self.conv1d = nn.Conv1d(di, di, kernel_size=d_conv, groups=di, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, di, bias=True)
        dt_std = R**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(dt_std)
            elif dt_init == "random":
                self.dt_proj.weight.uniform_(-dt_std, dt_std)
            else:
                raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
            self.dt_proj.bias.copy_(dt_bias_init(di, dt_min, dt_max, dt_init_floor))
        # S4D-real: A = -(1..N) for every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32).repeat(di, 1)))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=bias)

    def selective_scan(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       z: Tensor, delta_bias: Tensor) -> Tensor:
        """The single selective-scan call of a forward pass (an instance attribute of the same name
        replaces it, e.g. to count its FLOPs in ``vmunet.models.summary``)."""
        return selective_scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True,
                              backend=self.scan_backend)

    def forward(self, u: Tensor) -> Tensor:
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects input of shape (B, L, {self.d_model}), got {tuple(u.shape)}")
        L, N = u.shape[1], self.d_state
        x, z = self.in_proj(u).transpose(1, 2).chunk(2, dim=1)                 # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :L])
        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)), [self.dt_rank, N, N], dim=-1)
        dt = torch.matmul(dt, self.dt_proj.weight.t()).transpose(1, 2)         # (B, d_inner, L)
        # the scan runs in float32 (float64 for a float64 model) whatever the autocast dtype, as
        # mamba-ssm's A, D and delta_bias casts
        f = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = self.selective_scan(x.to(f), dt.to(f), -torch.exp(self.A_log.to(f)),
                                B.transpose(1, 2).to(f).contiguous(), C.transpose(1, 2).to(f).contiguous(),
                                self.D.to(f), z.to(f), self.dt_proj.bias.to(f))
        return self.out_proj(y.transpose(1, 2).to(u.dtype))
