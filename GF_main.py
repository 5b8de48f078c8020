"""Train the GF model: CGMN-style contrastive graph matching of 10-node class graphs.

    python GF_main.py                                  # sample corpus in data/, default settings
    python GF_main.py --data_dir data/real --fold 0 --epochs 30 --run_name gf_real

Reads ``<data_dir>/GF/*.npz`` (written by ``python dataset/dxf_process.py``), holds
out 20 % of the drawings (by group) as the test set, and runs k-fold cross
validation on the rest: per fold, training with early stopping on the validation
loss, the best checkpoint kept, the test loss of that checkpoint. Writes
``logs/<run_name>/`` (config, split, train.log, metrics.csv, loss_curve.png,
summary.json with the chance level of the loss) and ``checkpoints/<run_name>/``
(``fold_<i>.pth`` and ``best_model.pth``, the best fold's, also copied to
``checkpoints/best_model.pth``). The fold loop is ``utils/train_loop.py``'s
:func:`fit_fold`, the one every trainer uses.
"""
from __future__ import annotations

import sys
from typing import Sequence

import torch

from config.cli import config_to_dict, parse_config
from config.GF_config import GFConfig
from model.GF_dataset import GFDataError, GFPairLoader, load_gf_graphs
from model.GF_model import build_gf_model, gf_step_loss
from utils.GF_utils import evaluate_loss, gf_chance_level
from utils.run_log import RunLogger, progress
from utils.schedule import plan_schedule
from utils.seed import seed_everything
from utils.splits import make_split
from utils.train_loop import FoldSetup, LoopSettings, exit_code_on_ctrl_c, finish_run, fit_fold, raw_dxf_hint


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(GFConfig, argv, description="Train the GF graph model (contrastive graph matching).")
    seed_everything(cfg.seed)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    hint = raw_dxf_hint(cfg.data_dir)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        return 2
    try:
        graphs = load_gf_graphs(cfg.data_dir, layout=cfg.GF_layout_features)
    except GFDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(graphs) < 4:
        print(f"error: {len(graphs)} drawing(s) in the {graphs.source}: at least 4 are needed for a split", file=sys.stderr)
        return 2

    split = make_split(graphs.names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    log = RunLogger(cfg.run_name or None, cfg, logs_root=cfg.logs_dir, checkpoints_root=cfg.checkpoints_dir,
                    use_wandb=cfg.wandb, prefix="GF")
    log.save_split(split)
    device = torch.device(cfg.device)
    graphs = graphs.to(device)
    folds = list(range(split.n_folds)) if cfg.fold is None else [cfg.fold]
    if any(not 0 <= f < split.n_folds for f in folds):
        log.info(f"error: --fold {cfg.fold} is not one of the split's {split.n_folds} folds (0..{split.n_folds - 1})")
        return 2
    chance = gf_chance_level(graphs.mask)
    log.set_chance_levels({"val_loss": chance})
    log.info(f"GF: {len(graphs)} drawings from the {graphs.source}; test {len(split.test)}, "
             f"{split.n_folds} folds; running fold(s) {folds} on {device}; "
             f"chance level of the loss ln(2n-1) = {chance:.4f}")
    test_loader = GFPairLoader(graphs.subset(split.test), cfg.GF_batch_size, shuffle=False, seed=cfg.seed)
    run = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "GF", config_to_dict(cfg),
                       checkpoint_extra={"chance_level": chance})

    def fold_setup(fold: int) -> FoldSetup:
        """Model, optimizer, schedule and loaders of one fold, behind the loop's callables."""
        train_idx, val_idx = split.folds[fold]
        loaders = {
            "train": GFPairLoader(graphs.subset(train_idx), cfg.GF_batch_size, shuffle=True, seed=cfg.seed + fold),
            "val": GFPairLoader(graphs.subset(val_idx), cfg.GF_batch_size, shuffle=False, seed=cfg.seed),
            "test": test_loader,
        }
        views = torch.Generator(device=device).manual_seed(cfg.seed + 1000 + fold)
        torch.manual_seed(cfg.seed + fold)
        model = build_gf_model(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        plan = plan_schedule(len(loaders["train"]), cfg.epochs, 0)
        log.info(f"fold {fold}: {len(train_idx)} train / {len(val_idx)} val drawings, batches of up to "
                 f"{cfg.GF_batch_size} pairs; {plan.steps_per_epoch} optimizer step(s) per epoch, "
                 f"{plan.total_steps} in total over {cfg.epochs} epoch(s); constant learning rate {cfg.lr:g}")
        if plan.warning():
            log.warning(plan.warning())

        def train_epoch(epoch: int) -> dict[str, float]:
            loader = loaders["train"]
            loader.set_epoch(epoch)
            model.train()
            total, pairs = 0.0, 0
            for batch in progress(loader, desc="batches", leave=False):
                loss = gf_step_loss(model, batch, views)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.item() * batch[0].shape[0]
                pairs += batch[0].shape[0]
            return {"train_loss": total / max(pairs, 1), "lr": opt.param_groups[0]["lr"]}

        def evaluate(part: str) -> dict[str, float]:
            return {"loss": evaluate_loss(model, loaders[part], seed=cfg.seed)}

        return FoldSetup(
            train_epoch=train_epoch, evaluate=evaluate,
            model_state=lambda: {"model": model.state_dict()},
            load_model_state=lambda state: model.load_state_dict(state["model"]),
            train_state=lambda: {"optimizer": opt.state_dict()},
            load_train_state=lambda state: opt.load_state_dict(state["optimizer"]),
        )

    results = [fit_fold(f, fold_setup(f), log, run) for f in folds]
    finish_run(log, results, {
        "chance_level": chance,
        "chance_level_test": gf_chance_level(graphs.mask[split.test]) if split.test else float("nan"),
        "n_drawings": len(graphs),
        "n_test": len(split.test),
        "data_dir": cfg.data_dir,
    }, f"GF over {len(results)} fold(s): best val loss {{val_loss_mean:.4f}} ± {{val_loss_std:.4f}}, "
       f"test loss {{test_loss_mean:.4f}} ± {{test_loss_std:.4f}} (chance {chance:.4f})")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python GF_main.py``, its console script): :func:`main`, and after Ctrl-C one
    line instead of a traceback (exit 130)."""
    return exit_code_on_ctrl_c(main, argv, "GF_main.py")


if __name__ == "__main__":
    sys.exit(cli())
