"""The one fold loop of every trainer (GF_main.py, DeepDXF_train.py, joint_main.py).

A trainer builds, per fold, a :class:`FoldSetup` (its model, data and optimizer
behind a few callables) and calls :func:`fit_fold`, which reads top to bottom::

    resume from last.pth, or log the untrained validation loss (epoch 0)
    for epoch in first..epochs:
        train = setup.train_epoch(epoch)          # {"train_loss": ..., more named columns}
        val = setup.evaluate("val")               # {"loss": ..., more named terms}
        new best?  -> keep the weights, write fold_<i>.pth
        write last.pth (model, optimizer..., early stopping, every rank's RNG states)
        one metrics.csv row, one line in train.log, the progress bar
        early stop?
    restore the best weights; test = setup.evaluate("test")

Metrics travel as named dicts, never as positions. Under DDP every rank runs the
loop (the callables reduce over ranks, so all ranks take the same decisions) and
rank 0 writes. :func:`summarize_folds` / :func:`finish_run` write summary.json.
"""
from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.distributed import DistInfo, broadcast_object, gather_objects
from utils.early_stopping import EarlyStopping
from utils.run_log import progress

LAST_NAME = "last.pth"


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
class FoldSetup:
    """One fold of one trainer, as the loop sees it.

    Attributes:
        train_epoch: ``epoch -> {"train_loss": float, ...}`` one pass over the training data
            (reduced over ranks); further keys become metrics.csv columns.
        evaluate: ``"val" | "test" -> {"loss": float, ...}``; other keys (``GF_loss``...)
            become ``val_<key>`` columns, keys starting with ``chance`` are left out of rows.
            NaN loss: no data for that part.
        model_state / load_model_state: what a best checkpoint holds (``{"model": ...}``
            or the joint state), and how to put it back.
        train_state / load_train_state: what else ``last.pth`` needs to resume
            (optimizer, scheduler, scaler, counters).
        row_extra: more columns for every row, epoch 0 included (e.g. the loss weights).
        describe: ``(part, metrics) -> text`` that explains a val/test result in words.
        result_extra: what the fold adds to its :class:`FoldResult` (e.g. skipped steps).
        bar_keys: progress-bar label -> row key shown per epoch (``{"GF": "val_GF_loss"}``).
    """

    train_epoch: Callable[[int], dict[str, float]]
    evaluate: Callable[[str], dict[str, float]]
    model_state: Callable[[], dict[str, Any]]
    load_model_state: Callable[[dict[str, Any]], None]
    train_state: Callable[[], dict[str, Any]] = dict
    load_train_state: Callable[[dict[str, Any]], None] = lambda state: None
    row_extra: Callable[[], dict[str, Any]] = dict
    describe: Callable[[str, dict[str, float]], str] = lambda part, metrics: ""
    result_extra: Callable[[], dict[str, Any]] = dict
    bar_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class LoopSettings:
    """How :func:`fit_fold` runs and what it writes.

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


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# ----------------------------------------------------------------------------- the fold loop

def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def fit_fold(fold: int, setup: FoldSetup, log: Any, run: LoopSettings, dist: Optional[DistInfo] = None,
             resume: Optional[dict[str, Any]] = None, done: Optional[list[dict[str, Any]]] = None
             ) -> Optional[FoldResult]:
    """Train one fold with early stopping on the validation loss, then test the best weights.

    Args:
        fold: the fold number.
        setup: the trainer's callables for this fold (fresh model and optimizer).
        log: a ``utils.run_log.RunLogger`` (or any object with ``info``, ``log_metrics``,
            ``checkpoint_path``; ranks other than 0 pass a quiet one).
        run: epochs, early stopping, checkpoint kind/config, ``last.pth`` on or off.
        dist: the DDP position (default: one process).
        resume: a loaded ``last.pth`` of this fold: training continues after its epoch.
        done: results of finished folds (stored in ``last.pth``); this fold's is appended.
    Returns:
        the fold's result, or None when the process left early (``stop_after_epochs``).

    metrics.csv gets one row per epoch, ``{fold, epoch, train_loss, val_loss, <train
    columns>, val_<term>..., <row_extra>, best_val, seconds}``; epoch 0 is the untrained
    model's validation (the curve starts at chance). Without validation data the
    training loss selects the best epoch (a warning says so).
    """
    dist = dist or DistInfo()
    done = done if done is not None else []
    start = time.time()
    stopper = EarlyStopping(patience=run.patience, min_delta=run.min_delta)
    best_path = log.checkpoint_path(f"fold_{fold}.pth")
    best_state: Optional[dict[str, Any]] = None
    first_epoch = 1

    if resume is not None:
        state = resume["state"]
        setup.load_model_state(state)
        setup.load_train_state(state["training"])
        stopper.load_state_dict(state["early_stopping"])
        rng = state.get("rng") or []
        if dist.rank < len(rng) and rng[dist.rank]:
            set_rng_state(rng[dist.rank])
        has_val = bool(resume.get("has_val", True))
        first_epoch = int(resume["epoch"]) + 1
        if resume.get("best_checkpoint"):  # rank 0 reads it and sends it: other ranks may not see its disk
            best_path = Path(resume["best_checkpoint"])
            found = dist.is_main and best_path.is_file()
            best_state = broadcast_object(load_checkpoint(best_path, expect_kind=run.kind)["state"]
                                          if found else None, dist)
        log.info(f"fold {fold}: resumed after epoch {resume['epoch']} (best val loss {stopper.best:.4f})")
    else:
        val0 = setup.evaluate("val")
        has_val = math.isfinite(val0["loss"])
        if not has_val:
            log.info(f"WARNING: fold {fold} has no validation loss (empty validation set?): "
                     "the training loss selects the best epoch instead")
        log.log_metrics({"fold": fold, "epoch": 0, "train_loss": "", "val_loss": val0["loss"],
                         **_val_columns(val0), **setup.row_extra()})
        text = setup.describe("val", val0)
        log.info(f"fold {fold}: untrained val loss {val0['loss']:.4f}" + (f" = {text}" if text else ""))

    epoch, epochs_here = first_epoch - 1, 0
    last_epoch = first_epoch - 1 if stopper.should_stop else run.epochs  # resumed after an early stop: none
    bar = progress(range(first_epoch, last_epoch + 1), desc=f"fold {fold}", unit="epoch", leave=False,
                   initial=first_epoch - 1, total=run.epochs)
    for epoch in bar:
        t0 = time.time()
        train = setup.train_epoch(epoch)
        val = setup.evaluate("val")
        if stopper.step(val["loss"] if has_val else train["train_loss"]):
            best_state = copy.deepcopy(setup.model_state())
            if dist.is_main:
                save_checkpoint(best_path, run.kind, run.config, best_state, fold=fold, epoch=epoch,
                                val_loss=val["loss"], val_metrics=_plain_metrics(val),
                                early_stopping=stopper.state_dict(), **run.checkpoint_extra)
        if run.save_last:
            _save_last(log, run, setup, stopper, dist, fold, epoch, has_val, done,
                       best_path if best_state is not None else None)
        row = {"fold": fold, "epoch": epoch, "train_loss": train["train_loss"], "val_loss": val["loss"],
               **{k: v for k, v in train.items() if k != "train_loss"}, **_val_columns(val), **setup.row_extra(),
               "best_val": stopper.best, "seconds": round(time.time() - t0, 3)}
        log.log_metrics(row)
        terms = {label: row[key] for label, key in setup.bar_keys.items() if key in row}
        bar.set_postfix(train=_fmt(train["train_loss"]), val=_fmt(val["loss"]), **{k: _fmt(v) for k, v in terms.items()})
        interactive_bar = not bar.disable
        log.info(f"fold {fold} epoch {epoch}/{run.epochs}: train {train['train_loss']:.4f}, val {val['loss']:.4f} "
                 f"(best {stopper.best:.4f} at epoch {stopper.best_epoch + 1})"
                 + "".join(f", {k} {_fmt(v)}" for k, v in terms.items()) + f"; {row['seconds']:.1f} s",
                 console=not interactive_bar)
        epochs_here += 1
        if stopper.should_stop:
            log.info(f"fold {fold}: early stop after epoch {epoch} (no improvement of the validation loss "
                     f"for {run.patience} epochs)")
            break
        if run.stop_after_epochs and epochs_here >= run.stop_after_epochs and epoch < run.epochs:
            bar.close()
            log.info(f"fold {fold}: leaving after epoch {epoch} (--stop_after_epochs); continue with --resume")
            return None
    bar.close()

    if best_state is not None:
        setup.load_model_state(best_state)
    test = setup.evaluate("test")
    best_val = stopper.best if has_val and math.isfinite(stopper.best) else float("nan")
    result = FoldResult(fold, best_val, stopper.best_epoch + 1, test["loss"], epoch, round(time.time() - start, 2),
                        str(best_path) if best_state is not None else None, _plain_metrics(test), setup.result_extra())
    text = setup.describe("test", test)
    log.info(f"fold {fold}: best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, "
             f"test loss {test['loss']:.4f}" + (f" = {text}" if text else "") + f"; {result.seconds:.1f} s")
    done.append(asdict(result))
    return result


def _val_columns(metrics: dict[str, float]) -> dict[str, float]:
    """``val_<key>`` for every named term except the total and the chance levels."""
    return {f"val_{k}": v for k, v in metrics.items() if k != "loss" and not k.startswith("chance")}


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _save_last(log: Any, run: LoopSettings, setup: FoldSetup, stopper: EarlyStopping, dist: DistInfo, fold: int,
               epoch: int, has_val: bool, done: list[dict[str, Any]], best_path: Optional[Path]) -> None:
    """Write ``last.pth``: the model, the training state, early stopping and every rank's RNG
    states (gathered on rank 0; all ranks must call this)."""
    rngs = gather_objects(rng_state(), dist)
    if not dist.is_main:
        return
    state = {**setup.model_state(), "training": setup.train_state(), "early_stopping": stopper.state_dict(),
             "rng": rngs}
    save_checkpoint(log.checkpoint_path(LAST_NAME), run.kind, run.config, state, fold=fold, epoch=epoch,
                    has_val=has_val, done=done, best_checkpoint=str(best_path) if best_path else None,
                    complete=False)


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


def raw_dxf_hint(data_dir: str | Path) -> Optional[str]:
    """An error message when ``data_dir`` holds raw DXF drawings instead of preprocessing
    output (no ``GF/``/``DeepDXF/`` folders): the command to preprocess them into a
    separate folder. None when the folder does not look like that."""
    root = Path(data_dir)
    if not root.is_dir() or (root / "GF").is_dir() or (root / "DeepDXF").is_dir():
        return None
    if not any(p.suffix.lower() == ".dxf" for p in root.rglob("*") if p.is_file()):
        return None
    name = root.resolve().name or "drawings"
    out = root.resolve().parent / f"{name}_processed"
    return (f"{root} holds DXF drawings, not preprocessed data. Preprocess them first into another folder:\n"
            f"    python dataset/dxf_process.py --input {_quote(root)} --output {_quote(out)}\n"
            f"then train with --data_dir {_quote(out)}")


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


__all__ = ["FoldResult", "FoldSetup", "LoopSettings", "fit_fold", "summarize_folds", "finish_run", "mean_std",
           "rng_state", "set_rng_state", "raw_dxf_hint", "LAST_NAME", "exit_code_on_ctrl_c"]
