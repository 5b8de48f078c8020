"""One epoch of joint training, evaluation, and the joint checkpoint.

The training step, in the spirit of nanoGPT's ``train.py``::

    for each window of accumulation_steps micro-batches:
        for each micro-batch (the same drawings for both models):
            model.require_backward_grad_sync = last micro-step    # DDP only
            with autocast:  terms = model(batch)                   # GF, DeepDXF, cross, group
            total = weighting([GF, DeepDXF]) + cross_weight * cross + group_weight * group
            scaler.scale(total / micro_batches_in_window).backward()
        scaler.unscale_(optimizer); clip each model's gradients
        skip the step (and count it) if a loss or a gradient norm is NaN/inf
        scaler.step(optimizer); scaler.update(); scheduler.step()

One optimizer: a parameter group per model (``GF``, ``DeepDXF``), one for the
cross-model heads (``heads``, when the term is on) and one for the loss-weight
parameters (``weights``, no weight decay). Logged losses are the unscaled values.
Metrics are named dicts, summed over ranks by name. The fold loop around these
functions is ``utils/train_loop.py``'s :func:`fit_fold` (called by joint_main.py).

``utils.checkpoint.load_trained_models(path)`` rebuilds the GF and DeepDXF models of a
joint checkpoint (what SimDeepDXF.py loads).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from config.joint_config import JointConfig
from model.DeepDXF_loss import nt_xent_chance
from model.DeepDXF_model import build_deepdxf_model
from model.GF_model import build_gf_model
from model.joint_dataset import VAL_SEED, JointLoader
from model.joint_loss import TASKS, JointBatch, JointObjective, clip_chance, group_chance
from utils import amp as amp_util
from utils.distributed import DistInfo, all_reduce_mean, all_reduce_sum, reduce_sums
from utils.distributed import setup_distributed as _setup_distributed
from utils.dynamic_weight import LossWeighting, UncertaintyWeighting, build_weighting, normalized_weights
from utils.GF_utils import gf_chance_level
from utils.schedule import SchedulePlan, make_lr_scheduler, plan_schedule


def setup_distributed(cfg: JointConfig) -> DistInfo:
    """Join the process group under a launcher (``WORLD_SIZE`` > 1) with ``cfg.device`` and
    ``cfg.dist_backend``; see ``utils.distributed.setup_distributed``."""
    return _setup_distributed(cfg.device, cfg.dist_backend)


# ----------------------------------------------------------------------------- building

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


#: the loss terms added with a fixed weight after the weighted GF and DeepDXF losses
EXTRA_TERMS = ("cross", "group")


def extra_weights(cfg: JointConfig) -> dict[str, float]:
    """The fixed weight of each of :data:`EXTRA_TERMS` (0 = the term is off)."""
    return {"cross": cfg.cross_weight, "group": cfg.group_weight}


def _extra_sum(terms: dict[str, Any], weights: dict[str, float]) -> Any:
    """``sum_t weight_t * terms[t]`` over the terms that are on (0 when none)."""
    return sum((w * terms[t] for t, w in weights.items() if w > 0), 0.0)


def schedule_plan(cfg: JointConfig, steps_per_epoch: int) -> SchedulePlan:
    """The fold's optimizer steps and warm-up (``min(warmup_steps, 5 % of the run)``)."""
    return plan_schedule(steps_per_epoch, cfg.epochs, cfg.warmup_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: JointConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine over the run's optimizer steps (all groups alike, the loss weights excepted)."""
    return make_lr_scheduler(optimizer, schedule_plan(cfg, steps_per_epoch), constant_groups=("weights",))


def amp_dtype(cfg: JointConfig, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``--amp``/``--amp_dtype`` on ``device`` (``utils.amp.amp_dtype``)."""
    return amp_util.amp_dtype(cfg.amp, cfg.amp_dtype, device)


def make_scaler(cfg: JointConfig, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 autocast."""
    return amp_util.make_grad_scaler(device, amp_dtype(cfg, device))


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

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, scaler and counters (the models are saved by ``joint_state``)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore :meth:`state_dict`. Returns False when the scaler stayed fresh (the
        checkpoint holds no scaler state, e.g. saved without fp16)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.skipped_steps = int(state.get("step", 0)), int(state.get("skipped_steps", 0))
        return amp_util.load_scaler_state(self.scaler, state.get("scaler"))


def build_fold(cfg: JointConfig, train_loader: JointLoader, info: DistInfo, fold: int) -> TrainState:
    """Model (DDP-wrapped under torchrun), weighting, optimizer, schedule and scaler of one fold.

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
    steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulation_steps)
    return TrainState(objective, model, weighting, optimizer, make_scheduler(optimizer, cfg, steps_per_epoch),
                      make_scaler(cfg, device))


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
    device = info.device
    dtype = amp_dtype(cfg, device)
    acc = cfg.accumulation_steps
    n = len(loader)
    model.train()
    weighting.train()
    extra = extra_weights(cfg)
    sums = dict.fromkeys(("GF", "DeepDXF", *EXTRA_TERMS, "shown", "objective", "grad_norm_GF", "grad_norm_DeepDXF",
                          "micro_batches", "drawings", "steps", "skipped"), 0.0)
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
        with amp_util.autocast(device, dtype):
            terms = model(batch, gen)
        losses = torch.stack([terms[t].float() for t in TASKS])
        if weighting.needs_task_gradients and last:
            # under fp16 the task gradients go through the scaled loss (no underflow), then are unscaled
            weighting.observe(losses, [list(obj.gf.parameters()), list(obj.deepdxf.parameters())],
                              reduce=(lambda t: all_reduce_mean(t, info)) if info.enabled else None,
                              grad_scale=st.scaler.get_scale() if st.scaler.is_enabled() else 1.0)
        total = weighting(losses) + _extra_sum(terms, extra)
        bad = bad or not bool(torch.isfinite(total))
        st.scaler.scale(total / window).backward()
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
        g_gf = float(_grad_norm(list(obj.gf.parameters()), cfg.grad_clip))
        g_dx = float(_grad_norm(list(obj.deepdxf.parameters()), cfg.grad_clip))
        if obj.heads is not None:
            _grad_norm(list(obj.heads.parameters()), cfg.grad_clip)
        flag = torch.tensor([float(bad or not (math.isfinite(g_gf) and math.isfinite(g_dx)))])
        if info.enabled:
            flag = all_reduce_sum(flag.to(device), info).cpu()
        if float(flag) > 0:
            st.optimizer.zero_grad(set_to_none=True)
            st.scaler.update()
            sums["skipped"] += 1
        else:
            st.scaler.step(st.optimizer)
            st.scaler.update()
            weighting.after_optimizer_step()
            sums["grad_norm_GF"] += g_gf
            sums["grad_norm_DeepDXF"] += g_dx
            sums["steps"] += 1
            st.scheduler.step()
        st.step += 1
    seconds = time.time() - t0
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
    dtype = amp_dtype(cfg, device)
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
            gen = torch.Generator(device=device).manual_seed(loader.view_generator_seed(batch.part))
            with amp_util.autocast(device, dtype):
                terms = objective(batch, gen)
            b = batch.n_drawings
            values = {**{t: float(terms[t]) for t in ("GF", "DeepDXF", *EXTRA_TERMS)},
                      "chance_GF": gf_chance_level(batch.gf_graphs[2].cpu()) if b else 0.0,
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
    "setup_distributed", "build_joint", "make_optimizer", "schedule_plan", "make_scheduler", "amp_dtype",
    "make_scaler", "TrainState", "build_fold", "EXTRA_TERMS", "extra_weights", "train_epoch", "evaluation_batches", "evaluate", "explain_loss",
    "joint_state", "load_joint_state",
]


def _run_as_script() -> int:
    """``python joint_train.py``: this file is a module; say what to run instead (exit 2)."""
    import sys

    print("joint_train.py is a module (one epoch of joint training, evaluation, checkpoints), not a command.\n"
          "Train with:  python joint_main.py --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_run_as_script())
