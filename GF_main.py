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
``checkpoints/best_model.pth``). The fold's loop is :func:`train_fold` here; its
early stopping, checkpoints and metrics rows are ``utils/train/loop.py``'s, the same
for every trainer.
"""
from __future__ import annotations

import sys
from typing import Sequence

import torch

from config.cli import config_to_dict, parse_config
from config.GF_config import GFConfig
from dataset.loaders.gf import GFDataError, GFGraphs, GFPairLoader, load_gf_graphs
from dataset.loaders.views import GFViewRates
from model.GF_loss import chance_level
from model.GF_model import DenseGraphMatching, build_gf_model
from utils.train.loop import FoldResult, FoldTracker, LoopSettings, Run, RunError, exit_code_on_ctrl_c, finish_run, start_run
from utils.train.run_log import progress
from utils.train.schedule import plan_schedule


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(GFConfig, argv, description="Train the GF graph model (contrastive graph matching).")
    try:
        graphs = load_gf_graphs(cfg.data_dir, layout=cfg.GF_layout_features)
        run = start_run(cfg, graphs.names, "GF", source=f"the {graphs.source}")
    except (GFDataError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    graphs = graphs.to(run.device)
    chance = chance_level(graphs.mask)
    run.log.set_chance_levels({"val_loss": chance})
    run.log.info(f"GF: {len(graphs)} drawings from the {graphs.source}; test {len(run.split.test)}, "
                 f"{run.split.n_folds} folds; running fold(s) {run.folds} on {run.device}; "
                 f"chance level of the loss ln(2n-1) = {chance:.4f}")
    settings = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "GF", config_to_dict(cfg),
                            checkpoint_extra={"chance_level": chance})
    results = [train_fold(cfg, run, graphs, fold, settings) for fold in run.folds]
    finish_run(run.log, results, {
        "chance_level": chance,
        "chance_level_test": chance_level(graphs.mask[run.split.test]) if run.split.test else float("nan"),
        "n_drawings": len(graphs),
        "n_test": len(run.split.test),
        "data_dir": cfg.data_dir,
    }, f"GF over {len(results)} fold(s): best val loss {{val_loss_mean:.4f}} ± {{val_loss_std:.4f}}, "
       f"test loss {{test_loss_mean:.4f}} ± {{test_loss_std:.4f}} (chance {chance:.4f})")
    return 0


def train_fold(cfg: GFConfig, run: Run, graphs: GFGraphs, fold: int, settings: LoopSettings) -> FoldResult:
    """Train one fold with early stopping on the validation loss, then test the best weights.

    Training pairs are reshuffled every epoch (seed ``seed + fold``) and their views drawn
    from one stream (``seed + 1000 + fold``); validation and test pairs and views are the
    same at every pass (seed ``seed``), so their loss compares across epochs.
    """
    train_idx, val_idx = run.split.folds[fold]
    rates = GFViewRates.of(cfg)
    train_loader = GFPairLoader(graphs.subset(train_idx), cfg.GF_batch_size, rates, shuffle=True,
                                seed=cfg.seed + fold, view_seed=cfg.seed + 1000 + fold)
    val_loader, test_loader = (GFPairLoader(graphs.subset(idx), cfg.GF_batch_size, rates, shuffle=False,
                                            seed=cfg.seed, view_seed=cfg.seed) for idx in (val_idx, run.split.test))
    torch.manual_seed(cfg.seed + fold)
    model = build_gf_model(cfg).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = plan_schedule(len(train_loader), cfg.epochs, 0)
    run.log.info(f"fold {fold}: {len(train_idx)} train / {len(val_idx)} val drawings, batches of up to "
                 f"{cfg.GF_batch_size} pairs; {plan.steps_per_epoch} optimizer step(s) per epoch, "
                 f"{plan.total_steps} in total over {cfg.epochs} epoch(s); constant learning rate {cfg.lr:g}")
    if plan.warning():
        run.log.warning(plan.warning())

    tracker = FoldTracker(fold, run.log, settings)
    tracker.start(evaluate(model, val_loader))
    for epoch in tracker.epochs():
        train_loader.set_epoch(epoch)
        train = train_one_epoch(model, opt, train_loader, cfg.grad_clip)
        if tracker.end_epoch(epoch, train, evaluate(model, val_loader), {"model": model.state_dict()}):
            break
    if tracker.best_state is not None:
        model.load_state_dict(tracker.best_state["model"])
    return tracker.finish(evaluate(model, test_loader))


def train_one_epoch(model: DenseGraphMatching, opt: torch.optim.Optimizer, loader: GFPairLoader,
                    grad_clip: float) -> dict[str, float]:
    """One pass over ``loader``; returns ``{train_loss (mean over pairs), lr}``."""
    model.train()
    total, pairs = 0.0, 0
    for views in progress(loader, desc="batches", leave=False):
        loss = model.loss(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        total += loss.item() * views.n_pairs
        pairs += views.n_pairs
    return {"train_loss": total / max(pairs, 1), "lr": opt.param_groups[0]["lr"]}


@torch.no_grad()
def evaluate(model: DenseGraphMatching, loader: GFPairLoader) -> dict[str, float]:
    """``{"loss": mean loss over the pairs}`` of an evaluation loader (its views are the
    same at every pass); NaN for an empty loader."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for views in loader:
        total += float(model.loss(views)) * views.n_pairs
        count += views.n_pairs
    model.train(was_training)
    return {"loss": total / count if count else float("nan")}


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python GF_main.py``, its console script): :func:`main`, and after Ctrl-C one
    line instead of a traceback (exit 130)."""
    return exit_code_on_ctrl_c(main, argv, "GF_main.py")


if __name__ == "__main__":
    sys.exit(cli())
