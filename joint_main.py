"""Train the GF and DeepDXF models jointly (SPEC §6): python joint_main.py [--flags]

    python joint_main.py                                   # sample corpus in data/, SPEC defaults
    python joint_main.py --data_dir data/real --fold 0 --epochs 10 --weighting dwa --cross_weight 0.5
    torchrun --nproc_per_node=4 joint_main.py --device cuda --amp   # DistributedDataParallel
    python joint_main.py --resume --run_name NAME           # continue an interrupted run

Reads the drawings that have both encodings (``<data_dir>/GF/*.npz`` and
``<data_dir>/DeepDXF/*.h5``), holds out 20 % (by group) as the test set and runs
k-fold cross validation on the rest. Per fold: one optimizer over both models (and
the cross-model heads and loss weights), the dynamically weighted combined loss,
early stopping on the combined validation loss, the best checkpoint (kind
``joint``), the test losses of that checkpoint. Writes ``logs/<run_name>/``
(config, split, train.log, metrics.csv with every loss term and weight,
loss_curve.png, summary.json with the chance levels) and ``checkpoints/<run_name>/``
(``fold_<i>.pth``, ``last.pth`` for ``--resume``, ``best_model.pth`` = the best
fold's, also copied to ``checkpoints/best_model.pth``).

Under ``torchrun`` every rank trains on its share of the batches; gradients are
averaged by DDP (the loss weights by hand), metrics are reduced over ranks, so every
rank takes the same early-stopping decision; rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from config.cli import config_to_dict, parse_config  # noqa: E402
from config.joint_config import JointConfig  # noqa: E402
from model.GF_dataset import GFDataError  # noqa: E402
from model.joint_dataset import JointDataError, JointDataLoader  # noqa: E402
from joint_train import (  # noqa: E402
    DistInfo, TrainState, build_joint, cleanup_distributed, evaluate, joint_state, load_joint_state,
    make_optimizer, make_scaler, make_scheduler, setup_distributed, train_epoch,
)
from utils.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from utils.joint_early_stopping import EarlyStopping  # noqa: E402
from utils.run_log import RunLogger  # noqa: E402
from utils.seed import seed_everything  # noqa: E402
from utils.splits import Split, make_split  # noqa: E402
from utils.train_loop import FoldResult, summarize_folds  # noqa: E402

LAST_NAME = "last.pth"


class _QuietLog:
    """The logger of ranks other than 0: prints nothing, writes nothing."""

    def info(self, msg: str) -> None:
        pass

    warning = info

    def log_metrics(self, row: dict[str, Any]) -> None:
        pass

    def checkpoint_path(self, name: str) -> Path:
        return Path(".") / name


def _latest_run(checkpoints_dir: str) -> Optional[str]:
    """The run of the newest ``checkpoints/<run>/last.pth``."""
    found = sorted(Path(checkpoints_dir).glob(f"*/{LAST_NAME}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.name if found else None


def _broadcast(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _row(fold: int, epoch: int, train: dict[str, float], val: dict[str, float], weights: dict[str, float],
         stopper: EarlyStopping, seconds: float, cross: bool = True) -> dict[str, Any]:
    """One metrics.csv row: fold, epoch, train_loss, val_loss, each term (the cross term only when on),
    each weight, lr, throughput."""
    row: dict[str, Any] = {"fold": fold, "epoch": epoch, "train_loss": train.get("train_loss", ""),
                           "val_loss": val["loss"]}
    row.update({k: v for k, v in train.items() if k.startswith("train_") and k != "train_loss"})
    row.update({"val_GF_loss": val["GF"], "val_DeepDXF_loss": val["DeepDXF"], "val_cross_loss": val["cross"]})
    row.update(weights)
    for k in ("objective", "lr", "lr_GF", "grad_norm_GF", "grad_norm_DeepDXF", "drawings_per_s", "skipped_steps"):
        if k in train:
            row[k] = train[k]
    row.update({"best_val": stopper.best, "seconds": round(seconds, 3)})
    if not cross:
        row = {k: v for k, v in row.items() if "cross" not in k}
    return row


def run_fold(fold: int, cfg: JointConfig, data: JointDataLoader, log: Any, info: DistInfo,
             resume: Optional[dict[str, Any]], done: list[dict[str, Any]]) -> Optional[FoldResult]:
    """Train one fold with early stopping on the combined validation loss; test its best model.

    Returns None when the process leaves early (``--stop_after_epochs``).
    """
    start = time.time()
    device = info.device
    train_loader, val_loader = data.get_fold_loaders(fold)
    torch.manual_seed(cfg.seed + fold)
    objective, weighting = build_joint(cfg, train_loader.deepdxf_batch_size)
    objective.to(device)
    weighting.to(device)
    model: torch.nn.Module = objective
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(objective, weighting, cfg)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulation_steps)
    st = TrainState(objective, model, weighting, optimizer, make_scheduler(optimizer, cfg, steps_per_epoch),
                    make_scaler(cfg, device))
    stopper = EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta)
    ckpt_path = log.checkpoint_path(f"fold_{fold}.pth")
    best_state: Optional[dict[str, Any]] = None
    first_epoch = 1
    val0_finite = len(val_loader) > 0

    if resume is not None and resume["fold"] == fold:
        s = resume["state"]
        load_joint_state(objective, weighting, s)
        optimizer.load_state_dict(s["optimizer"])
        st.scheduler.load_state_dict(s["scheduler"])
        st.scaler.load_state_dict(s["scaler"])
        stopper.load_state_dict(s["early_stopping"])
        st.step, st.skipped_steps = resume["step"], resume["skipped_steps"]
        torch.set_rng_state(s["rng_cpu"])
        first_epoch = resume["epoch"] + 1
        best_path = Path(resume["best_checkpoint"]) if resume.get("best_checkpoint") else None
        if best_path is not None and best_path.is_file():
            ckpt_path = best_path
            best_state = load_checkpoint(best_path, expect_kind="joint")["state"]
        log.info(f"fold {fold}: resumed after epoch {resume['epoch']} (best combined val loss {stopper.best:.4f})")
    else:
        log.info(f"fold {fold}: {len(train_loader.indices)} train / {len(val_loader.indices)} val drawings; "
                 f"{train_loader.n_batches} joint batch(es) per epoch ({len(train_loader)} on this rank), "
                 f"GF {cfg.GF_batch_size} pairs max, DeepDXF batch int({len(train_loader.indices)} / "
                 f"{train_loader.n_batches}) = {train_loader.deepdxf_batch_size}; weighting {cfg.weighting}, "
                 f"cross-model term {'weight ' + str(cfg.cross_weight) if cfg.cross_weight > 0 else 'off'}")
        val0 = evaluate(objective, weighting, val_loader, cfg, info)
        row0 = {"fold": fold, "epoch": 0, "train_loss": "", "val_loss": val0["loss"], "val_GF_loss": val0["GF"],
                "val_DeepDXF_loss": val0["DeepDXF"], "val_cross_loss": val0["cross"], **weighting.log_values()}
        log.log_metrics({k: v for k, v in row0.items() if cfg.cross_weight > 0 or "cross" not in k})
        log.info(f"fold {fold}: untrained val losses GF {val0['GF']:.4f} (chance {val0['chance_GF']:.4f}), "
                 f"DeepDXF {val0['DeepDXF']:.4f} (chance {val0['chance_DeepDXF']:.4f}), "
                 f"cross {val0['cross']:.4f} (chance {val0['chance_cross']:.4f})")

    epochs_here = 0
    epoch = first_epoch - 1
    for epoch in range(first_epoch, cfg.epochs + 1):
        if stopper.should_stop:
            break
        t0 = time.time()
        train_loader.set_epoch(epoch)
        train = train_epoch(st, train_loader, cfg, info)
        weighting.end_epoch(torch.tensor([train["train_GF_loss"], train["train_DeepDXF_loss"]]))
        val = evaluate(objective, weighting, val_loader, cfg, info)
        improved = stopper.step(val["loss"] if val0_finite else train["train_loss"])
        if improved:
            best_state = copy.deepcopy(joint_state(objective, weighting))
            if info.is_main:
                save_checkpoint(ckpt_path, "joint", config_to_dict(cfg), best_state, fold=fold, epoch=epoch,
                                val_loss=val["loss"], val_terms={k: val[k] for k in ("GF", "DeepDXF", "cross")},
                                deepdxf_batch_size=train_loader.deepdxf_batch_size,
                                early_stopping=stopper.state_dict())
        if info.is_main:
            state = {**joint_state(objective, weighting), "optimizer": optimizer.state_dict(),
                     "scheduler": st.scheduler.state_dict(), "scaler": st.scaler.state_dict(),
                     "early_stopping": stopper.state_dict(), "rng_cpu": torch.get_rng_state()}
            save_checkpoint(log.checkpoint_path(LAST_NAME), "joint", config_to_dict(cfg), state, fold=fold,
                            epoch=epoch, step=st.step, skipped_steps=st.skipped_steps, done=done,
                            best_checkpoint=str(ckpt_path) if best_state is not None else None, complete=False)
        log.log_metrics(_row(fold, epoch, train, val, weighting.log_values(), stopper, time.time() - t0,
                             cross=cfg.cross_weight > 0))
        if train["skipped_steps"]:
            log.info(f"fold {fold} epoch {epoch}: skipped {train['skipped_steps']} step(s) with NaN/inf loss or gradients")
        epochs_here += 1
        if stopper.should_stop:
            log.info(f"fold {fold}: early stop after epoch {epoch} (no improvement of the combined "
                     f"validation loss for {cfg.patience} epochs)")
            break
        if cfg.stop_after_epochs and epochs_here >= cfg.stop_after_epochs:
            log.info(f"fold {fold}: leaving after epoch {epoch} (--stop_after_epochs); continue with --resume")
            return None

    if best_state is not None:
        load_joint_state(objective, weighting, best_state)
    test = evaluate(objective, weighting, data.get_test_loaders(), cfg, info)
    best_val = stopper.best if val0_finite and math.isfinite(stopper.best) else float("nan")
    result = FoldResult(fold, best_val, stopper.best_epoch + 1, test["loss"], epoch, round(time.time() - start, 2),
                        str(ckpt_path) if best_state is not None else None)
    log.info(f"fold {fold}: best combined val loss {best_val:.4f} at epoch {result.best_epoch}; test loss "
             f"{test['loss']:.4f} (GF {test['GF']:.4f}, DeepDXF {test['DeepDXF']:.4f}, cross {test['cross']:.4f}); "
             f"{st.skipped_steps} skipped step(s); {result.seconds:.1f} s")
    result_dict = {**result.__dict__, "test_terms": test, "skipped_steps": st.skipped_steps}
    done.append(result_dict)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    """Run the joint training; returns the summary (every rank), or an exit code on bad input."""
    cfg = parse_config(JointConfig, argv, description=__doc__.split("\n")[0])
    info = setup_distributed(cfg)
    try:
        return _main(cfg, info)
    finally:
        cleanup_distributed(info)


def _main(cfg: JointConfig, info: DistInfo) -> dict[str, Any] | int:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    resume: Optional[dict[str, Any]] = None
    split: Optional[Split] = None
    if cfg.resume:
        run = cfg.run_name or _latest_run(cfg.checkpoints_dir)
        last = Path(cfg.checkpoints_dir) / str(run) / LAST_NAME
        if run is None or not last.is_file():
            print(f"error: --resume: no {LAST_NAME} under {cfg.checkpoints_dir}/{run or '*'}", file=sys.stderr)
            return 2
        resume = load_checkpoint(last, expect_kind="joint")
        cfg.run_name = run
        split_path = Path(cfg.logs_dir) / run / "split.json"
        split = Split.load(split_path) if split_path.is_file() else None
        if resume.get("complete"):
            print(f"run {run} is complete: nothing to resume", file=sys.stderr)
            return 0
    try:
        data = JointDataLoader(cfg, info.rank, info.world_size, split=split, make_split=make_split)
    except (GFDataError, FileNotFoundError, JointDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if info.is_main:
        log: Any = RunLogger(cfg.run_name or None, cfg, logs_root=cfg.logs_dir, checkpoints_root=cfg.checkpoints_dir,
                             use_wandb=cfg.wandb, prefix="joint")
        log.save_split(data.split)
        run_name = log.run_name
    else:
        log, run_name = None, None
    run_name = _broadcast(run_name, info)
    if not info.is_main:
        log = _QuietLog()
        log.checkpoint_path = lambda name: Path(cfg.checkpoints_dir) / run_name / name  # type: ignore[method-assign]
    cfg.run_name = run_name

    folds = list(range(data.split.n_folds)) if cfg.fold is None else [cfg.fold]
    if any(not 0 <= f < data.split.n_folds for f in folds):
        log.info(f"error: --fold {cfg.fold} is not one of the split's {data.split.n_folds} folds")
        return 2
    log.info(f"joint: {data.describe()} from {cfg.data_dir}; fold(s) {folds}; device {info.device}"
             + (f", {info.world_size} processes (DDP)" if info.enabled else "")
             + f"; accumulation {cfg.accumulation_steps}; amp {cfg.amp}")

    done: list[dict[str, Any]] = list(resume.get("done", [])) if resume else []
    finished = {d["fold"] for d in done}
    results = [FoldResult(**{k: d[k] for k in FoldResult.__dataclass_fields__}) for d in done]
    for fold in folds:
        if fold in finished:
            continue
        fold_resume = resume if resume is not None and resume["fold"] == fold else None
        r = run_fold(fold, cfg, data, log, info, fold_resume, done)
        if r is None:  # left early on purpose
            return {"interrupted": True, "run_name": run_name}
        results.append(r)

    summary = summarize_folds(results)
    summary.update({
        "test_terms_per_fold": {str(d["fold"]): d["test_terms"] for d in done},
        "chance_level": {k: v for d in done[-1:] for k, v in d["test_terms"].items() if k.startswith("chance")},
        "chance_formula": "GF: mean ln(2n-1) over graphs (n real nodes); DeepDXF: ln(2B-1); cross: ln(B); B = drawings per batch",
        "skipped_steps": sum(d.get("skipped_steps", 0) for d in done),
        "weighting": cfg.weighting, "cross_weight": cfg.cross_weight,
        "n_drawings": len(data.names), "n_test": len(data.split.test), "data_dir": cfg.data_dir,
        "world_size": info.world_size, "run_name": run_name,
    })
    if info.is_main:
        log.write_summary(summary)
        log.info(f"joint over {len(results)} fold(s): best combined val loss {summary['val_loss_mean']:.4f} ± "
                 f"{summary['val_loss_std']:.4f}, test {summary['test_loss_mean']:.4f} ± {summary['test_loss_std']:.4f}")
        if summary["best_checkpoint"]:
            log.publish_best(summary["best_checkpoint"])
        last = log.checkpoint_path(LAST_NAME)
        if last.is_file():
            ckpt = load_checkpoint(last, expect_kind="joint")
            save_checkpoint(last, "joint", ckpt["config"], ckpt["state"],
                            **{k: v for k, v in ckpt.items() if k not in ("format_version", "toolkit", "kind", "config", "state", "complete")},
                            complete=True)
        log.finish()
    return summary


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
