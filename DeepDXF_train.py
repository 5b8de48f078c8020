"""Train the DeepDXF model alone: python DeepDXF_train.py [--flags]

Self-supervised: two views of each drawing (dropout + sequence augmentations),
NT-Xent over the batch. Grouped 20 % test split, k-fold cross validation of the
rest, early stopping on the validation loss, logs under ``logs/<run_name>/`` and
checkpoints (kind ``DeepDXF``) under ``checkpoints/<run_name>/``. Validation uses
the same kind of views as training, seeded identically every epoch, so its loss is
comparable across epochs; the summary gives its chance level ln(2N - 1).
The fold loop (early stopping, best checkpoint, test loss, summary) is
``utils/train_loop.py``'s :func:`fit_fold`, the one every trainer uses.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from config.DeepDXF_config import DeepDXFConfig
from config.cli import config_to_dict, parse_config
from dataset.pack import ArchiveError
from model.DeepDXF_dataset import load_deepdxf_dir, make_loader
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import build_deepdxf_model, deepdxf_step_loss
from model.transformer_encoder import DeepDXFModel
from utils.amp import amp_dtype, autocast, load_scaler_state, make_grad_scaler
from utils.DeepDXF_utils import VAL_VIEW_SEED, evaluate, evaluate_chance
from utils.run_log import RunLogger, progress
from utils.schedule import make_lr_scheduler, plan_schedule
from utils.seed import seed_everything
from utils.splits import make_split
from utils.train_loop import FoldSetup, LoopSettings, exit_code_on_ctrl_c, finish_run, fit_fold, raw_dxf_hint

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


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(DeepDXFConfig, argv, description=__doc__.split("\n")[0])
    seed_everything(cfg.seed)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device(cfg.device)
    dtype = amp_dtype(cfg.amp, getattr(cfg, "amp_dtype", "auto"), device)
    hint = raw_dxf_hint(cfg.data_dir)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        return 2
    try:
        names, arrays = load_deepdxf_dir(cfg.data_dir, lazy=True)  # read batch by batch: memory flat
    except (FileNotFoundError, ArchiveError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(names) < 4:
        print(f"error: {len(names)} drawing(s) in {cfg.data_dir}: at least 4 are needed for a split", file=sys.stderr)
        return 2
    split = make_split(names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    log = RunLogger(cfg.run_name or None, cfg, logs_root=cfg.logs_dir, checkpoints_root=cfg.checkpoints_dir,
                    use_wandb=cfg.wandb, prefix="DeepDXF")
    log.save_split(split)
    folds = list(range(split.n_folds)) if cfg.fold is None else [cfg.fold]
    if any(not 0 <= f < split.n_folds for f in folds):
        log.info(f"error: --fold {cfg.fold} is not one of the split's {split.n_folds} folds (0..{split.n_folds - 1})")
        return 2
    lengths = arrays.lengths
    chance = nt_xent_chance(cfg.DeepDXF_batch_size)
    log.info(f"DeepDXF: {len(names)} drawings from the {arrays.describe()} (entities: median {int(np.median(lengths))}, "
             f"max {int(lengths.max())}); test {len(split.test)}, {split.n_folds} folds; running fold(s) {folds} "
             f"on {device}, {'autocast ' + str(dtype).replace('torch.', '') if dtype else 'fp32'}; "
             f"chance level of the loss ln(2N-1) = {chance:.4f} for N = {cfg.DeepDXF_batch_size}")

    subset = arrays.subset
    test_loader = make_loader(subset(split.test), cfg, train=False, seed=VAL_VIEW_SEED) if len(split.test) >= 2 else None
    val_chance: dict[str, float] = {}
    run = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "DeepDXF", config_to_dict(cfg),
                       checkpoint_extra={"chance_level": chance})

    def fold_setup(fold: int) -> FoldSetup:
        """Model, optimizer, schedule, scaler and loaders of one fold, behind the loop's callables."""
        train_idx, val_idx = split.folds[fold]
        seed_everything(cfg.seed + fold)
        train_loader = make_loader(subset(train_idx), cfg, train=True, seed=cfg.seed + 1000 * fold)
        val_loader = make_loader(subset(val_idx), cfg, train=False, seed=VAL_VIEW_SEED) if len(val_idx) >= 2 else None
        steps = len(train_loader) if cfg.max_steps_per_epoch <= 0 else min(len(train_loader), cfg.max_steps_per_epoch)
        model = build_deepdxf_model(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        plan = plan_schedule(steps, cfg.epochs, cfg.warmup_steps)
        sched = make_lr_scheduler(opt, plan)
        scaler = make_grad_scaler(device, dtype)
        val_chance[str(fold)] = evaluate_chance(val_loader)
        log.set_chance_levels({"val_loss": val_chance[str(fold)]})
        log.info(f"fold {fold}: {len(train_idx)} train / {len(val_idx)} val drawings, batches of up to "
                 f"{cfg.DeepDXF_batch_size} drawings; {plan.describe()}; chance level of its validation "
                 f"batches {val_chance[str(fold)]:.4f}")
        if plan.warning():
            log.warning(plan.warning())
        log.record_config({"warmup_steps": plan.warmup_steps})

        def train_epoch(epoch: int) -> dict[str, float]:
            train_loader.batch_sampler.set_epoch(epoch)
            return train_one_epoch(model, opt, train_loader, sched, scaler, cfg, device, steps, dtype)

        def evaluate_part(part: str) -> dict[str, float]:
            loader = test_loader if part == "test" else val_loader
            return {"loss": evaluate(model, loader, cfg, device, dtype)[0] if loader is not None else float("nan")}

        def load_train_state(state: dict) -> None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            load_scaler_state(scaler, state.get("scaler"))

        return FoldSetup(
            train_epoch=train_epoch, evaluate=evaluate_part,
            model_state=lambda: {"model": model.state_dict()},
            load_model_state=lambda state: model.load_state_dict(state["model"]),
            train_state=lambda: {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "scaler": scaler.state_dict()},
            load_train_state=load_train_state,
        )

    results = [fit_fold(f, fold_setup(f), log, run) for f in folds]
    finish_run(log, results, {
        "chance_level": {"nt_xent": chance, "formula": "ln(2N - 1), N = drawings per batch",
                         "nt_xent_val_batches_per_fold": val_chance,
                         "nt_xent_test_batches": evaluate_chance(test_loader)},
        "n_drawings": len(names),
        "n_test": len(split.test),
        "data_dir": cfg.data_dir,
    }, f"DeepDXF over {len(results)} fold(s): best val loss {{val_loss_mean:.4f}}, "
       f"test loss {{test_loss_mean:.4f}} (chance {chance:.4f})")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python DeepDXF_train.py``, its console script): :func:`main`, and after Ctrl-C one
    line instead of a traceback (exit 130)."""
    return exit_code_on_ctrl_c(main, argv, "DeepDXF_train.py")


if __name__ == "__main__":
    sys.exit(cli())
