"""The learning-rate schedule of every trainer: linear warm-up, then cosine decay to 0.

The schedule follows the run's optimizer steps, not a fixed number: with 93
drawings an epoch can be a single optimizer step, and a fixed 20-step warm-up
would then swallow a 5-epoch run whole. :func:`plan_schedule` caps the warm-up at
about 5 % of the run's total steps and says when a run is very short.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

WARMUP_FRACTION = 0.05  # at most this share of the run's optimizer steps warms up
SHORT_RUN_STEPS = 100   # fewer optimizer steps than this: the log warns


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): ``(step + 1) / warmup`` during the
    warm-up, then ``0.5 (1 + cos(pi p))`` with ``p = (step - warmup) / (total - warmup)``
    clipped to [0, 1] (1 right after the warm-up, 0 at ``total``)."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class SchedulePlan:
    """The optimizer steps of one fold's run and the warm-up actually used."""

    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    configured_warmup: int

    def describe(self) -> str:
        """One line for the log."""
        capped = (f" (configured {self.configured_warmup}, capped at {WARMUP_FRACTION:.0%} of the run)"
                  if self.warmup_steps != self.configured_warmup else "")
        return (f"{self.steps_per_epoch} optimizer step(s) per epoch, {self.total_steps} in total over "
                f"{self.epochs} epoch(s); warm-up {self.warmup_steps} step(s){capped}, then cosine decay")

    def warning(self) -> Optional[str]:
        """A warning when the run is very short (None otherwise)."""
        if self.total_steps >= SHORT_RUN_STEPS:
            return None
        return (f"a very short run: {self.total_steps} optimizer step(s) in all ({self.steps_per_epoch} per epoch). "
                "Use more epochs, a smaller batch size or more drawings for real training")


def plan_schedule(steps_per_epoch: int, epochs: int, warmup_steps: int) -> SchedulePlan:
    """Total steps ``epochs * steps_per_epoch`` and warm-up ``min(warmup_steps, 5 % of total)``."""
    total = max(1, int(steps_per_epoch) * int(epochs))
    warmup = min(int(warmup_steps), int(WARMUP_FRACTION * total))
    return SchedulePlan(int(steps_per_epoch), int(epochs), total, max(0, warmup), int(warmup_steps))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, plan: SchedulePlan,
                      constant_groups: Sequence[str] = ("weights",)) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR of :func:`warmup_cosine` over ``plan``; parameter groups named in
    ``constant_groups`` (e.g. the loss weights) keep their learning rate."""
    f = lambda s: warmup_cosine(s, plan.warmup_steps, plan.total_steps)  # noqa: E731
    lambdas = [(lambda s: 1.0) if g.get("name") in constant_groups else f for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


__all__ = ["warmup_cosine", "SchedulePlan", "plan_schedule", "make_lr_scheduler", "WARMUP_FRACTION",
           "SHORT_RUN_STEPS"]
