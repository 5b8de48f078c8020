"""Early stopping on a validation loss: the one class the GF, DeepDXF and joint
trainers share (through ``utils/train/loop.py``'s ``FoldTracker``)."""
from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Stop training when the validation loss has not improved for ``patience`` epochs.

    An epoch *improves* when ``val_loss < best - min_delta``; NaN or inf never improves.

    Example::

        stopper = EarlyStopping(patience=10)
        for epoch in range(epochs):
            ...
            if stopper.step(val_loss):
                save_checkpoint(...)          # best so far
            if stopper.should_stop:
                break

    Args:
        patience: epochs without improvement before ``should_stop`` becomes True
            (``<= 0`` disables stopping).
        min_delta: how much lower than the best a loss must be to count.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0) -> None:
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best: float = math.inf
        self.best_epoch: int = -1
        self.epoch: int = -1
        self.bad_epochs: int = 0
        self.should_stop: bool = False

    def step(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; return True when it is a new best."""
        self.epoch += 1
        value = float(val_loss)
        improved = math.isfinite(value) and value < self.best - self.min_delta
        if improved:
            self.best = value
            self.best_epoch = self.epoch
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.patience > 0 and self.bad_epochs >= self.patience:
                self.should_stop = True
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The counters, as plain Python values (saved in checkpoints)."""
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epoch": self.epoch,
            "bad_epochs": self.bad_epochs,
            "should_stop": self.should_stop,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters written by :meth:`state_dict`."""
        self.patience = int(state["patience"])
        self.min_delta = float(state["min_delta"])
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.epoch = int(state["epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.should_stop = bool(state["should_stop"])

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
            f"best={self.best:.6g} at epoch {self.best_epoch}, bad_epochs={self.bad_epochs})"
        )


__all__ = ["EarlyStopping"]
