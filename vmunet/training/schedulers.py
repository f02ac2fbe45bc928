"""Learning-rate schedules as a picklable multiplier for ``torch.optim.lr_scheduler.LambdaLR``.

One closed-form rule per schedule, so a resumed run lands on exactly the same learning rate and
``LambdaLR.state_dict()`` stays plain data (the checkpoint loads with ``weights_only=True``).

* ``cosine``: ``eta_min + (lr - eta_min) * (1 + cos(pi * t / t_max)) / 2`` -- the closed form of
  ``torch.optim.lr_scheduler.CosineAnnealingLR``, including its periodic restart-free "bounce"
  when training runs longer than ``t_max`` (the VM-UNet recipe: ``t_max`` 50/100, 300 epochs).
* ``poly``: ``eta_min + (lr - eta_min) * (1 - t / total) ** power`` (nnU-Net / TransUNet style).
* ``constant``.

All accept a linear warm-up over ``warmup_epochs`` from ``warmup_start_factor * lr``; the main
schedule then starts at ``t = 0``.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "poly", "constant")


class LRSchedule:
    """Multiplicative learning-rate factor for epoch (or step) ``t``; pass to ``LambdaLR``."""

    def __init__(
        self,
        name: str,
        *,
        base_lr: float,
        eta_min: float = 0.0,
        t_max: int = 100,
        total: int | None = None,
        power: float = 0.9,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"scheduler: expected one of {SCHEDULES}, got {name!r}")
        if base_lr <= 0:
            raise ValueError(f"lr must be > 0, got {base_lr}")
        if not 0 <= eta_min <= base_lr:
            raise ValueError(f"eta_min must be in [0, lr={base_lr}], got {eta_min}")
        if name == "cosine" and t_max < 1:
            raise ValueError(f"t_max must be >= 1 for the cosine schedule, got {t_max}")
        if name == "poly" and (total is None or total <= warmup_epochs):
            raise ValueError(
                f"the poly schedule needs the total number of epochs (> warmup_epochs={warmup_epochs}), "
                f"got {total}; set trainer.max_epochs"
            )
        if total is not None and name != "poly" and 0 < total <= warmup_epochs:
            # a warm-up as long as the run never reaches lr: a short run would train at a fraction of it
            raise ValueError(f"warmup_epochs={warmup_epochs} is not shorter than the run ({total} epochs): "
                             "the learning rate would never reach lr; shorten the warm-up")
        if name == "poly" and not power > 0:  # power <= 0: the rate would grow, or stay at lr
            raise ValueError(f"poly_power must be > 0, got {power}")
        if warmup_epochs < 0 or not 0 < warmup_start_factor <= 1:
            raise ValueError(
                f"warmup: expected warmup_epochs >= 0 and 0 < warmup_start_factor <= 1, "
                f"got {warmup_epochs}, {warmup_start_factor}"
            )
        self.name = name
        self.base_lr = float(base_lr)
        self.eta_min = float(eta_min)
        self.t_max = int(t_max)
        self.total = None if total is None else int(total)
        self.power = float(power)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_start_factor = float(warmup_start_factor)

    def __call__(self, t: int) -> float:
        if t < self.warmup_epochs:
            frac = t / self.warmup_epochs
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * frac
        t -= self.warmup_epochs
        floor = self.eta_min / self.base_lr
        if self.name == "cosine":
            return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * t / self.t_max)) / 2.0
        if self.name == "poly":
            span = self.total - self.warmup_epochs
            return floor + (1.0 - floor) * max(0.0, 1.0 - t / span) ** self.power
        return 1.0
