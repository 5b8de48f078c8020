"""Train the DeepDXF model alone: python DeepDXF_train.py [--flags]

Self-supervised: two views of each drawing (dropout + sequence augmentations),
NT-Xent over the batch. Grouped 20 % test split, k-fold cross validation of the
rest, early stopping on the validation loss, logs under ``logs/<run_name>/`` and
checkpoints (kind ``DeepDXF``) under ``checkpoints/<run_name>/``. Validation uses
the same kind of views as training, seeded identically every epoch, so its loss is
comparable across epochs; the summary gives its chance level ln(2N - 1).
The fold's loop is :func:`train_fold` here; its early stopping, checkpoints and
metrics rows are ``utils/train/loop.py``'s, the same for every trainer.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from config.DeepDXF_config import DeepDXFConfig
from config.cli import config_to_dict, parse_config
from dataset.archive import ArchiveError
from dataset.loaders.deepdxf import ArchiveRows, load_deepdxf_dir, make_loader
from dataset.loaders.views import VAL_SEED
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import DeepDXFModel, build_deepdxf_model, deepdxf_step_loss
from utils.train.amp import amp_dtype, autocast, make_grad_scaler
from utils.train.loop import (
    FoldResult, FoldTracker, LoopSettings, Run, RunError, exit_code_on_ctrl_c, finish_run, start_run,
)
from utils.train.run_log import progress
from utils.train.schedule import make_lr_scheduler, plan_schedule
from utils.train.seed import seed_everything


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(DeepDXFConfig, argv, description=__doc__.split("\n")[0])
    try:
        names, rows = load_deepdxf_dir(cfg.data_dir, lazy=True)  # read batch by batch: memory flat
        run = start_run(cfg, names, "DeepDXF")
    except (ArchiveError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dtype = amp_dtype(cfg.amp, "auto", run.device)  # --amp: bf16 where native, else fp16 + GradScaler
    chance = nt_xent_chance(cfg.DeepDXF_batch_size)
    run.log.info(f"DeepDXF: {len(names)} drawings from the {rows.describe()} (entities: median "
                 f"{int(np.median(rows.lengths))}, max {int(rows.lengths.max())}); test {len(run.split.test)}, "
                 f"{run.split.n_folds} folds; running fold(s) {run.folds} on {run.device}, "
                 f"{'autocast ' + str(dtype).replace('torch.', '') if dtype else 'fp32'}; "
                 f"chance level of the loss ln(2N-1) = {chance:.4f} for N = {cfg.DeepDXF_batch_size}")
    test_loader = _eval_loader(rows, run.split.test, cfg)
    settings = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "DeepDXF", config_to_dict(cfg),
                            checkpoint_extra={"chance_level": chance})
    val_chance: dict[str, float] = {}
    results = [train_fold(cfg, run, rows, fold, settings, test_loader, val_chance) for fold in run.folds]
    finish_run(run.log, results, {
        "chance_level": {"nt_xent": chance, "formula": "ln(2N - 1), N = drawings per batch",
                         "nt_xent_val_batches_per_fold": val_chance,
                         "nt_xent_test_batches": evaluate_chance(test_loader)},
        "n_drawings": len(names),
        "n_test": len(run.split.test),
        "data_dir": cfg.data_dir,
    }, f"DeepDXF over {len(results)} fold(s): best val loss {{val_loss_mean:.4f}}, "
       f"test loss {{test_loss_mean:.4f}} (chance {chance:.4f})")
    return 0


def _eval_loader(rows: ArchiveRows, indices: Sequence[int], cfg: DeepDXFConfig) -> Optional[DataLoader]:
    """A validation or test loader (fixed batches; views of :data:`VAL_SEED`), None below 2 drawings."""
    return make_loader(rows.subset(indices), cfg, train=False, seed=VAL_SEED) if len(indices) >= 2 else None


def train_fold(cfg: DeepDXFConfig, run: Run, rows: ArchiveRows, fold: int, settings: LoopSettings,
               test_loader: Optional[DataLoader], val_chance: dict[str, float]) -> FoldResult:
    """Train one fold (AdamW, warm-up + cosine, mixed precision by ``--amp``) with early stopping
    on the validation loss, then test the best weights; ``val_chance[fold]`` gets the chance
    level of its validation batches."""
    train_idx, val_idx = run.split.folds[fold]
    device, dtype = run.device, amp_dtype(cfg.amp, "auto", run.device)
    seed_everything(cfg.seed + fold)  # initialisation, dropout, DataLoader workers
    train_loader = make_loader(rows.subset(train_idx), cfg, train=True, seed=cfg.seed + 1000 * fold)
    val_loader = _eval_loader(rows, val_idx, cfg)
    steps = len(train_loader) if cfg.max_steps_per_epoch <= 0 else min(len(train_loader), cfg.max_steps_per_epoch)
    model = build_deepdxf_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = plan_schedule(steps, cfg.epochs, cfg.warmup_steps)
    sched = make_lr_scheduler(opt, plan)
    scaler = make_grad_scaler(device, dtype)
    val_chance[str(fold)] = evaluate_chance(val_loader)
    run.log.set_chance_levels({"val_loss": val_chance[str(fold)]})
    run.log.info(f"fold {fold}: {len(train_idx)} train / {len(val_idx)} val drawings, batches of up to "
                 f"{cfg.DeepDXF_batch_size} drawings; {plan.describe()}; chance level of its validation "
                 f"batches {val_chance[str(fold)]:.4f}")
    if plan.warning():
        run.log.warning(plan.warning())
    run.log.record_config({"warmup_steps": plan.warmup_steps})

    tracker = FoldTracker(fold, run.log, settings)
    tracker.start(evaluate(model, val_loader, cfg, device, dtype))
    for epoch in tracker.epochs():
        train_loader.batch_sampler.set_epoch(epoch)
        train = train_one_epoch(model, opt, train_loader, sched, scaler, cfg, device, steps, dtype)
        val = evaluate(model, val_loader, cfg, device, dtype)
        if tracker.end_epoch(epoch, train, val, {"model": model.state_dict()}):
            break
    if tracker.best_state is not None:
        model.load_state_dict(tracker.best_state["model"])
    return tracker.finish(evaluate(model, test_loader, cfg, device, dtype))


def train_one_epoch(model: DeepDXFModel, opt: torch.optim.Optimizer, loader: DataLoader, sched, scaler,
                    cfg: DeepDXFConfig, device: torch.device, max_steps: int,
                    dtype: torch.dtype | None = None) -> dict[str, float]:
    """One pass over ``loader`` (at most ``max_steps`` batches): autocast, unscale, clip, step, LR schedule.
    Returns the metrics row part ``{train_loss, lr, entities_per_s}``."""
    model.train()
    t0, total, drawings, entities = time.time(), 0.0, 0, 0
    for step, batch in enumerate(progress(loader, total=max_steps, leave=False, desc="batches")):
        if step >= max_steps:
            break
        batch = batch.to(device)
        with autocast(device, dtype):
            loss = deepdxf_step_loss(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        total += float(loss.detach()) * batch.n_drawings
        drawings += batch.n_drawings
        entities += batch.n_entities
    return {"train_loss": total / max(drawings, 1), "lr": sched.get_last_lr()[0],
            "entities_per_s": round(entities / max(time.time() - t0, 1e-9), 1)}


def evaluate_chance(loader: Optional[DataLoader]) -> float:
    """Drawing-weighted chance level ln(2N - 1) of a loader's actual batch sizes (NaN if none)."""
    if loader is None:
        return float("nan")
    sizes = [len(b) for b in loader.batch_sampler.batches()]
    return sum(nt_xent_chance(n) * n for n in sizes) / max(sum(sizes), 1)


@torch.no_grad()
def evaluate(model: DeepDXFModel, loader: Optional[DataLoader], cfg: DeepDXFConfig, device: torch.device,
             dtype: torch.dtype | None = None) -> dict[str, float]:
    """``{"loss": mean NT-Xent}`` over a loader with the views of :data:`VAL_SEED` and seeded
    dropout (model in train mode: dropout is part of the views), weighted by batch size;
    NaN without a loader."""
    if loader is None:
        return {"loss": float("nan")}
    loader.collate_fn.reset(VAL_SEED)
    was_training = model.training
    model.train()
    total = weight = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(VAL_SEED)
        for batch in loader:
            batch = batch.to(device)
            with autocast(device, dtype):
                loss = deepdxf_step_loss(model, batch, cfg)
            total += float(loss) * batch.n_drawings
            weight += batch.n_drawings
    model.train(was_training)
    return {"loss": total / max(weight, 1)}


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python DeepDXF_train.py``, its console script): :func:`main`, and after Ctrl-C one
    line instead of a traceback (exit 130)."""
    return exit_code_on_ctrl_c(main, argv, "DeepDXF_train.py")


if __name__ == "__main__":
    sys.exit(cli())
