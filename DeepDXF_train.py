"""Train the DeepDXF model alone (SPEC §5, §6): python DeepDXF_train.py [--flags]

Self-supervised: two views of each drawing (dropout + sequence augmentations),
NT-Xent over the batch. Grouped 20 % test split, k-fold cross validation of the
rest, early stopping on the validation loss, logs under ``logs/<run_name>/`` and
checkpoints (kind ``DeepDXF``) under ``checkpoints/<run_name>/``. Validation uses
the same kind of views as training, seeded identically every epoch, so its loss is
comparable across epochs; the summary gives its chance level ln(2N - 1).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from config.DeepDXF_config import DeepDXFConfig  # noqa: E402
from config.cli import config_to_dict, parse_config  # noqa: E402
from model.DeepDXF_dataset import load_deepdxf_dir, make_loader  # noqa: E402
from model.DeepDXF_loss import nt_xent_chance  # noqa: E402
from model.transformer_encoder import DeepDXFModel  # noqa: E402
from utils.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from utils.DeepDXF_early_stopping import EarlyStopping  # noqa: E402
from utils.DeepDXF_utils import autocast_context, build_deepdxf_model, deepdxf_step_loss  # noqa: E402
from utils.run_log import RunLogger  # noqa: E402
from utils.seed import seed_everything  # noqa: E402
from utils.splits import make_split  # noqa: E402

VAL_VIEW_SEED = 12345  # validation/test views and dropout masks: the same every epoch


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: DeepDXFModel, loader: DataLoader, cfg: DeepDXFConfig, device: torch.device) -> tuple[float, float]:
    """Mean NT-Xent over a loader with seeded views and seeded dropout (model in train mode:
    dropout is part of the views). Returns (loss, chance level), both weighted by batch size."""
    loader.collate_fn.reset(VAL_VIEW_SEED)
    was_training = model.training
    model.train()
    total = chance = weight = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(VAL_VIEW_SEED)
        for batch in loader:
            batch = batch.to(device)
            with autocast_context(device, cfg.amp):
                loss = deepdxf_step_loss(model, batch, cfg)
            n = batch.n_drawings
            total += float(loss) * n
            chance += nt_xent_chance(n) * n
            weight += n
    model.train(was_training)
    return total / max(weight, 1), chance / max(weight, 1)


def train_fold(
    cfg: DeepDXFConfig,
    arrays: Sequence[np.ndarray],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    fold: int,
    log: RunLogger,
    device: torch.device,
) -> tuple[float, Path]:
    """Train one fold with early stopping. Returns (best validation loss, its checkpoint)."""
    seed_everything(cfg.seed + fold)
    model = build_deepdxf_model(cfg).to(device)
    train_loader = make_loader([arrays[i] for i in train_idx], cfg, train=True, seed=cfg.seed + 1000 * fold)
    val_loader = make_loader([arrays[i] for i in val_idx], cfg, train=False, seed=VAL_VIEW_SEED)
    steps_per_epoch = len(train_loader) if cfg.max_steps_per_epoch <= 0 else min(len(train_loader), cfg.max_steps_per_epoch)
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, total_steps))
    use_fp16_scaler = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16_scaler)
    stopper = EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta)
    ckpt_path = log.checkpoint_path(f"fold_{fold}.pth")
    log.info(f"fold {fold}: {len(train_idx)} training / {len(val_idx)} validation drawings, "
             f"{steps_per_epoch} steps per epoch")

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        train_loader.batch_sampler.set_epoch(epoch)
        t0, losses, entities = time.time(), [], 0
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"fold {fold} epoch {epoch}", leave=False)
        for step, batch in enumerate(bar):
            if step >= steps_per_epoch:
                break
            batch = batch.to(device)
            with autocast_context(device, cfg.amp):
                loss = deepdxf_step_loss(model, batch, cfg)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss))
            entities += batch.n_entities
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_loss = float(np.mean(losses)) if losses else float("nan")
        val_loss, val_chance = evaluate(model, val_loader, cfg, device)
        improved = stopper.step(val_loss)
        seconds = time.time() - t0
        log.log_metrics({
            "fold": fold, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "val_chance": val_chance, "lr": sched.get_last_lr()[0],
            "entities_per_s": entities / max(seconds, 1e-9), "seconds": seconds,
        })
        if improved:
            save_checkpoint(ckpt_path, "DeepDXF", config_to_dict(cfg), {"model": model.state_dict()},
                            fold=fold, epoch=epoch, val_loss=val_loss)
        if stopper.should_stop:
            log.info(f"fold {fold}: early stop after epoch {epoch} (best validation loss {stopper.best:.4f})")
            break
    return float(stopper.best), ckpt_path


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse_config(DeepDXFConfig, argv, description=__doc__.split("\n")[0])
    device = torch.device(cfg.device)
    names, arrays = load_deepdxf_dir(cfg.data_dir)
    split = make_split(names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    log = RunLogger(cfg.run_name or None, config_to_dict(cfg), logs_root=cfg.logs_dir,
                    checkpoints_root=cfg.checkpoints_dir, use_wandb=cfg.wandb, prefix="DeepDXF")
    log.save_split(split)
    lengths = np.array([a.shape[0] for a in arrays])
    log.info(f"{len(names)} drawings from {cfg.data_dir} (entities: median {int(np.median(lengths))}, "
             f"max {int(lengths.max())}); {len(split.test)} held out for test, {split.n_folds} folds")
    folds = range(split.n_folds) if cfg.fold is None else [cfg.fold]
    best_val: dict[str, float] = {}
    ckpts: dict[int, Path] = {}
    for fold in folds:
        if not 0 <= fold < split.n_folds:
            raise ValueError(f"--fold {fold} is out of range: the split has {split.n_folds} folds")
        train_idx, val_idx = split.folds[fold]
        best_val[str(fold)], ckpts[fold] = train_fold(cfg, arrays, train_idx, val_idx, fold, log, device)
    best_fold = min(ckpts, key=lambda f: best_val[str(f)])
    model = build_deepdxf_model(cfg).to(device)
    model.load_state_dict(load_checkpoint(ckpts[best_fold], expect_kind="DeepDXF")["state"]["model"])
    test_loss = test_chance = float("nan")
    if len(split.test) >= 2:
        test_loader = make_loader([arrays[i] for i in split.test], cfg, train=False, seed=VAL_VIEW_SEED)
        test_loss, test_chance = evaluate(model, test_loader, cfg, device)
    log.publish_best(ckpts[best_fold])
    summary = {
        "best_val_loss": best_val,
        "best_fold": best_fold,
        "test_loss": test_loss,
        "chance_level": {"nt_xent": nt_xent_chance(cfg.DeepDXF_batch_size),
                         "nt_xent_test_batches": test_chance},
        "chance_formula": "ln(2N - 1), N = drawings per batch",
        "n_drawings": len(names),
        "n_test": len(split.test),
    }
    log.write_summary(summary)
    log.info(f"best fold {best_fold}: validation loss {best_val[str(best_fold)]:.4f}; test loss {test_loss:.4f} "
             f"(chance {nt_xent_chance(cfg.DeepDXF_batch_size):.4f})")
    log.finish()
    return summary


if __name__ == "__main__":
    main()
