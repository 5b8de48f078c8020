"""Uncertainty weighting (Kendall et al. 2018): learned log-variances.

``L = sum_i exp(-s_i) L_i + s_i`` with ``s_i = log sigma_i^2`` trained by the main
optimizer (its own parameter group, no weight decay): ``d L / d s_i = 1 - exp(-s_i) L_i``
vanishes at ``s_i = log L_i``, so each loss ends up weighted by the inverse of its
own size. ``s`` starts at 0 (all weights 1).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from model.weighting.base import LossWeighting, Reduce


class UncertaintyWeighting(LossWeighting):
    """``L = sum_i exp(-s_i) L_i + s_i``, ``w_i = exp(-s_i)``, ``s`` learned."""

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None) -> None:
        super().__init__(n_tasks, names)
        self.log_vars = nn.Parameter(torch.zeros(n_tasks))

    def weights(self) -> Tensor:
        return torch.exp(-self.log_vars.detach().float())

    def forward(self, losses: Tensor, task_params: Optional[Sequence[Sequence[Tensor]]] = None, *,
                reduce: Reduce = None, grad_scale: float = 1.0) -> Tensor:
        s = self.log_vars.to(losses.device).float()
        return (torch.exp(-s) * losses + s).sum()


__all__ = ["UncertaintyWeighting"]
