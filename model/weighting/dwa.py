"""Dynamic Weight Average (Liu et al. 2019) on epoch-mean losses.

``w_i(t) = T exp(r_i / temperature) / sum_j exp(r_j / temperature)``,
``r_i = L_i(t-1) / L_i(t-2)`` of the epoch-mean losses; ``w = 1`` in the first two
epochs. The history is two buffers, so a checkpoint carries it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from model.weighting.base import LossWeighting


class DWAWeighting(LossWeighting):
    """Dynamic Weight Average: weights from the ratio of the last two epoch-mean losses."""

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None, temperature: float = 2.0) -> None:
        super().__init__(n_tasks, names)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.register_buffer("history", torch.full((2, n_tasks), float("nan")))  # rows: t-2, t-1
        self.register_buffer("w", torch.ones(n_tasks))

    def weights(self) -> Tensor:
        return self.w.detach().clone()

    def end_epoch(self, mean_losses: Tensor) -> None:
        loss = torch.as_tensor(mean_losses, dtype=torch.float32).detach().cpu()
        if not torch.isfinite(loss).all():
            return  # keep the history of finite epochs
        self.history[0] = self.history[1].clone()
        self.history[1] = loss.to(self.history.device)
        if torch.isfinite(self.history).all():
            r = self.history[1] / self.history[0].clamp_min(1e-12)
            self.w.copy_(self.n_tasks * torch.softmax(r / self.temperature, dim=0))


__all__ = ["DWAWeighting"]
