"""The interface of loss weighting: combine the task losses of joint training into one loss.

The joint loss is ``L = sum_i w_i L_i`` over the T task losses (here T = 2: the GF
and the DeepDXF loss); the methods (one file each beside this one) differ in how
``w`` is chosen. Every method is an ``nn.Module``: its learned values are parameters
and its history is buffers, so ``state_dict()`` / ``load_state_dict()`` save and
restore everything a checkpoint needs.

The training step (``joint_train.py``) calls, per optimizer step::

    total = weighting(losses, task_params if last micro-batch else None, ...)   # every micro-batch
    ...backward, scaler.unscale_(optimizer)...
    weighting.step(reduce)                        # the one hook: gradients of the weights ready
    optimizer.step()

and the epoch loop ``weighting.end_epoch(mean_losses)`` (DWA); the logs show
``weighting.log_values()``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

#: averages a tensor over DDP ranks (``utils.train.distributed.all_reduce_mean``); None: one process
Reduce = Optional[Callable[[Tensor], Tensor]]


class LossWeighting(nn.Module):
    """Interface: combine T task losses into one scalar with (possibly changing) weights.

    Args:
        n_tasks: T.
        names: task names for logs (``w_<name>``).
    """

    #: True when :meth:`forward` wants ``task_params`` on an optimizer step's last micro-batch (GradNorm).
    needs_task_gradients: bool = False

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.n_tasks = int(n_tasks)
        self.names = list(names) if names is not None else [f"task{i}" for i in range(n_tasks)]
        if len(self.names) != self.n_tasks:
            raise ValueError(f"{len(self.names)} names for {n_tasks} tasks")

    def weights(self) -> Tensor:
        """The current weights ``w [T]`` (detached, float32)."""
        raise NotImplementedError

    def forward(self, losses: Tensor, task_params: Optional[Sequence[Sequence[Tensor]]] = None, *,
                reduce: Reduce = None, grad_scale: float = 1.0) -> Tensor:
        """The combined loss. losses: [T] float32 (differentiable). Returns a scalar.

        ``task_params`` (``task_params[i]``: the parameters of task i's model) is given on
        the last micro-batch of an optimizer step, for methods that measure the gradient
        of each loss (GradNorm); ``grad_scale`` is the GradScaler's scale under fp16."""
        return (self.weights().to(losses.device) * losses).sum()

    def step(self, reduce: Reduce = None) -> None:
        """The hook of the training step: once per optimizer step, after the backward and the
        unscaling, before ``optimizer.step()``. The weights' own parameters live outside DDP:
        their gradients are averaged over the ranks here."""
        if reduce is None:
            return
        for p in self.weight_parameters():
            if p.grad is not None:
                p.grad.copy_(reduce(p.grad))

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Called once per epoch with the epoch-mean task losses ``[T]`` (the same on every rank)."""

    def weight_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimizer trains (its weight group, no weight decay)."""
        return [p for p in self.parameters() if p.requires_grad]

    def log_values(self) -> dict[str, float]:
        """``{"w_<name>": weight}`` for the metrics file."""
        return {f"w_{n}": float(w) for n, w in zip(self.names, self.weights().tolist())}


def normalized_weights(weighting: LossWeighting) -> Tensor:
    """The current weights scaled to sum to T (for a combined validation loss comparable across methods)."""
    w = weighting.weights()
    s = float(w.sum())
    return w * (len(w) / s) if math.isfinite(s) and s > 0 else torch.ones_like(w)


__all__ = ["Reduce", "LossWeighting", "normalized_weights"]
