"""The fold loop every trainer shares: early stopping, best checkpoint, test loss, summary.

Plain functions, no framework. A trainer (GF_main.py, DeepDXF_train.py, joint_main.py)
gives three callables that know its model and data, and gets one
:class:`FoldResult` per fold::

    def make_model(fold):              # fresh model and optimizer for this fold
        ...; return model, optimizer
    def train_epoch(model, opt, fold, epoch):   # one pass over the fold's training data
        ...; return {"train_loss": 2.1}          # more columns welcome (lr, loss terms)
    def eval_loss(model, fold, part):  # part is "val" or "test"
        ...; return 2.3

    results = [train_fold(f, make_model, train_epoch, eval_loss, save_best, log, epochs=50, patience=10)
               for f in folds]
    summary = summarize_folds(results)

``save_best(model, optimizer, fold, epoch, val_loss, stopper) -> Path`` writes the
checkpoint of a new best epoch; ``log`` is a ``utils.run_log.RunLogger`` (``info``
and ``log_metrics`` are used). The best weights are also kept in memory and
restored before the test loss is computed.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from utils.checkpoint import save_checkpoint
from utils.early_stopping import EarlyStopping


@dataclass
class FoldResult:
    """What one fold produced."""

    fold: int
    best_val_loss: float
    best_epoch: int
    test_loss: float
    epochs_run: int
    seconds: float
    checkpoint: Optional[str]


def train_fold(
    fold: int,
    make_model: Callable[[int], tuple[torch.nn.Module, torch.optim.Optimizer]],
    train_epoch: Callable[[torch.nn.Module, torch.optim.Optimizer, int, int], dict[str, float]],
    eval_loss: Callable[[torch.nn.Module, int, str], float],
    save_best: Callable[..., Path],
    log: Any,
    epochs: int,
    patience: int,
    min_delta: float = 0.0,
) -> FoldResult:
    """Train one fold with early stopping on the validation loss, then test the best model.

    Each epoch logs one metrics row ``{fold, epoch, train_loss, val_loss, best_val,
    seconds, ...}`` (epochs count from 1; epoch 0 is the untrained model's validation
    loss, logged too so the curve starts at chance).
    """
    start = time.time()
    model, optimizer = make_model(fold)
    stopper = EarlyStopping(patience=patience, min_delta=min_delta)
    val0 = eval_loss(model, fold, "val")
    if not math.isfinite(val0):
        log.info(f"WARNING: fold {fold} has no validation loss (empty validation set?): "
                 "the training loss selects the best epoch instead")
    log.log_metrics({"fold": fold, "epoch": 0, "train_loss": "", "val_loss": val0})
    best_state, ckpt_path = None, None
    epoch = 0
    bar = tqdm(range(1, epochs + 1), desc=f"fold {fold}", unit="epoch", leave=False)
    for epoch in bar:
        t0 = time.time()
        model.train()
        row = dict(train_epoch(model, optimizer, fold, epoch))
        val = eval_loss(model, fold, "val")
        if stopper.step(val if math.isfinite(val0) else row["train_loss"]):
            best_state = copy.deepcopy(model.state_dict())
            ckpt_path = save_best(model, optimizer, fold, epoch, val, stopper)
        log.log_metrics({"fold": fold, "epoch": epoch, **row, "val_loss": val,
                         "best_val": stopper.best, "seconds": round(time.time() - t0, 3)})
        bar.set_postfix(train=f"{row.get('train_loss', float('nan')):.4f}", val=f"{val:.4f}", best=f"{stopper.best:.4f}")
        if stopper.should_stop:
            log.info(f"fold {fold}: early stop after epoch {epoch} (no improvement for {patience} epochs)")
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    test = eval_loss(model, fold, "test")
    best_val = stopper.best if math.isfinite(val0) and math.isfinite(stopper.best) else float("nan")
    result = FoldResult(fold, best_val, stopper.best_epoch + 1, test, epoch, round(time.time() - start, 2),
                        str(ckpt_path) if ckpt_path else None)
    log.info(f"fold {fold}: best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, "
             f"test loss {test:.4f}, {result.seconds:.1f} s")
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the finite values; NaN if none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def summarize_folds(results: list[FoldResult]) -> dict[str, Any]:
    """Per-fold results, mean ± std of best validation and test loss, and the best fold.

    The best fold is the one with the lowest best validation loss.
    """
    val_m, val_s = mean_std([r.best_val_loss for r in results])
    test_m, test_s = mean_std([r.test_loss for r in results])
    finite = [r for r in results if math.isfinite(r.best_val_loss)]
    best = min(finite, key=lambda r: r.best_val_loss) if finite else None
    if best is None:  # no validation anywhere: the first fold with a checkpoint
        best = next((r for r in results if r.checkpoint), None)
    return {
        "folds": [asdict(r) for r in results],
        "best_val_loss_per_fold": {str(r.fold): r.best_val_loss for r in results},
        "test_loss_per_fold": {str(r.fold): r.test_loss for r in results},
        "val_loss_mean": val_m,
        "val_loss_std": val_s,
        "test_loss_mean": test_m,
        "test_loss_std": test_s,
        "best_fold": best.fold if best else None,
        "best_checkpoint": best.checkpoint if best else None,
    }


__all__ = ["FoldResult", "train_fold", "summarize_folds", "mean_std"]


def checkpoint_saver(log: Any, kind: str, config: dict[str, Any], **extra: Any) -> Callable[..., Path]:
    """A ``save_best`` callback for :func:`train_fold`: writes ``fold_<i>.pth`` (model and
    optimizer state, the fold, epoch, validation loss and early-stopping state) into the
    run's checkpoint folder, as a checkpoint of ``kind`` with ``config``."""

    def save_best(model: torch.nn.Module, opt: torch.optim.Optimizer, fold: int, epoch: int,
                  val_loss: float, stopper: EarlyStopping) -> Path:
        return save_checkpoint(
            log.checkpoint_path(f"fold_{fold}.pth"), kind, config,
            {"model": model.state_dict(), "optimizer": opt.state_dict()},
            fold=fold, epoch=epoch, val_loss=val_loss, early_stopping=stopper.state_dict(), **extra,
        )

    return save_best


def finish_run(log: Any, results: list[FoldResult], extra: dict[str, Any], headline: str) -> dict[str, Any]:
    """Write ``summary.json`` (:func:`summarize_folds` plus ``extra``), log
    ``headline.format(**summary)``, publish the best fold's checkpoint as the run's and
    the latest ``best_model.pth``, and close the run. Returns the summary."""
    summary = summarize_folds(results)
    summary.update(extra)
    log.write_summary(summary)
    log.info(headline.format(**summary))
    if summary["best_checkpoint"]:
        log.publish_best(summary["best_checkpoint"])
    log.finish()
    return summary
