"""The joint training of the GF and DeepDXF models, one file top to bottom: ``joint_main.py`` calls :func:`train`.

    train(cfg)                                        # the run
        setup_distributed; --resume: rank 0 finds last.pth and sends it to every rank
        data = JointData(cfg); run = start_run(...)   # joint drawings; threads, seeds, split, run folder
        for fold in run.folds: train_fold(...)
        finish_run: summary.json, best_model.pth
    train_fold(...)                                   # one fold
        loaders, build_fold (model + DDP, weighting, optimizer, schedule, scaler)
        epoch 0: the untrained model's validation (or resume from last.pth)
        for epoch: train_epoch -> weighting.end_epoch (DWA) -> evaluate_part("val") -> tracker.end_epoch
        the best weights back; evaluate_part("test")
    train_epoch(...)                                  # the step, in the spirit of nanoGPT's train.py
        for each window of accumulation_steps micro-batches:
            for each micro-batch (the same drawings for both models, views drawn by the loader):
                model.require_backward_grad_sync = last micro-step    # DDP only
                with autocast:  terms = model(batch)                   # GF, DeepDXF, cross, group
                total = weighting([GF, DeepDXF]) + cross_weight * cross + group_weight * group
                scaler.scale(total / micro_batches_in_window).backward()
            scaler.unscale_(optimizer); weighting.step(); clip each model's gradients
            skip the step (and count it) if a loss or a gradient norm is NaN/inf
            scaler.step(optimizer); scaler.update(); scheduler.step()

One optimizer: a parameter group per model (``GF``, ``DeepDXF``), one for the
cross-model heads (``heads``, when the term is on) and one for the loss-weight
parameters (``weights``, no weight decay). Logged losses are the unscaled values.
Metrics are named dicts, summed over ranks by name, so every rank takes the same
early-stopping decision; rank 0 writes logs and checkpoints, and all ranks wait for
it before leaving. What the three trainers share (the preamble, a fold's early
stopping, checkpoints and metrics rows, the summary) is ``utils/train/loop.py``.

``utils.train.checkpoint.load_trained_models(path)`` rebuilds the GF and DeepDXF models of a
joint checkpoint (what SimDeepDXF.py loads).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from config.cli import config_to_dict
from config.joint_config import JointConfig
from dataset.archive import ArchiveError
from dataset.loaders.joint import JointData, JointDataError, JointLoader
from dataset.loaders.views import VAL_SEED
from dataset.names import group_of
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import build_deepdxf_model
from model.GF_loss import chance_level
from model.GF_model import build_gf_model
from model.joint_loss import TASKS, JointBatch, JointObjective, clip_chance, group_chance
from model.floors import FLOOR_LABELS
from model.weighting import LossWeighting, UncertaintyWeighting, build_weighting, normalized_weights
from utils.train import amp as amp_util
from utils.train.checkpoint import load_checkpoint
from utils.train.distributed import (DistInfo, all_reduce_mean, all_reduce_sum, broadcast_object,
                                     cleanup_distributed, reduce_sums, setup_distributed)
from utils.train.loop import (LAST_NAME, FoldResult, FoldTracker, LoopSettings, Run, RunError, finish_run,
                              start_run, summarize_folds)
from utils.train.schedule import SchedulePlan, make_lr_scheduler, plan_schedule
from utils.train.splits import Split, make_split
from utils.train.embedding_choice import choose_and_store
from utils.train.hard_negatives import training_clusters
from utils.train.val_retrieval import (
    FLOOR_KEYS, floor_maps, merge_groups, pick_validation_drawings, strongest_floor, validation_retrieval,
)
from utils.ranking import GroupsError, read_groups, resolve_groups

#: the loss terms added with a fixed weight after the weighted GF and DeepDXF losses
EXTRA_TERMS = ("cross", "group")


def extra_weights(cfg: JointConfig) -> dict[str, float]:
    """The fixed weight of each of :data:`EXTRA_TERMS` (0 = the term is off)."""
    return {"cross": cfg.cross_weight, "group": cfg.group_weight}


def _extra_sum(terms: dict[str, Any], weights: dict[str, float]) -> Any:
    """``sum_t weight_t * terms[t]`` over the terms that are on (0 when none)."""
    return sum((w * terms[t] for t, w in weights.items() if w > 0), 0.0)


# ----------------------------------------------------------------------------- the run

def train(cfg: JointConfig) -> dict[str, Any] | int:
    """Run the joint training of ``cfg``; returns the summary (every rank), or an exit code on bad input."""
    info = setup_distributed(cfg.device, cfg.dist_backend)
    try:
        return _train(cfg, info)
    finally:
        cleanup_distributed(info)


def _train(cfg: JointConfig, info: DistInfo) -> dict[str, Any] | int:
    resume: Optional[dict[str, Any]] = None
    split: Optional[Split] = None
    if cfg.groups:  # a bad file fails before any work
        try:
            read_groups(cfg.groups)
        except GroupsError as err:
            print(f"error: --groups: {err}", file=sys.stderr)
            return 2
    if cfg.resume:  # rank 0 decides and sends what it found: ranks agree even without a shared filesystem
        status, message, resume, split = broadcast_object(find_resume(cfg) if info.is_main else None, info)
        if status != 0:
            print(message, file=sys.stderr)
            return 2 if status == 2 else 0
        cfg.run_name = message
    try:
        data = JointData(cfg, info.rank, info.world_size)
        if split is None and cfg.groups and cfg.split_by_groups:
            split = split_keeping_groups(cfg, data.names)
        run = start_run(cfg, data.names, "joint", dist=info, split=split)
    except (ArchiveError, JointDataError, RunError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run.log.info(f"joint: {data.describe(run.split)}; fold(s) {run.folds}; device {info.device}"
                 + (f", {info.world_size} processes (DDP)" if info.enabled else "")
                 + f"; accumulation {cfg.accumulation_steps}; amp {cfg.amp}; "
                 + (f"{cfg.num_workers} DataLoader worker(s) per process" if cfg.num_workers else
                    "batches built in the training process (--num_workers 0)"))
    batch_note = fit_batch_to_archive(cfg, min(len(run.split.folds[f][0]) for f in run.folds), info.world_size)
    if batch_note:
        run.log.info(batch_note)
        run.log.record_config({"GF_batch_size": cfg.GF_batch_size})
    user_groups = read_user_groups(cfg, data.names, run.log)
    if user_groups and cfg.group_weight > 0:  # the group term learns the user's groups (with their revisions)
        data.use_group_labels(merge_groups(run.split.groups, user_groups))
    done: list[dict[str, Any]] = list(resume.get("done", [])) if resume else []
    finished = {d["fold"] for d in done}
    results = [FoldResult(**{k: d[k] for k in FoldResult.__dataclass_fields__ if k in d}) for d in done]
    for fold in run.folds:
        if fold in finished:
            continue
        fold_resume = resume if resume is not None and resume["fold"] == fold else None
        result = train_fold(cfg, data, run, fold, info, fold_resume, done, user_groups)
        if result is None:  # left early on purpose
            return {"interrupted": True, "run_name": cfg.run_name}
        results.append(result)
    return _finish(cfg, data, run, results, info, [[data.names[i] for i in g] for g in user_groups])


#: a small archive's epoch should have at least this many optimizer steps (when it allows)
MIN_STEPS_PER_EPOCH = 4
#: the smallest GF batch (pairs) the default is scaled down to: 8 drawings, 15 negatives each
MIN_GF_PAIRS = 4


def fit_batch_to_archive(cfg: JointConfig, n_train: int, world_size: int = 1) -> Optional[str]:
    """Scale the default ``GF_batch_size`` down for a small archive, in place.

    With ``n_train`` training drawings per fold, the default batch (45 pairs, up to 90
    drawings) gives ``ceil(n_train / 90)`` batches per epoch: 1 for an archive of 75
    drawings, so 50 epochs are 50 optimizer steps. When ``--GF_batch_size`` is left at its
    default and an epoch would have fewer than :data:`MIN_STEPS_PER_EPOCH` optimizer steps
    (batches / accumulation steps / processes), the batch becomes
    ``max(MIN_GF_PAIRS, n_train // (2 * MIN_STEPS_PER_EPOCH * accumulation * processes))``
    pairs. Returns the log line that says so, or None when nothing changed.
    """
    default = JointConfig.__dataclass_fields__["GF_batch_size"].default
    if cfg.GF_batch_size != default or n_train <= 0:
        return None
    per_step = cfg.accumulation_steps * max(1, world_size)

    def steps(pairs: int) -> int:
        return math.ceil(math.ceil(n_train / (2 * pairs)) / per_step)

    if steps(default) >= MIN_STEPS_PER_EPOCH:
        return None
    pairs = min(default, max(MIN_GF_PAIRS, n_train // (2 * MIN_STEPS_PER_EPOCH * per_step)))
    if pairs == default:
        return None
    cfg.GF_batch_size = pairs
    return (f"small archive: {n_train} training drawings per fold would be {steps(default)} optimizer step(s) "
            f"per epoch with the default --GF_batch_size {default}; using --GF_batch_size {pairs} "
            f"({steps(pairs)} step(s) per epoch). Give --GF_batch_size to choose; on a small archive also train "
            f"one fold of a few (--k_folds 5 --fold 0) with more epochs (README: Small archives)")


def split_keeping_groups(cfg: JointConfig, names: Sequence[str]) -> Split:
    """The run's split with every ``--groups`` group on one side of each cut (``--split_by_groups``):
    pattern groups (pieces, revisions) and the listed groups merged (``merge_groups``), so that
    validation and test hold groups the model never trained on."""
    found, _ = resolve_groups(names, read_groups(cfg.groups))
    pattern = [group_of(n, cfg.group_pattern) for n in names]
    labels = merge_groups(pattern, [g for g in found if len(g) >= 2])
    return make_split(names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern, groups=labels)


def read_user_groups(cfg: JointConfig, names: Sequence[str], log: Any) -> list[list[int]]:
    """``--groups``: the listed groups as joint-drawing indices (names not among ``names`` are
    left out, and the log says how many). Empty without ``--groups``."""
    if not cfg.groups:
        return []
    listed = read_groups(cfg.groups)
    found, missing = resolve_groups(names, listed)
    found = [g for g in found if len(g) >= 2]
    log.info(f"--groups {cfg.groups}: {len(found)} of {len(listed)} group(s) with >= 2 of the joint drawings"
             + (f"; {len(missing)} name(s) not among them, e.g. {missing[0]!r}" if missing else "")
             + ("; each kept on one side of the split (validation: groups never trained on)" if cfg.split_by_groups
                else "; split apart (--no-split_by_groups: validation holds new members of trained groups)")
             + ("" if cfg.val_retrieval else "; unused: --val_retrieval 0 turns the retrieval check off"))
    return found


def _latest_run(checkpoints_dir: str) -> Optional[str]:
    """The run of the newest ``checkpoints/<run>/last.pth``."""
    found = sorted(Path(checkpoints_dir).glob(f"*/{LAST_NAME}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.name if found else None


def find_resume(cfg: JointConfig) -> tuple[int, Optional[str], Any, Optional[Split]]:
    """Rank 0's view of ``--resume``: (status, message or run name, last.pth, split); status
    0 = go on, 2 = error, 1 = nothing left to do."""
    run = cfg.run_name or _latest_run(cfg.checkpoints_dir)
    last = Path(cfg.checkpoints_dir) / str(run) / LAST_NAME
    if run is None or not last.is_file():
        return 2, f"error: --resume: no {LAST_NAME} under {cfg.checkpoints_dir}/{run or '*'}", None, None
    ckpt = load_checkpoint(last, expect_kind="joint")
    if ckpt.get("complete"):
        return 1, f"run {run} is complete: nothing to resume", None, None
    if "training" not in ckpt["state"]:
        return 2, f"error: --resume: {last} was written by an older version of joint_main.py; start a new run", None, None
    split_path = Path(cfg.logs_dir) / run / "split.json"
    return 0, run, ckpt, Split.load(split_path) if split_path.is_file() else None


def _finish(cfg: JointConfig, data: JointData, run: Run, results: list[FoldResult], info: DistInfo,
            user_groups: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """The summary of the run (rank 0 chooses the search embedding on the best fold's
    validation drawings, writes the summary, publishes the best model and closes the run)."""
    extra = {
        "test_terms_per_fold": {str(r.fold): r.test_metrics for r in results},
        "chance_level": {k: v for r in results[-1:] for k, v in r.test_metrics.items() if k.startswith("chance")},
        "chance_formula": "GF: mean ln(2n-1) over graphs (n real nodes); DeepDXF: ln(2B-1); cross: ln(B); group: ln(2B-1); "
                          "B = drawings per batch",
        "test_loss_formula": "sum_i w_i L_i + cross_weight * cross + group_weight * group, w normalized to sum to 2 (the uncertainty "
                             "regularizer sum log sigma^2 is part of the training objective only)",
        "skipped_steps": sum(r.extra.get("skipped_steps", 0) for r in results),
        "weighting": cfg.weighting, "cross_weight": cfg.cross_weight, "group_weight": cfg.group_weight,
        "n_drawings": len(data.names), "n_test": len(run.split.test), "data_dir": cfg.data_dir,
        "data_layout": data.layout,
        "world_size": info.world_size, "run_name": cfg.run_name,
    }
    if not info.is_main:
        return {**summarize_folds(results), **extra}
    best = summarize_folds(results)
    if cfg.choose_embedding and best.get("best_checkpoint"):
        train_idx, val_idx = run.split.folds[int(best["best_fold"])]
        extra["search_embedding"] = choose_and_store(
            best["best_checkpoint"], data.dataset, data.names, run.split.groups, val_idx, run.log,
            max_drawings=cfg.choice_max_drawings, seed=cfg.seed, user_groups=user_groups, distractors=train_idx)
    return finish_run(run.log, results, extra,
                      f"joint over {len(results)} fold(s): best combined val loss {{val_loss_mean:.4f}} ± "
                      f"{{val_loss_std:.4f}}, test {{test_loss_mean:.4f}} ± {{test_loss_std:.4f}}")


# ----------------------------------------------------------------------------- one fold

def build_joint(cfg: JointConfig, deepdxf_batch_size: Optional[int] = None) -> tuple[JointObjective, LossWeighting]:
    """The joint model (both models + cross heads) and the loss weighting, fresh, on the CPU."""
    dx_cfg = cfg.deepdxf_config(deepdxf_batch_size)
    objective = JointObjective(build_gf_model(cfg.gf_config()), build_deepdxf_model(dx_cfg), dx_cfg,
                               cfg.cross_weight, cfg.cross_temperature, cfg.cross_dim,
                               cfg.group_weight, cfg.group_temperature)
    weighting = build_weighting(cfg.weighting, list(TASKS), fixed_weights=[cfg.w_GF, cfg.w_DeepDXF],
                                dwa_temperature=cfg.dwa_temperature, gradnorm_alpha=cfg.gradnorm_alpha)
    return objective, weighting


def make_optimizer(objective: JointObjective, weighting: LossWeighting, cfg: JointConfig) -> torch.optim.AdamW:
    """AdamW with the groups ``GF``, ``DeepDXF``, ``heads`` (if any) and ``weights`` (if any, no decay)."""
    groups = [
        {"name": "GF", "params": list(objective.gf.parameters()), "lr": cfg.GF_lr, "weight_decay": cfg.GF_weight_decay},
        {"name": "DeepDXF", "params": list(objective.deepdxf.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
    ]
    if objective.heads is not None:
        groups.append({"name": "heads", "params": list(objective.heads.parameters()), "lr": cfg.lr,
                       "weight_decay": cfg.weight_decay})
    wp = weighting.weight_parameters()
    if wp:
        groups.append({"name": "weights", "params": wp, "lr": cfg.weight_lr, "weight_decay": 0.0})
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups)


@dataclass
class TrainState:
    """What one fold's training carries between epochs (all saved in ``last.pth``)."""

    objective: JointObjective
    model: nn.Module  # the objective, or its DDP wrapper
    weighting: LossWeighting
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    step: int = 0
    skipped_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, scaler and counters (the models are saved by :func:`joint_state`)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore :meth:`state_dict`. Returns False when the scaler stayed fresh (the
        checkpoint holds no scaler state, e.g. saved without fp16)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.skipped_steps = int(state.get("step", 0)), int(state.get("skipped_steps", 0))
        return amp_util.load_scaler_state(self.scaler, state.get("scaler"))


def schedule_plan(cfg: JointConfig, train_loader: JointLoader) -> SchedulePlan:
    """The fold's optimizer steps (this rank's batches / accumulation per epoch) and warm-up
    (``min(warmup_steps, 5 % of the run)``)."""
    return plan_schedule(math.ceil(len(train_loader) / cfg.accumulation_steps), cfg.epochs, cfg.warmup_steps)


def build_fold(cfg: JointConfig, train_loader: JointLoader, info: DistInfo, fold: int,
               plan: Optional[SchedulePlan] = None) -> TrainState:
    """Model (DDP-wrapped under torchrun), weighting, optimizer, schedule (``plan``, default
    :func:`schedule_plan`) and scaler of one fold.

    The weights are initialised from ``seed + fold`` (the same on every rank); afterwards
    each rank's global RNG (dropout) is seeded with ``seed + 1000 fold + rank``, so ranks
    draw different dropout masks for their different batches.
    """
    device = info.device
    torch.manual_seed(cfg.seed + fold)
    objective, weighting = build_joint(cfg, train_loader.deepdxf_batch_size)
    objective.to(device)
    weighting.to(device)
    model: nn.Module = objective
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(cfg.seed + 1000 * fold + info.rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(cfg.seed + 1000 * fold + info.rank)
    optimizer = make_optimizer(objective, weighting, cfg)
    scheduler = make_lr_scheduler(optimizer, plan or schedule_plan(cfg, train_loader))  # the weights' lr stays
    scaler = amp_util.make_grad_scaler(device, amp_util.amp_dtype(cfg.amp, cfg.amp_dtype, device))
    return TrainState(objective, model, weighting, optimizer, scheduler, scaler)


def hard_negative_clusters(cfg: JointConfig, data: JointData, run: Run, fold: int) -> Optional[np.ndarray]:
    """``--hard_negatives``: the cluster of each training drawing's group (``utils.train.hard_negatives``),
    about one batch of drawings per cluster; None when off (or the group term is)."""
    if not cfg.hard_negatives:
        return None
    train_idx = run.split.folds[fold][0]
    group_ids = data.group_ids(run.split, train_idx)
    if group_ids is None:
        run.log.info(f"fold {fold}: --hard_negatives ignored: the group term is off (--group_weight 0)")
        return None
    start = time.perf_counter()
    clusters = training_clusters(data.dataset, train_idx, group_ids, 2 * cfg.GF_batch_size, cfg.seed + fold)
    run.log.info(f"fold {fold}: hard negatives: {len(np.unique(group_ids))} training groups in "
                 f"{len(np.unique(clusters))} clusters of look-alikes by their floors "
                 f"({time.perf_counter() - start:.1f} s); each batch holds the groups of one cluster")
    return clusters


def train_fold(cfg: JointConfig, data: JointData, run: Run, fold: int, info: DistInfo,
               resume: Optional[dict[str, Any]] = None, done: Optional[list[dict[str, Any]]] = None,
               user_groups: Sequence[Sequence[int]] = ()) -> Optional[FoldResult]:
    """Train one fold with early stopping on the combined validation loss, then test the best
    weights; None when the process left early (``--stop_after_epochs``). ``user_groups``:
    ``--groups`` as joint-drawing indices (more queries for the retrieval check)."""
    log, extra = run.log, extra_weights(cfg)
    train_loader, val_loader = data.fold_loaders(run.split, fold, hard_negative_clusters(cfg, data, run, fold))
    plan = schedule_plan(cfg, train_loader)
    st = build_fold(cfg, train_loader, info, fold, plan)
    _log_fold_plan(cfg, log, fold, train_loader, val_loader, plan, info)
    pick_groups = merge_groups(run.split.groups, user_groups) if user_groups else run.split.groups
    checks = {part: pick_validation_drawings(idx, pick_groups, cfg.val_retrieval, cfg.seed)
              if cfg.val_retrieval else [] for part, idx in (("val", val_loader.indices), ("test", run.split.test))}
    floors: dict[str, dict[str, float]] = {}  # per part: the floors do not learn, compute them once
    if cfg.val_retrieval:
        n_val = len(checks["val"])
        log.info(f"fold {fold}: retrieval check on {n_val} validation drawing(s)" if n_val else
                 f"fold {fold}: no retrieval check: no two validation drawings share a group (--group_pattern)")
    off = [t for t, w in extra.items() if w <= 0]
    bar_keys = {"GF": "val_GF_loss", "DeepDXF": "val_DeepDXF_loss",
                **{t: f"val_{t}_loss" for t in EXTRA_TERMS if t not in off},
                **({"mAP": "val_retrieval_mAP", "floor": "val_floor_mAP"} if checks["val"] else {}),
                "w_GF": "w_GF", "w_DeepDXF": "w_DeepDXF"}
    deepdxf_batch_size = train_loader.deepdxf_batch_size
    settings = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "joint",
                            dict(config_to_dict(cfg), DeepDXF_batch_size=deepdxf_batch_size),
                            checkpoint_extra={"deepdxf_batch_size": deepdxf_batch_size},
                            save_last=True, stop_after_epochs=cfg.stop_after_epochs)
    tracker = FoldTracker(fold, log, settings, info, done)

    def evaluate_part(part: str) -> dict[str, float]:
        loader = data.test_loader(run.split) if part == "test" else val_loader
        if checks[part] and part not in floors:
            floors[part] = floor_maps(data.dataset, data.names, run.split.groups, checks[part], user_groups)
            log.info(f"fold {fold}: {describe_floors(part, floors[part])}")
        return _evaluate_part(cfg, data, run, st, loader, checks[part], info, chance_levels=part == "val",
                              user_groups=user_groups, floors=floors.get(part))

    if resume is not None:
        load_joint_state(st.objective, st.weighting, resume["state"])
        if not st.load_state_dict(resume["state"]["training"]) and st.scaler.is_enabled():
            log.info(f"fold {fold}: the checkpoint holds no GradScaler state: fp16 loss scaling starts afresh")
        tracker.resume(resume)
    else:
        val0 = evaluate_part("val")
        tracker.start(val0, st.weighting.log_values(), explain_loss(val0, st.weighting, extra) + describe_retrieval(val0))
    for epoch in tracker.epochs():
        train_loader.set_epoch(epoch)
        row = train_epoch(st, train_loader, cfg, info)
        st.weighting.end_epoch(torch.tensor([row["train_GF_loss"], row["train_DeepDXF_loss"]]))
        if row["skipped_steps"]:
            log.info(f"fold {fold} epoch {epoch}: skipped {row['skipped_steps']} step(s) with NaN/inf loss or gradients")
        val = evaluate_part("val")
        if tracker.end_epoch(epoch, _drop_off_terms(row, off), val, joint_state(st.objective, st.weighting),
                             train_state=st.state_dict(), row_extra=st.weighting.log_values(), bar_keys=bar_keys):
            break
    if tracker.interrupted:
        return None
    if tracker.best_state is not None:
        load_joint_state(st.objective, st.weighting, tracker.best_state)
    test = evaluate_part("test")
    return tracker.finish(test, explain_loss(test, st.weighting, extra) + describe_retrieval(test),
                          {"skipped_steps": st.skipped_steps, "deepdxf_batch_size": deepdxf_batch_size})


def _log_fold_plan(cfg: JointConfig, log: Any, fold: int, train_loader: JointLoader, val_loader: JointLoader,
                   plan: SchedulePlan, info: DistInfo) -> None:
    """The fold's sizes, schedule and terms in the log, and the derived values in config.json."""
    extra = extra_weights(cfg)
    log.info(f"fold {fold}: {len(train_loader.indices)} train / {len(val_loader.indices)} val drawings; "
             f"{train_loader.n_batches} joint batch(es) per epoch"
             + (f" ({len(train_loader)} on this rank)" if info.enabled else "") + ", "
             f"GF {cfg.GF_batch_size} pairs max, DeepDXF batch int({len(train_loader.indices)} / "
             f"{train_loader.n_batches}) = {train_loader.deepdxf_batch_size}; {plan.describe()}; "
             f"weighting {cfg.weighting}; "
             + ", ".join(f"{t} term " + (f"weight {w:g}" if w > 0 else "off") for t, w in extra.items()))
    if plan.warning():
        log.warning(plan.warning())
    log.record_config({"DeepDXF_batch_size": train_loader.deepdxf_batch_size, "warmup_steps": plan.warmup_steps,
                       "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps})


def _drop_off_terms(metrics: dict[str, float], off: list[str]) -> dict[str, float]:
    """The metrics without those of the extra terms that are off."""
    return {k: v for k, v in metrics.items() if not any(t in k for t in off)}


def _evaluate_part(cfg: JointConfig, data: JointData, run: Run, st: TrainState, loader: JointLoader,
                   drawings: list[int], info: DistInfo, *, chance_levels: bool,
                   user_groups: Sequence[Sequence[int]] = (), floors: Optional[dict[str, float]] = None
                   ) -> dict[str, float]:
    """The losses of a validation or test loader (:func:`evaluate`), the retrieval check on
    ``drawings`` (``utils/train/val_retrieval.py``), the chance levels for the plot
    (``chance_levels``); the terms that are off left out."""
    metrics = evaluate(st.objective, st.weighting, loader, cfg, info)
    if drawings:
        metrics.update(validation_retrieval(st.objective, data.dataset, data.names, run.split.groups, drawings,
                                            user_groups, floors))
    if chance_levels:
        run.log.set_chance_levels({"val_loss": metrics["chance_loss"],
                                   **{f"val_{t}_loss": metrics[f"chance_{t}"] for t in ("GF", "DeepDXF", *EXTRA_TERMS)}})
    return _drop_off_terms(metrics, [t for t, w in extra_weights(cfg).items() if w <= 0])


# ----------------------------------------------------------------------------- the step

def _grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip ``params``' gradients to ``max_norm`` (0: measure only); returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))


def train_epoch(st: TrainState, loader: JointLoader, cfg: JointConfig, info: DistInfo) -> dict[str, float]:
    """One pass over ``loader`` (this rank's batches). Returns the epoch's metrics, reduced over ranks.

    Keys: ``train_loss`` (sum_i w_i L_i + the fixed-weight extra terms, the weights normalized to sum to T,
    as the validation loss), ``objective`` (what was minimized), ``train_<term>_loss``, ``lr``,
    ``lr_GF``, ``grad_norm_GF``, ``grad_norm_DeepDXF``, ``drawings_per_s``, ``skipped_steps``,
    ``seconds_train``.
    """
    obj, model, weighting = st.objective, st.model, st.weighting
    device, dtype = info.device, amp_util.amp_dtype(cfg.amp, cfg.amp_dtype, info.device)
    acc, n, extra = cfg.accumulation_steps, len(loader), extra_weights(cfg)
    reduce = (lambda t: all_reduce_mean(t, info)) if info.enabled else None
    task_params = [list(obj.gf.parameters()), list(obj.deepdxf.parameters())]
    model.train()
    weighting.train()
    sums = dict.fromkeys(("GF", "DeepDXF", *EXTRA_TERMS, "shown", "objective", "grad_norm_GF", "grad_norm_DeepDXF",
                          "micro_batches", "drawings", "steps", "skipped"), 0.0)
    t0, bad = time.time(), False
    for i, batch in enumerate(loader):
        start = i - i % acc
        window = min(acc, n - start)  # micro-batches in this window (the last one may be short)
        last = i == start + window - 1
        if i == start:
            st.optimizer.zero_grad(set_to_none=True)
            bad = False
        batch = batch.to(device)
        if info.enabled:
            model.require_backward_grad_sync = last
        with amp_util.autocast(device, dtype):
            terms = model(batch)
        losses = torch.stack([terms[t].float() for t in TASKS])
        observe = last and weighting.needs_task_gradients  # GradNorm: each loss's gradient on its own model
        # under fp16 the task gradients go through the scaled loss (no underflow), then are unscaled
        total = weighting(losses, task_params if observe else None, reduce=reduce,
                          grad_scale=st.scaler.get_scale() if observe and st.scaler.is_enabled() else 1.0)
        total = total + _extra_sum(terms, extra)
        bad = bad or not bool(torch.isfinite(total))
        st.scaler.scale(total / window).backward()
        _add_micro_batch(sums, losses, terms, total, weighting, extra, batch)
        if last:
            _optimizer_step(st, cfg, info, bad, sums, reduce)
    return _epoch_metrics(st, sums, time.time() - t0, info)


def _add_micro_batch(sums: dict[str, float], losses: torch.Tensor, terms: dict[str, torch.Tensor],
                     total: torch.Tensor, weighting: LossWeighting, extra: dict[str, float], batch: JointBatch) -> None:
    """Add a micro-batch's unscaled losses to the epoch's sums (``shown``: with the weights normalized to sum to T)."""
    with torch.no_grad():
        w = normalized_weights(weighting).to(losses.device)
        shown = (w * losses).sum() + _extra_sum({t: terms[t].float() for t in EXTRA_TERMS}, extra)
    sums["GF"] += float(losses[0].detach())
    sums["DeepDXF"] += float(losses[1].detach())
    for t in EXTRA_TERMS:
        sums[t] += float(terms[t].detach())
    sums["shown"] += float(shown)
    sums["objective"] += float(total.detach())
    sums["micro_batches"] += 1
    sums["drawings"] += batch.n_drawings


def _optimizer_step(st: TrainState, cfg: JointConfig, info: DistInfo, bad: bool, sums: dict[str, float],
                    reduce: Any) -> None:
    """Unscale, let the weighting prepare its gradients, clip each model, then step, or skip
    the step when a loss or a gradient norm is NaN/inf on any rank."""
    obj = st.objective
    st.scaler.unscale_(st.optimizer)
    st.weighting.step(reduce)  # the weights live outside DDP: it averages (or computes) their gradients
    g_gf = float(_grad_norm(list(obj.gf.parameters()), cfg.grad_clip))
    g_dx = float(_grad_norm(list(obj.deepdxf.parameters()), cfg.grad_clip))
    if obj.heads is not None:
        _grad_norm(list(obj.heads.parameters()), cfg.grad_clip)
    flag = torch.tensor([float(bad or not (math.isfinite(g_gf) and math.isfinite(g_dx)))])
    if info.enabled:
        flag = all_reduce_sum(flag.to(info.device), info).cpu()
    if float(flag) > 0:
        st.optimizer.zero_grad(set_to_none=True)
        st.scaler.update()
        sums["skipped"] += 1
    else:
        st.scaler.step(st.optimizer)
        st.scaler.update()
        sums["grad_norm_GF"] += g_gf
        sums["grad_norm_DeepDXF"] += g_dx
        sums["steps"] += 1
        st.scheduler.step()
    st.step += 1


def _epoch_metrics(st: TrainState, sums: dict[str, float], seconds: float, info: DistInfo) -> dict[str, float]:
    """The epoch's metrics row from its sums, reduced over ranks by name."""
    sums = reduce_sums(sums, info)
    skipped = int(sums["skipped"])
    st.skipped_steps += skipped
    mb = sums["micro_batches"]
    mean = {k: (sums[k] / mb if mb else float("nan")) for k in ("GF", "DeepDXF", *EXTRA_TERMS, "shown", "objective")}
    steps = max(sums["steps"], 1)
    lrs = {g.get("name"): g["lr"] for g in st.optimizer.param_groups}
    return {
        "train_loss": mean["shown"], "objective": mean["objective"],
        "train_GF_loss": mean["GF"], "train_DeepDXF_loss": mean["DeepDXF"],
        **{f"train_{t}_loss": mean[t] for t in EXTRA_TERMS},
        "lr": lrs.get("DeepDXF", float("nan")), "lr_GF": lrs.get("GF", float("nan")),
        "grad_norm_GF": sums["grad_norm_GF"] / steps, "grad_norm_DeepDXF": sums["grad_norm_DeepDXF"] / steps,
        "drawings_per_s": sums["drawings"] / max(seconds, 1e-9), "skipped_steps": skipped,
        "seconds_train": seconds,
    }


# ----------------------------------------------------------------------------- evaluation

def evaluation_batches(loader: JointLoader) -> Iterator[JointBatch]:
    """The batches of a validation/test loader, each exactly once over all ranks.

    Rank r takes parts r, r + W, r + 2W, ... < n without wrapping around: training
    wraps (every rank must take the same number of optimizer steps), evaluation must
    not, or the wrapped batches would be counted twice in the sums over ranks. Read
    and collated by the loader's DataLoader workers (``--num_workers``), as in training.
    """
    return loader.batches(wrap=False)


@torch.no_grad()
def evaluate(objective: JointObjective, weighting: LossWeighting, loader: JointLoader, cfg: JointConfig,
             info: DistInfo) -> dict[str, float]:
    """Validation/test losses with fixed views (seeded per batch), summed over ranks by name.

    GF in eval mode; DeepDXF in train mode with seeded dropout (dropout is part of its
    views, as DeepDXF_train.py evaluates). Every batch counts once (see
    :func:`evaluation_batches`), weighted by its drawings, so 2 ranks give the loss of
    1 process. Returns ``loss`` (the combined loss with the current weights normalized
    to sum to T, plus the fixed-weight extra terms), ``GF_loss``, ``DeepDXF_loss``,
    ``cross_loss``, ``group_loss``, their chance levels ``chance_GF``... and ``chance_loss`` (the same
    combination of the chance levels); NaN when empty.
    """
    device = info.device
    dtype = amp_util.amp_dtype(cfg.amp, cfg.amp_dtype, device)
    gf_was, dx_was = objective.gf.training, objective.deepdxf.training
    objective.gf.eval()
    objective.deepdxf.train()
    if objective.heads is not None:
        objective.heads.eval()
    names = ("GF", "DeepDXF", *EXTRA_TERMS, "chance_GF", "chance_DeepDXF", *(f"chance_{t}" for t in EXTRA_TERMS))
    sums = dict.fromkeys(names + ("drawings",), 0.0)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in evaluation_batches(loader):
            torch.manual_seed(VAL_SEED + batch.part)
            batch = batch.to(device)
            with amp_util.autocast(device, dtype):
                terms = objective(batch)
            b = batch.n_drawings
            values = {**{t: float(terms[t]) for t in ("GF", "DeepDXF", *EXTRA_TERMS)},
                      "chance_GF": chance_level(batch.gf_graphs.mask.cpu()) if b else 0.0,
                      "chance_DeepDXF": nt_xent_chance(b), "chance_cross": clip_chance(b),
                      "chance_group": group_chance(b)}
            for k, v in values.items():
                sums[k] += v * b
            sums["drawings"] += b
    objective.gf.train(gf_was)
    objective.deepdxf.train(dx_was)
    sums = reduce_sums(sums, info)
    nd = sums["drawings"]
    m = {k: (sums[k] / nd if nd else float("nan")) for k in names}
    w = normalized_weights(weighting).tolist()
    extra = extra_weights(cfg)
    loss = w[0] * m["GF"] + w[1] * m["DeepDXF"] + _extra_sum(m, extra)
    chance = (w[0] * m["chance_GF"] + w[1] * m["chance_DeepDXF"]
              + _extra_sum({t: m[f"chance_{t}"] for t in EXTRA_TERMS}, extra))
    return {"loss": loss, "GF_loss": m["GF"], "DeepDXF_loss": m["DeepDXF"],
            **{f"{t}_loss": m[t] for t in EXTRA_TERMS},
            **{k: v for k, v in m.items() if k.startswith("chance")}, "chance_loss": chance}


def explain_loss(metrics: dict[str, float], weighting: LossWeighting, extra: dict[str, float]) -> str:
    """How a combined validation/test loss adds up, in words::

        1.02·GF 0.95 + 0.98·DeepDXF 1.98 + 0.5·cross 0.31 (weights normalized to sum to 2; ...)

    ``extra``: the fixed weight of each extra term (:func:`extra_weights`); terms at 0 are left out.

    The terms are the weights normalized to sum to T times each loss (so runs with
    different weightings compare); for ``uncertainty`` the note gives the raw weights
    exp(-s) and the regularizer sum(s) = sum(log sigma^2) that the training objective adds.
    """
    w = normalized_weights(weighting).tolist()
    parts = [f"{w[0]:.3f}·GF {metrics['GF_loss']:.4f}", f"{w[1]:.3f}·DeepDXF {metrics['DeepDXF_loss']:.4f}"]
    parts += [f"{w_t:g}·{t} {metrics[f'{t}_loss']:.4f}" for t, w_t in extra.items() if w_t > 0]
    note = f"weights normalized to sum to {len(w)}"
    if isinstance(weighting, UncertaintyWeighting):
        raw = weighting.weights().tolist()
        reg = float(weighting.log_vars.detach().sum())
        note += (f"; the training objective is exp(-s)·L + s per loss: raw weights {raw[0]:.3f}, {raw[1]:.3f} "
                 f"and log σ² terms {reg:+.4f}")
    shown = ["GF", "DeepDXF"] + [t for t, w_t in extra.items() if w_t > 0]
    chances = [f"{t} {metrics[f'chance_{t}']:.4f}" for t in shown if f"chance_{t}" in metrics]
    if chances:
        note += "; chance " + ", ".join(chances)
    return " + ".join(parts) + f" ({note})"


def describe_retrieval(metrics: dict[str, float]) -> str:
    """``"; retrieval mAP 0.80 (strongest floor layout_rot 0.92: below the floor)"`` when the metrics
    hold the retrieval check, else ``""``."""
    m, f = metrics.get("retrieval_mAP", math.nan), metrics.get("floor_mAP", math.nan)
    if not math.isfinite(m):
        return ""
    return (f"; retrieval mAP {m:.3f} (strongest floor {strongest_floor(metrics) or '-'} {f:.3f}"
            f"{': below the floor' if m < f else ''})")


def describe_floors(part: str, floors: dict[str, float]) -> str:
    """One line: every floor's mAP on the part's retrieval drawings and which is the strongest."""
    maps = ", ".join(f"{k} {floors[f'floor_{k}_mAP']:.3f}" for k in FLOOR_KEYS
                     if math.isfinite(floors.get(f"floor_{k}_mAP", math.nan)))
    best = strongest_floor(floors)
    if best is None:
        return f"no floor for the {part} retrieval check (no query)"
    return (f"{part} retrieval check: floors (mAP) {maps}; the model is compared with the strongest, {best} "
            f"({FLOOR_LABELS[best]})")


# ----------------------------------------------------------------------------- checkpoints

def joint_state(objective: JointObjective, weighting: LossWeighting) -> dict[str, Any]:
    """The model part of a joint checkpoint's ``state``."""
    state = {"gf": objective.gf.state_dict(), "deepdxf": objective.deepdxf.state_dict(),
             "weighting": weighting.state_dict(), "weighting_method": type(weighting).__name__}
    if objective.heads is not None:
        state["heads"] = objective.heads.state_dict()
    return state


def load_joint_state(objective: JointObjective, weighting: Optional[LossWeighting], state: dict[str, Any]) -> None:
    """Restore :func:`joint_state` into a joint model built with the same config."""
    objective.gf.load_state_dict(state["gf"])
    objective.deepdxf.load_state_dict(state["deepdxf"])
    if objective.heads is not None and "heads" in state:
        objective.heads.load_state_dict(state["heads"])
    if weighting is not None and "weighting" in state:
        weighting.load_state_dict(state["weighting"])


__all__ = [
    "EXTRA_TERMS", "extra_weights", "train", "find_resume", "build_joint", "make_optimizer", "TrainState",
    "schedule_plan", "build_fold", "train_fold", "train_epoch", "evaluation_batches", "evaluate", "explain_loss",
    "describe_retrieval", "describe_floors", "joint_state", "load_joint_state", "fit_batch_to_archive",
    "read_user_groups", "MIN_GF_PAIRS", "MIN_STEPS_PER_EPOCH",
]


def _run_as_script() -> int:
    """``python joint_train.py``: this file is a module; say what to run instead (exit 2)."""
    import sys

    print("joint_train.py is a module (the joint training, called by joint_main.py), not a command.\n"
          "Train with:  python joint_main.py --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_run_as_script())
