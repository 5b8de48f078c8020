"""GradNorm (Chen et al. 2018) for tasks that share no layer.

GradNorm balances ``G_i = || d(w_i L_i) / dW ||`` at a layer ``W`` all tasks share.
The GF and DeepDXF models share none, so here ``G_i = w_i || d L_i / d theta_i ||``
where ``theta_i`` are **all parameters of the model task i trains** (its own
loss's gradient on its own model; the cross-model term is left out: the norm is
of ``L_i`` alone). GradNorm thus balances the size of the update signal each
model receives from its loss, scaled by its weight, against the target

``G_i* = mean_j(G_j) * (r_i)^alpha``,  ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``

(a task that has learned less relatively gets a larger gradient). The weights
get the gradient of ``L_grad = sum_i |G_i - G_i*|`` with the target held
constant, ``d L_grad / d w_i = sign(G_i - G_i*) ||d L_i / d theta_i||`` (exact,
because ``||d L_i / d theta_i||`` does not depend on ``w``), are stepped by the
main optimizer, kept positive and renormalized to ``sum_i w_i = T``. ``L_i(0)`` is
the first observed loss. The combined loss uses ``w`` detached: ``w`` learns only
from ``L_grad``.

In the training step: the gradient norms are measured in :meth:`GradNormWeighting.forward`
on an optimizer step's last micro-batch (before its backward), the weights' gradient is
written by :meth:`~GradNormWeighting.step`. The renormalization of ``w`` after its
update is read by :meth:`~GradNormWeighting.weights` and written into the parameter
at the next :meth:`~GradNormWeighting.step`, before ``w`` is used or updated again.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from model.weighting.base import LossWeighting, Reduce


class GradNormWeighting(LossWeighting):
    """GradNorm on the gradient of each task's loss on its own model (see the module docstring)."""

    needs_task_gradients = True

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None, alpha: float = 1.5) -> None:
        super().__init__(n_tasks, names)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), float("nan")))
        self.register_buffer("last_grad_norms", torch.full((n_tasks,), float("nan")))
        self.register_buffer("last_losses", torch.full((n_tasks,), float("nan")))

    def _renormalized(self) -> Tensor:
        """``w`` kept positive (>= 1e-3) and scaled to sum to T."""
        w = self.w.detach().float().clamp_min(1e-3)
        return w * self.n_tasks / w.sum()

    def weights(self) -> Tensor:
        return self._renormalized()

    def forward(self, losses: Tensor, task_params: Optional[Sequence[Sequence[Tensor]]] = None, *,
                reduce: Reduce = None, grad_scale: float = 1.0) -> Tensor:
        """``sum_i w_i L_i`` with ``w`` detached; given ``task_params``, first measure
        ``||d L_i / d theta_i||`` (:meth:`observe`)."""
        if task_params is not None:
            self.observe(losses, task_params, reduce=reduce, grad_scale=grad_scale)
        return (self.weights().to(losses.device) * losses).sum()

    def observe(self, losses: Tensor, task_params: Sequence[Sequence[Tensor]], *, reduce: Reduce = None,
                grad_scale: float = 1.0) -> None:
        """Measure ``||d L_i / d theta_i||`` (autograd.grad, graph kept for the real backward).

        Under fp16 autocast the backward runs through fp16 activations, where the
        gradients of an unscaled loss underflow to 0: the gradients are taken of
        ``grad_scale * L_i`` (the GradScaler's scale) and divided by it in fp32. A
        non-finite result (overflow) leaves the weights unchanged at this step.

        Args:
            losses: [T] the task losses of this micro-batch (unscaled).
            task_params: ``task_params[i]`` = the parameters of task i's model.
            reduce: averages a tensor over DDP ranks (None: single process).
            grad_scale: the loss scale (1 without fp16).
        """
        norms = []
        for i, params in enumerate(task_params):
            params = [p for p in params if p.requires_grad]
            grads = torch.autograd.grad(losses[i] * grad_scale, params, retain_graph=True, allow_unused=True)
            sq = sum((g.float() ** 2).sum() for g in grads if g is not None)
            norms.append(torch.sqrt(torch.as_tensor(sq, dtype=torch.float32)) / float(grad_scale))
        g = torch.stack([n.to(self.w.device) for n in norms]).detach()
        loss = losses.detach().float().to(self.w.device)
        if reduce is not None:
            g, loss = reduce(g), reduce(loss)
        self.last_grad_norms.copy_(g)
        self.last_losses.copy_(loss)
        if torch.isnan(self.initial_losses).any() and torch.isfinite(loss).all():
            self.initial_losses.copy_(loss)

    def weight_gradient(self) -> Optional[Tensor]:
        """``d L_grad / d w`` [T] from the last :meth:`observe`; None before any (or if not finite)."""
        g, loss, l0 = self.last_grad_norms, self.last_losses, self.initial_losses
        if not (torch.isfinite(g).all() and torch.isfinite(loss).all() and torch.isfinite(l0).all()):
            return None
        w = self.w.detach().float()
        G = w * g
        ratio = loss / l0.clamp_min(1e-12)
        r = ratio / ratio.mean().clamp_min(1e-12)
        target = G.mean() * r.pow(self.alpha)
        return torch.sign(G - target) * g

    @torch.no_grad()
    def step(self, reduce: Reduce = None) -> None:
        """Renormalize ``w`` after its last update, then write its gradient (the last
        :meth:`observe` is the same on every rank: nothing to average)."""
        self.w.copy_(self._renormalized())
        grad = self.weight_gradient()
        self.w.grad = None if grad is None else grad.to(self.w.dtype)


__all__ = ["GradNormWeighting"]
