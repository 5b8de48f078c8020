"""Fixed loss weights: ``L = sum_i w_i L_i`` with constant ``w`` from the config."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from model.weighting.base import LossWeighting


class FixedWeighting(LossWeighting):
    """``L = sum_i w_i L_i`` with constant ``w`` (a buffer; default all 1)."""

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None,
                 weights: Optional[Sequence[float]] = None) -> None:
        super().__init__(n_tasks, names)
        w = torch.ones(n_tasks) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w.shape != (n_tasks,):
            raise ValueError(f"expected {n_tasks} weights, got {tuple(w.shape)}")
        self.register_buffer("w", w.float())

    def weights(self) -> Tensor:
        return self.w.detach().clone()


__all__ = ["FixedWeighting"]
