"""One epoch of joint training, evaluation, and the joint checkpoint (SPEC §6).

The training step, in the spirit of nanoGPT's ``train.py``::

    for each window of accumulation_steps micro-batches:
        for each micro-batch (the same drawings for both models):
            model.require_backward_grad_sync = last micro-step    # DDP only
            with autocast:  terms = model(batch)                   # GF, DeepDXF, cross
            total = weighting([GF, DeepDXF]) + cross_weight * cross
            scaler.scale(total / micro_batches_in_window).backward()
        scaler.unscale_(optimizer); clip each model's gradients
        skip the step (and count it) if a loss or a gradient norm is NaN/inf
        scaler.step(optimizer); scaler.update(); scheduler.step()

One optimizer: a parameter group per model (``GF``, ``DeepDXF``), one for the
cross-model heads (``heads``, when the term is on) and one for the loss-weight
parameters (``weights``, no weight decay). Logged losses are the unscaled values.

``utils.checkpoint.load_trained_models(path)`` rebuilds the GF and DeepDXF models of a
joint checkpoint (what SimDeepDXF.py loads).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from config.joint_config import JointConfig
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import build_deepdxf_model
from model.GF_model import build_gf_model
from model.joint_dataset import VAL_SEED, JointLoader
from model.joint_loss import TASKS, JointObjective, clip_chance
from utils.dynamic_weight import LossWeighting, build_weighting, normalized_weights
from utils.GF_utils import gf_chance_level


# ----------------------------------------------------------------------------- distributed

@dataclass
class DistInfo:
    """Where this process stands: rank, world size, device (world size 1: no DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(cfg: JointConfig) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else single process.

    NCCL on CUDA (one GPU per local rank), gloo on CPU (``--dist_backend`` overrides).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(cfg.device)
    if world <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = cfg.dist_backend if cfg.dist_backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world, local_rank, device)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``t`` over ranks (``t`` itself in a single process)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    return all_reduce_sum(t, info) / info.world_size


# ----------------------------------------------------------------------------- building

def build_joint(cfg: JointConfig, deepdxf_batch_size: Optional[int] = None) -> tuple[JointObjective, LossWeighting]:
    """The joint model (both models + cross heads) and the loss weighting, fresh, on the CPU."""
    dx_cfg = cfg.deepdxf_config(deepdxf_batch_size)
    objective = JointObjective(build_gf_model(cfg.gf_config()), build_deepdxf_model(dx_cfg), dx_cfg,
                               cfg.cross_weight, cfg.cross_temperature, cfg.cross_dim)
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


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: JointConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine over ``epochs * steps_per_epoch`` optimizer steps (all groups alike, weights excepted)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    f = lambda s: warmup_cosine(s, cfg.warmup_steps, total)  # noqa: E731
    lambdas = [(lambda s: 1.0) if g.get("name") == "weights" else f for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def amp_dtype(cfg: JointConfig, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype (None: no autocast): only with ``--amp`` on CUDA."""
    if not cfg.amp or device.type != "cuda":
        return None
    if cfg.amp_dtype == "fp16" or (cfg.amp_dtype == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def make_scaler(cfg: JointConfig, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 autocast."""
    return torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu",
                                enabled=amp_dtype(cfg, device) == torch.float16)


# ----------------------------------------------------------------------------- training

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


def _grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip ``params``' gradients to ``max_norm`` (0: measure only); returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))


def train_epoch(st: TrainState, loader: JointLoader, cfg: JointConfig, info: DistInfo) -> dict[str, float]:
    """One pass over ``loader`` (this rank's batches). Returns the epoch's metrics, reduced over ranks.

    Keys: ``train_loss`` (sum_i w_i L_i + cross_weight * cross with the weights normalized to sum to T,
    as the validation loss), ``objective`` (what was minimized), ``train_<term>_loss``, ``lr``,
    ``lr_GF``, ``drawings_per_s``, ``skipped_steps``, ``grad_norm_GF``, ``grad_norm_DeepDXF``.
    """
    obj, model, weighting = st.objective, st.model, st.weighting
    device = info.device
    dtype = amp_dtype(cfg, device)
    acc = cfg.accumulation_steps
    n = len(loader)
    model.train()
    weighting.train()
    sums = torch.zeros(5, dtype=torch.float64)  # GF, DeepDXF, cross, train_loss, objective (per micro-batch)
    norms = torch.zeros(2, dtype=torch.float64)
    count, drawings, windows, skipped = 0, 0, 0, 0
    t0 = time.time()
    bad = False
    for i, batch in enumerate(loader):
        start = i - i % acc
        window = min(acc, n - start)  # micro-batches in this window (the last one may be short)
        last = i == start + window - 1
        if i == start:
            st.optimizer.zero_grad(set_to_none=True)
            bad = False
        batch = batch.to(device)
        gen = torch.Generator(device=device).manual_seed(loader.view_generator_seed(batch.part))
        if info.enabled:
            model.require_backward_grad_sync = last
        with autocast(device, dtype):
            terms = model(batch, gen)
        losses = torch.stack([terms[t].float() for t in TASKS])
        if weighting.needs_task_gradients and last:
            weighting.observe(losses, [list(obj.gf.parameters()), list(obj.deepdxf.parameters())],
                              reduce=(lambda t: all_reduce_mean(t, info)) if info.enabled else None)
        total = weighting(losses) + cfg.cross_weight * terms["cross"]
        bad = bad or not bool(torch.isfinite(total))
        st.scaler.scale(total / window).backward()
        with torch.no_grad():
            w = normalized_weights(weighting).to(losses.device)
            shown = (w * losses).sum() + cfg.cross_weight * terms["cross"].float()
            sums += torch.stack([losses[0], losses[1], terms["cross"].float(), shown, total.float()]).double().cpu()
        count += 1
        drawings += batch.n_drawings
        if not last:
            continue
        # ---- optimizer step
        st.scaler.unscale_(st.optimizer)
        wp = weighting.weight_parameters()
        if info.enabled:  # the weights live outside DDP: average their gradients by hand
            for p in wp:
                if p.grad is not None:
                    p.grad.copy_(all_reduce_mean(p.grad, info))
        weighting.before_optimizer_step()
        g_gf = _grad_norm(list(obj.gf.parameters()), cfg.grad_clip)
        g_dx = _grad_norm(list(obj.deepdxf.parameters()), cfg.grad_clip)
        if obj.heads is not None:
            _grad_norm(list(obj.heads.parameters()), cfg.grad_clip)
        flag = torch.tensor([float(bad or not (math.isfinite(float(g_gf)) and math.isfinite(float(g_dx))))])
        if info.enabled:
            flag = all_reduce_sum(flag.to(device), info).cpu()
        if float(flag) > 0:
            st.optimizer.zero_grad(set_to_none=True)
            st.scaler.update()
            skipped += 1
        else:
            st.scaler.step(st.optimizer)
            st.scaler.update()
            weighting.after_optimizer_step()
            norms += torch.tensor([float(g_gf), float(g_dx)], dtype=torch.float64)
            windows += 1
            st.scheduler.step()
        st.step += 1
    seconds = time.time() - t0
    stats = torch.cat([sums, norms, torch.tensor([count, drawings, windows, skipped], dtype=torch.float64)])
    stats = all_reduce_sum(stats.to(device), info).cpu() if info.enabled else stats
    sums, norms = stats[:5], stats[5:7]
    count, drawings, windows, skipped = (float(v) for v in stats[7:])
    st.skipped_steps += int(skipped)
    mean = (sums / max(count, 1)).tolist() if count else [float("nan")] * 5
    lrs = {g.get("name"): g["lr"] for g in st.optimizer.param_groups}
    return {
        "train_loss": mean[3], "objective": mean[4],
        "train_GF_loss": mean[0], "train_DeepDXF_loss": mean[1], "train_cross_loss": mean[2],
        "lr": lrs.get("DeepDXF", float("nan")), "lr_GF": lrs.get("GF", float("nan")),
        "grad_norm_GF": float(norms[0]) / max(windows, 1), "grad_norm_DeepDXF": float(norms[1]) / max(windows, 1),
        "drawings_per_s": drawings / max(seconds, 1e-9), "skipped_steps": int(skipped),
        "seconds_train": seconds,
    }


@torch.no_grad()
def evaluate(objective: JointObjective, weighting: LossWeighting, loader: JointLoader, cfg: JointConfig,
             info: DistInfo) -> dict[str, float]:
    """Validation/test losses with fixed views (seeded per batch), reduced over ranks.

    GF in eval mode; DeepDXF in train mode with seeded dropout (dropout is part of its
    views, as DeepDXF_train.py evaluates). Returns ``loss`` (the combined loss with the
    current weights normalized to sum to T, plus cross_weight * cross), ``GF``,
    ``DeepDXF``, ``cross`` (drawing-weighted means) and their chance levels; NaN when empty.
    """
    device = info.device
    dtype = amp_dtype(cfg, device)
    gf_was, dx_was = objective.gf.training, objective.deepdxf.training
    objective.gf.eval()
    objective.deepdxf.train()
    if objective.heads is not None:
        objective.heads.eval()
    sums = torch.zeros(7, dtype=torch.float64)  # 3 terms, 3 chances, drawings
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in loader:
            torch.manual_seed(VAL_SEED + batch.part)
            batch = batch.to(device)
            gen = torch.Generator(device=device).manual_seed(loader.view_generator_seed(batch.part))
            with autocast(device, dtype):
                terms = objective(batch, gen)
            b = batch.n_drawings
            chances = [gf_chance_level(batch.gf_graphs[2].cpu()) if b else 0.0, nt_xent_chance(b), clip_chance(b)]
            sums += torch.tensor([float(terms["GF"]), float(terms["DeepDXF"]), float(terms["cross"]), *chances, 1.0],
                                 dtype=torch.float64) * torch.tensor([b] * 6 + [b], dtype=torch.float64)
    objective.gf.train(gf_was)
    objective.deepdxf.train(dx_was)
    if info.enabled:
        sums = all_reduce_sum(sums.to(device), info).cpu()
    nd = float(sums[6])
    if nd == 0:
        nan = float("nan")
        return {"loss": nan, "GF": nan, "DeepDXF": nan, "cross": nan,
                "chance_GF": nan, "chance_DeepDXF": nan, "chance_cross": nan}
    m = (sums[:6] / nd).tolist()
    w = normalized_weights(weighting).tolist()
    loss = w[0] * m[0] + w[1] * m[1] + cfg.cross_weight * m[2]
    return {"loss": loss, "GF": m[0], "DeepDXF": m[1], "cross": m[2],
            "chance_GF": m[3], "chance_DeepDXF": m[4], "chance_cross": m[5]}


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
    "DistInfo", "setup_distributed", "cleanup_distributed", "all_reduce_sum", "all_reduce_mean",
    "build_joint", "make_optimizer", "make_scheduler", "make_scaler", "amp_dtype", "warmup_cosine",
    "TrainState", "train_epoch", "evaluate", "joint_state", "load_joint_state",
]
