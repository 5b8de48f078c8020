"""Loss weighting for joint training: one interface, one small class per method.

The joint loss is ``L = sum_i w_i L_i`` over the T task losses (here T = 2: the GF
and the DeepDXF loss); the methods differ in how ``w`` is chosen:

==============  ==============================================================
``fixed``       constant weights ``w_i`` from the config.
``uncertainty`` Kendall et al. 2018: learned log-variances ``s_i``,
                ``L = sum_i exp(-s_i) L_i + s_i`` (so ``w_i = exp(-s_i)``; at the
                optimum ``exp(s_i) = L_i``). ``s`` is trained by the main optimizer
                (its own parameter group, no weight decay).
``gradnorm``    Chen et al. 2018 (see :class:`GradNormWeighting` for what the
                gradients are when the two models share no layer).
``dwa``         Liu et al. 2019, Dynamic Weight Average: ``r_i = L_i(t-1) / L_i(t-2)``
                of the epoch-mean losses, ``w_i = T softmax(r / temperature)_i``;
                ``w = 1`` in the first two epochs.
==============  ==============================================================

Every method is an ``nn.Module``: its learned values are parameters and its
history is buffers, so ``state_dict()`` / ``load_state_dict()`` save and restore
everything a checkpoint needs. The trainer calls, per optimizer step::

    total = weighting(losses)                  # losses: [T] float32, differentiable
    weighting.observe(losses, task_params)     # only if weighting.needs_task_gradients
    ...backward, unscale...
    weighting.before_optimizer_step()          # GradNorm writes its weight gradients
    optimizer.step()
    weighting.after_optimizer_step()           # GradNorm renormalizes
    ...
    weighting.end_epoch(mean_losses)           # DWA

and logs ``weighting.weights()``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn


class LossWeighting(nn.Module):
    """Interface: combine T task losses into one scalar with (possibly changing) weights.

    Args:
        n_tasks: T.
        names: task names for logs (``w_<name>``).
    """

    #: True when :meth:`observe` needs the gradients of each loss (GradNorm).
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

    def forward(self, losses: Tensor) -> Tensor:
        """The combined loss. losses: [T] float32 (differentiable). Returns a scalar."""
        return (self.weights().to(losses.device) * losses).sum()

    def observe(self, losses: Tensor, task_params: Sequence[Sequence[Tensor]],
                reduce: Optional[Callable[[Tensor], Tensor]] = None, grad_scale: float = 1.0) -> None:
        """See the losses (and for GradNorm their gradients) of an optimizer step's last micro-batch.
        ``grad_scale``: the GradScaler's scale under fp16 (gradients are taken of the scaled loss)."""

    def before_optimizer_step(self) -> None:
        """Called after backward and unscaling, before ``optimizer.step()``."""

    def after_optimizer_step(self) -> None:
        """Called after ``optimizer.step()``."""

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Called once per epoch with the epoch-mean task losses ``[T]`` (the same on every rank)."""

    def weight_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimizer trains (its weight group, no weight decay)."""
        return [p for p in self.parameters() if p.requires_grad]

    def log_values(self) -> dict[str, float]:
        """``{"w_<name>": weight}`` for the metrics file."""
        return {f"w_{n}": float(w) for n, w in zip(self.names, self.weights().tolist())}


class FixedWeighting(LossWeighting):
    """``L = sum_i w_i L_i`` with constant ``w``."""

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None,
                 weights: Optional[Sequence[float]] = None) -> None:
        super().__init__(n_tasks, names)
        w = torch.ones(n_tasks) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w.shape != (n_tasks,):
            raise ValueError(f"expected {n_tasks} weights, got {tuple(w.shape)}")
        self.register_buffer("w", w.float())

    def weights(self) -> Tensor:
        return self.w.detach().clone()


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. 2018: ``L = sum_i exp(-s_i) L_i + s_i``, ``s_i = log sigma_i^2`` learned.

    ``d L / d s_i = 1 - exp(-s_i) L_i`` vanishes at ``s_i = log L_i``: each loss ends
    up weighted by the inverse of its own size. ``s`` starts at 0 (all weights 1).
    """

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None) -> None:
        super().__init__(n_tasks, names)
        self.log_vars = nn.Parameter(torch.zeros(n_tasks))

    def weights(self) -> Tensor:
        return torch.exp(-self.log_vars.detach().float())

    def forward(self, losses: Tensor) -> Tensor:
        s = self.log_vars.to(losses.device).float()
        return (torch.exp(-s) * losses + s).sum()


class DWAWeighting(LossWeighting):
    """Dynamic Weight Average (Liu et al. 2019) on epoch-mean losses.

    ``w_i(t) = T exp(r_i / temperature) / sum_j exp(r_j / temperature)``,
    ``r_i = L_i(t-1) / L_i(t-2)``; ``w = 1`` until two epochs have been seen.
    """

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


class GradNormWeighting(LossWeighting):
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
    main optimizer, kept positive and renormalized to ``sum_i w_i = T`` after each
    step. ``L_i(0)`` is the first observed loss. The combined loss uses ``w``
    detached: ``w`` learns only from ``L_grad``.
    """

    needs_task_gradients = True

    def __init__(self, n_tasks: int, names: Optional[Sequence[str]] = None, alpha: float = 1.5) -> None:
        super().__init__(n_tasks, names)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), float("nan")))
        self.register_buffer("last_grad_norms", torch.full((n_tasks,), float("nan")))
        self.register_buffer("last_losses", torch.full((n_tasks,), float("nan")))

    def weights(self) -> Tensor:
        return self.w.detach().float().clone()

    def forward(self, losses: Tensor) -> Tensor:
        return (self.w.detach().to(losses.device).float() * losses).sum()

    def observe(self, losses: Tensor, task_params: Sequence[Sequence[Tensor]],
                reduce: Optional[Callable[[Tensor], Tensor]] = None, grad_scale: float = 1.0) -> None:
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

    def before_optimizer_step(self) -> None:
        grad = self.weight_gradient()
        self.w.grad = None if grad is None else grad.to(self.w.dtype)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        w = self.w.clamp_min(1e-3)
        self.w.copy_(w * self.n_tasks / w.sum())


def build_weighting(method: str, names: Sequence[str], fixed_weights: Optional[Sequence[float]] = None,
                    dwa_temperature: float = 2.0, gradnorm_alpha: float = 1.5) -> LossWeighting:
    """The weighting ``method`` (``fixed``, ``uncertainty``, ``gradnorm``, ``dwa``) for tasks ``names``."""
    n = len(names)
    if method == "fixed":
        return FixedWeighting(n, names, fixed_weights)
    if method == "uncertainty":
        return UncertaintyWeighting(n, names)
    if method == "gradnorm":
        return GradNormWeighting(n, names, alpha=gradnorm_alpha)
    if method == "dwa":
        return DWAWeighting(n, names, temperature=dwa_temperature)
    raise ValueError(f"unknown weighting {method!r}: choose fixed, uncertainty, gradnorm or dwa")


def normalized_weights(weighting: LossWeighting) -> Tensor:
    """The current weights scaled to sum to T (for a combined validation loss comparable across methods)."""
    w = weighting.weights()
    s = float(w.sum())
    return w * (len(w) / s) if math.isfinite(s) and s > 0 else torch.ones_like(w)


__all__ = [
    "LossWeighting", "FixedWeighting", "UncertaintyWeighting", "DWAWeighting", "GradNormWeighting",
    "build_weighting", "normalized_weights",
]
