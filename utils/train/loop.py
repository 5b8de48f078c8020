"""What the three trainers share: the preamble of a run, the bookkeeping of a fold, the summary.

A trainer (``GF_main.py``, ``DeepDXF_train.py``, ``joint_train.py``) owns its loop and
reads top to bottom; it calls down into this module, never the other way round::

    run = start_run(cfg, names, "GF")             # threads, seeds, device, split, run folder, folds
    for fold in run.folds:
        ...model, optimizer, loaders of the fold...
        tracker = FoldTracker(fold, run.log, settings)
        tracker.start(evaluate("val"))            # epoch 0: the untrained model (or tracker.resume(last.pth))
        for epoch in tracker.epochs():
            train = train_one_epoch(...)          # {"train_loss": ..., more named columns}
            val = evaluate("val")                 # {"loss": ..., more named terms}
            if tracker.end_epoch(epoch, train, val, model_state):   # best checkpoint, last.pth, metrics row
                break                             # early stop (or --stop_after_epochs)
        model.load_state_dict(tracker.best_state ...); test = evaluate("test")
        results.append(tracker.finish(test))
    finish_run(run.log, results, extra, headline) # summary.json, best_model.pth

Metrics travel as named dicts, never as positions. Under DDP every rank runs the
loop (the trainer's evaluation reduces over ranks, so all ranks take the same
decisions) and rank 0 writes.
"""
from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from utils.train.checkpoint import load_checkpoint, save_checkpoint
from utils.train.distributed import DistInfo, broadcast_object, gather_objects
from utils.train.early_stopping import EarlyStopping
from utils.train.run_log import QuietLogger, RunLogger, progress
from utils.train.seed import seed_everything
from utils.train.splits import Split, make_split

LAST_NAME = "last.pth"


# ----------------------------------------------------------------------------- the preamble

class RunError(Exception):
    """A run that cannot start (too few drawings, a split of other drawings, a bad ``--fold``)."""


@dataclass
class Run:
    """A started run: its logger (rank 0 writes; other ranks get a quiet one), split,
    the folds to run and the device."""

    log: RunLogger | QuietLogger
    split: Split
    folds: list[int]
    device: torch.device


def start_run(cfg: Any, names: Sequence[str], prefix: str, *, source: str = "", dist: Optional[DistInfo] = None,
              split: Optional[Split] = None) -> Run:
    """The preamble of every trainer: torch threads, seeds, device, the split, the run folder, the folds.

    Args:
        cfg: the trainer's config (``num_threads``, ``seed``, ``device``, split fields, ``fold``,
            ``run_name``, ``logs_dir``, ``checkpoints_dir``, ``wandb``).
        names: the drawings the split is of.
        prefix: the run name's prefix (``GF``, ``DeepDXF``, ``joint``).
        source: where the drawings were read, for the error message.
        dist: the DDP position and device (default: one process on ``cfg.device``): rank 0
            creates the run folder, every rank gets its name (``cfg.run_name`` is set to it).
        split: a split to keep (a resumed run's), else one is drawn (``make_split``).

    Raises:
        RunError: fewer than 4 drawings, ``split`` of other drawings, ``--fold`` not in the split.
    """
    device = torch.device(cfg.device) if dist is None else dist.device
    dist = dist or DistInfo()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if len(names) < 4:
        raise RunError(f"{len(names)} drawing(s) in {source or cfg.data_dir}: at least 4 are needed for a split")
    if split is None:
        split = make_split(names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    elif list(split.names) != list(names):
        raise RunError(f"the given split is of {len(split.names)} other drawings, not of the {len(names)} "
                       f"drawings in {source or cfg.data_dir}")
    folds = list(range(split.n_folds)) if cfg.fold is None else [cfg.fold]
    if any(not 0 <= f < split.n_folds for f in folds):
        raise RunError(f"--fold {cfg.fold} is not one of the split's {split.n_folds} folds (0..{split.n_folds - 1})")
    log: RunLogger | QuietLogger | None = None
    if dist.is_main:
        log = RunLogger(cfg.run_name or None, cfg, logs_root=cfg.logs_dir, checkpoints_root=cfg.checkpoints_dir,
                        use_wandb=cfg.wandb, prefix=prefix)
        log.save_split(split)
    cfg.run_name = broadcast_object(log.run_name if log is not None else None, dist)
    if log is None:
        log = QuietLogger(Path(cfg.checkpoints_dir) / cfg.run_name)
    return Run(log, split, folds, device)


# ----------------------------------------------------------------------------- one fold

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
    test_metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopSettings:
    """How a fold runs (:class:`FoldTracker`) and what it writes.

    ``kind``/``config``: the checkpoint kind and the flat config saved with it;
    ``checkpoint_extra``: more top-level checkpoint entries (e.g. the chance level);
    ``save_last``: write ``last.pth`` every epoch (for ``--resume``);
    ``stop_after_epochs``: leave after this many epochs of this process (0 = off).
    """

    epochs: int
    patience: int
    min_delta: float
    kind: str
    config: dict[str, Any]
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    save_last: bool = False
    stop_after_epochs: int = 0


class FoldTracker:
    """The bookkeeping of one fold: early stopping, the best checkpoint, ``last.pth``, the
    metrics rows, the log lines and the progress bar. The trainer's loop calls it.

    Args:
        fold: the fold number.
        log: the run's logger (``Run.log``).
        run: epochs, early stopping, checkpoint kind/config, ``last.pth`` on or off.
        dist: the DDP position (default: one process).
        done: results of finished folds (stored in ``last.pth``); this fold's is appended.

    metrics.csv gets one row per epoch, ``{fold, epoch, train_loss, val_loss, <train
    columns>, val_<term>..., <row_extra>, best_val, seconds}``; epoch 0 is the untrained
    model's validation (the curve starts at chance). Without validation data the
    training loss selects the best epoch (a warning says so).
    """

    def __init__(self, fold: int, log: Any, run: LoopSettings, dist: Optional[DistInfo] = None,
                 done: Optional[list[dict[str, Any]]] = None) -> None:
        self.fold = fold
        self.log = log
        self.run = run
        self.dist = dist or DistInfo()
        self.done = done if done is not None else []
        self.stopper = EarlyStopping(patience=run.patience, min_delta=run.min_delta)
        self.best_path = log.checkpoint_path(f"fold_{fold}.pth")
        #: the best epoch's model state (what the test evaluates), None before any improvement
        self.best_state: Optional[dict[str, Any]] = None
        self.has_val = True
        self.first_epoch = 1
        #: True when the process left early (``stop_after_epochs``): no result
        self.interrupted = False
        self._start = time.time()
        self._epoch = 0
        self._epochs_here = 0
        self._epoch_start = 0.0
        self._bar: Any = None

    def start(self, val0: dict[str, float], row_extra: Optional[dict[str, Any]] = None, text: str = "") -> None:
        """Epoch 0: the untrained model's validation ``val0`` (``{"loss": ..., more terms}``);
        ``text`` explains it in words."""
        fold = self.fold
        self.has_val = math.isfinite(val0["loss"])
        if not self.has_val:
            self.log.info(f"WARNING: fold {fold} has no validation loss (empty validation set?): "
                          "the training loss selects the best epoch instead")
        self.log.log_metrics({"fold": fold, "epoch": 0, "train_loss": "", "val_loss": val0["loss"],
                              **_val_columns(val0), **(row_extra or {})})
        self.log.info(f"fold {fold}: untrained val loss {val0['loss']:.4f}" + (f" = {text}" if text else ""))

    def resume(self, resume: dict[str, Any]) -> None:
        """Continue after the epoch of ``resume`` (a loaded ``last.pth`` of this fold; the trainer
        has put back its model and training state): early stopping, this rank's RNG states,
        the best model state so far (rank 0 reads it and sends it: other ranks may not see its disk)."""
        state = resume["state"]
        self.stopper.load_state_dict(state["early_stopping"])
        rng = state.get("rng") or []
        if self.dist.rank < len(rng) and rng[self.dist.rank]:
            set_rng_state(rng[self.dist.rank])
        self.has_val = bool(resume.get("has_val", True))
        self.first_epoch = int(resume["epoch"]) + 1
        if resume.get("best_checkpoint"):
            self.best_path = Path(resume["best_checkpoint"])
            found = self.dist.is_main and self.best_path.is_file()
            self.best_state = broadcast_object(load_checkpoint(self.best_path, expect_kind=self.run.kind)["state"]
                                               if found else None, self.dist)
        self.log.info(f"fold {self.fold}: resumed after epoch {resume['epoch']} (best val loss {self.stopper.best:.4f})")

    def epochs(self) -> Iterator[int]:
        """The epochs left to train, behind a progress bar (none after an early stop)."""
        last = self.first_epoch - 1 if self.stopper.should_stop else self.run.epochs
        self._epoch = self.first_epoch - 1
        self._bar = progress(range(self.first_epoch, last + 1), desc=f"fold {self.fold}", unit="epoch", leave=False,
                             initial=self.first_epoch - 1, total=self.run.epochs)
        for epoch in self._bar:
            self._epoch, self._epoch_start = epoch, time.time()
            yield epoch
        self._bar.close()

    def end_epoch(self, epoch: int, train: dict[str, float], val: dict[str, float], model_state: dict[str, Any], *,
                  train_state: Optional[dict[str, Any]] = None, row_extra: Optional[dict[str, Any]] = None,
                  bar_keys: Optional[dict[str, str]] = None) -> bool:
        """Record an epoch: a new best keeps ``model_state`` and writes ``fold_<i>.pth``;
        ``last.pth`` (with ``train_state``, every rank's RNG states: all ranks call this)
        when the run saves it; one metrics row (``row_extra``: more columns), one log line
        (``bar_keys``: label -> row key shown). Returns True when the loop must stop:
        early stopping, or ``--stop_after_epochs`` (then :attr:`interrupted`)."""
        run, fold = self.run, self.fold
        if self.stopper.step(val["loss"] if self.has_val else train["train_loss"]):
            self.best_state = copy.deepcopy(model_state)
            if self.dist.is_main:
                save_checkpoint(self.best_path, run.kind, run.config, self.best_state, fold=fold, epoch=epoch,
                                val_loss=val["loss"], val_metrics=_plain_metrics(val),
                                early_stopping=self.stopper.state_dict(), **run.checkpoint_extra)
        if run.save_last:
            self._save_last(epoch, model_state, train_state or {})
        row = {"fold": fold, "epoch": epoch, "train_loss": train["train_loss"], "val_loss": val["loss"],
               **{k: v for k, v in train.items() if k != "train_loss"}, **_val_columns(val), **(row_extra or {}),
               "best_val": self.stopper.best, "seconds": round(time.time() - self._epoch_start, 3)}
        self.log.log_metrics(row)
        terms = {label: row[key] for label, key in (bar_keys or {}).items() if key in row}
        self._bar.set_postfix(train=_fmt(train["train_loss"]), val=_fmt(val["loss"]),
                              **{k: _fmt(v) for k, v in terms.items()})
        self.log.info(f"fold {fold} epoch {epoch}/{run.epochs}: train {train['train_loss']:.4f}, val {val['loss']:.4f} "
                      f"(best {self.stopper.best:.4f} at epoch {self.stopper.best_epoch + 1})"
                      + "".join(f", {k} {_fmt(v)}" for k, v in terms.items()) + f"; {row['seconds']:.1f} s",
                      console=self._bar.disable)
        self._epochs_here += 1
        if self.stopper.should_stop:
            self.log.info(f"fold {fold}: early stop after epoch {epoch} (no improvement of the validation loss "
                          f"for {run.patience} epochs)")
            self._bar.close()
            return True
        if run.stop_after_epochs and self._epochs_here >= run.stop_after_epochs and epoch < run.epochs:
            self._bar.close()
            self.log.info(f"fold {fold}: leaving after epoch {epoch} (--stop_after_epochs); continue with --resume")
            self.interrupted = True
            return True
        return False

    def _save_last(self, epoch: int, model_state: dict[str, Any], train_state: dict[str, Any]) -> None:
        """Write ``last.pth``: the model, the training state, early stopping and every rank's RNG
        states (gathered on rank 0; all ranks must call this)."""
        rngs = gather_objects(rng_state(), self.dist)
        if not self.dist.is_main:
            return
        state = {**model_state, "training": train_state, "early_stopping": self.stopper.state_dict(), "rng": rngs}
        best = str(self.best_path) if self.best_state is not None else None
        save_checkpoint(self.log.checkpoint_path(LAST_NAME), self.run.kind, self.run.config, state, fold=self.fold,
                        epoch=epoch, has_val=self.has_val, done=self.done, best_checkpoint=best, complete=False)

    def finish(self, test: dict[str, float], text: str = "", extra: Optional[dict[str, Any]] = None) -> FoldResult:
        """The fold's result from the test metrics of the best weights (the trainer put them back)."""
        stopper = self.stopper
        best_val = stopper.best if self.has_val and math.isfinite(stopper.best) else float("nan")
        result = FoldResult(self.fold, best_val, stopper.best_epoch + 1, test["loss"], self._epoch,
                            round(time.time() - self._start, 2),
                            str(self.best_path) if self.best_state is not None else None, _plain_metrics(test),
                            dict(extra or {}))
        self.log.info(f"fold {self.fold}: best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, "
                      f"test loss {test['loss']:.4f}" + (f" = {text}" if text else "") + f"; {result.seconds:.1f} s")
        self.done.append(asdict(result))
        return result


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _val_columns(metrics: dict[str, float]) -> dict[str, float]:
    """``val_<key>`` for every named term except the total and the chance levels."""
    return {f"val_{k}": v for k, v in metrics.items() if k != "loss" and not k.startswith("chance")}


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


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


def finish_run(log: Any, results: list[FoldResult], extra: dict[str, Any], headline: str) -> dict[str, Any]:
    """Write ``summary.json`` (:func:`summarize_folds` plus ``extra``), log
    ``headline.format(**summary)``, publish the best fold's checkpoint as the run's and
    the latest ``best_model.pth``, mark ``last.pth`` complete, and close the run."""
    summary = summarize_folds(results)
    summary.update(extra)
    log.write_summary(summary)
    log.info(headline.format(**summary))
    if summary["best_checkpoint"]:
        log.publish_best(summary["best_checkpoint"])
    last = log.checkpoint_path(LAST_NAME)
    if last.is_file():
        ckpt = load_checkpoint(last)
        meta = {k: v for k, v in ckpt.items()
                if k not in ("format_version", "toolkit", "kind", "config", "state", "complete")}
        save_checkpoint(last, ckpt["kind"], ckpt["config"], ckpt["state"], **meta, complete=True)
    log.finish()
    return summary


# ----------------------------------------------------------------------------- RNG states

def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA when present, numpy, python) as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (missing entries are left as they are)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in state:
        random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def exit_code_on_ctrl_c(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]],
                        script: str) -> int:
    """``main(argv)`` as a command: after Ctrl-C one line instead of a traceback (exit 130),
    saying what a trainer without ``--resume`` (``script``) left on disk."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): each fold's best epoch so far is saved as fold_<i>.pth in the run's folder "
              f"under --checkpoints_dir; {script} has no --resume (joint_main.py has): run it again to train anew",
              file=sys.stderr)
        return 130


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


__all__ = ["LAST_NAME", "RunError", "Run", "start_run", "FoldResult", "LoopSettings", "FoldTracker", "summarize_folds",
           "finish_run", "mean_std", "rng_state", "set_rng_state", "exit_code_on_ctrl_c"]
