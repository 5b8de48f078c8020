"""The joint training step's mechanics, each pinned by what it must produce: the learning
rate at every optimizer step, clipping in unscaled units under an enabled GradScaler,
the scaler's state across a resume, GradNorm's per-model gradient norms, and DDP's
all-reduce only on the last micro-step of an accumulation window."""
import copy
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from config.joint_config import JointConfig
from joint_train import TrainState, build_fold, build_joint, make_optimizer, train_epoch
from tests.synthetic import fold_loaders, write_synthetic_joint_corpus
from tests.test_joint_train import corpus, one_thread  # noqa: F401 (fixtures: the same tiny corpus, one thread)
from utils.train.checkpoint import load_checkpoint, save_checkpoint
from utils.train.distributed import DistInfo
from utils.train.amp import make_grad_scaler
from utils.train.schedule import SchedulePlan, make_lr_scheduler, plan_schedule


def _cfg(root, **kw) -> JointConfig:
    base = dict(data_dir=str(root), k_folds=2, GF_batch_size=3, GF_hidden=16, GF_proj_dim=16,
                DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=16, DeepDXF_size_dim=4,
                DeepDXF_dropout=0.0, cross_weight=0.5, cross_dim=8, weighting="fixed", warmup_steps=0,
                GF_layout_features=False)
    base.update(kw)
    return JointConfig(**base)


def _loader(cfg, rank: int = 0, world: int = 1):
    train, _ = fold_loaders(cfg, 0, rank, world)
    train.set_epoch(1)
    return train


def _state(cfg, loader, scaler=None, scheduler_plan=None) -> TrainState:
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, loader.deepdxf_batch_size)
    opt = make_optimizer(obj, weighting, cfg)
    sched = make_lr_scheduler(opt, scheduler_plan) if scheduler_plan else make_lr_scheduler(opt, plan_schedule(1, cfg.epochs, cfg.warmup_steps))
    return TrainState(obj, obj, weighting, opt, sched, scaler or make_grad_scaler(torch.device("cpu"), None))


def _norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads)))


# ----------------------------------------------------------------------------- the learning rate

def _expected_multiplier(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then half a cosine to 0 at ``total`` (written
    out here, not taken from utils/schedule.py)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def test_learning_rate_follows_warmup_then_cosine_at_every_optimizer_step(corpus):
    cfg = _cfg(corpus, GF_batch_size=1, max_steps_per_epoch=5, weighting="uncertainty", lr=1e-3, GF_lr=2e-3,
               weight_lr=0.05)
    train = _loader(cfg)
    assert len(train) == 5
    plan = SchedulePlan(steps_per_epoch=5, epochs=2, total_steps=10, warmup_steps=3, configured_warmup=3)
    st = _state(cfg, train, scheduler_plan=plan)
    seen: list[dict[str, float]] = []
    st.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append({g["name"]: g["lr"] for g in opt.param_groups}))
    rows = []
    for epoch in (1, 2):
        train.set_epoch(epoch)
        rows.append(train_epoch(st, train, cfg, DistInfo()))
    assert len(seen) == 10 and st.step == 10
    peak = {"GF": 2e-3, "DeepDXF": 1e-3, "heads": 1e-3}
    for k, lrs in enumerate(seen):
        f = _expected_multiplier(k, 3, 10)
        for name, base in peak.items():
            assert lrs[name] == pytest.approx(base * f, rel=1e-9, abs=1e-15), (k, name)
        assert lrs["weights"] == pytest.approx(0.05)  # the loss weights keep theirs
    # the logged lr is the one after the epoch's last step
    assert rows[0]["lr"] == pytest.approx(1e-3 * _expected_multiplier(5, 3, 10))
    assert rows[0]["lr_GF"] == pytest.approx(2e-3 * _expected_multiplier(5, 3, 10))
    assert rows[1]["lr"] == pytest.approx(0.0, abs=1e-15)  # the run's end: decayed to 0


def test_the_fold_schedule_spans_epochs_times_steps_per_epoch(corpus):
    from joint_train import build_fold

    cfg = _cfg(corpus, GF_batch_size=1, max_steps_per_epoch=4, accumulation_steps=2, epochs=40, warmup_steps=3)
    train = _loader(cfg)
    st = build_fold(cfg, train, DistInfo(), fold=0)
    # 2 optimizer steps per epoch x 40 epochs = 80 steps, warm-up min(3, 5 % of 80 = 4) = 3
    lrs = []
    for _ in range(80):
        lrs.append(st.optimizer.param_groups[0]["lr"])
        st.optimizer.step()
        st.scheduler.step()
    for k, lr in enumerate(lrs):
        assert lr == pytest.approx(cfg.GF_lr * _expected_multiplier(k, 3, 80), abs=1e-12), k


# ----------------------------------------------------------------------------- GradScaler

def test_clipping_under_an_enabled_grad_scaler_is_in_unscaled_units(corpus):
    cfg = _cfg(corpus, max_steps_per_epoch=1, grad_clip=1e-3)
    train = _loader(cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 12)
    st = _state(cfg, train, scaler=scaler)
    assert st.scaler.is_enabled() and st.scaler.get_scale() == 4096.0
    # the unscaled gradient norms of this batch, by hand (same weights, same views)
    ref = copy.deepcopy(st.objective)
    batch = next(iter(train))
    t = ref(batch)  # the loader drew the views
    (t["GF"] + t["DeepDXF"] + 0.5 * t["cross"] + t["group"]).backward()
    want_gf, want_dx = _norm(ref.gf), _norm(ref.deepdxf)
    row = train_epoch(st, train, cfg, DistInfo())
    assert row["skipped_steps"] == 0
    # the logged norms (before clipping) are unscaled ...
    assert row["grad_norm_GF"] == pytest.approx(want_gf, rel=1e-3)
    assert row["grad_norm_DeepDXF"] == pytest.approx(want_dx, rel=1e-3)
    assert want_gf > 1e-2 and want_dx > 1e-2
    # ... and each model's gradients were clipped to the clip value in unscaled units
    for module in (st.objective.gf, st.objective.deepdxf):
        assert _norm(module) == pytest.approx(1e-3, rel=1e-3)


def _moved_scaler() -> torch.amp.GradScaler:
    """An enabled CPU GradScaler after one overflow step (scale halved, growth tracker reset)
    and one good step."""
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0, growth_interval=3)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    for value in (float("inf"), 1.0):
        opt.zero_grad()
        scaler.scale((p * value).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 512.0 and scaler._get_growth_tracker() == 1
    return scaler


def test_resume_restores_a_moved_grad_scaler(corpus, tmp_path):
    cfg = _cfg(corpus)
    train = _loader(cfg)
    st = _state(cfg, train, scaler=_moved_scaler())
    path = save_checkpoint(tmp_path / "last.pth", "joint", {}, {"training": st.state_dict()})
    saved = load_checkpoint(path)["state"]["training"]
    fresh = _state(cfg, train, scaler=torch.amp.GradScaler("cpu", enabled=True, growth_interval=3))
    assert fresh.scaler.get_scale() == 65536.0
    assert fresh.load_state_dict(saved) is True
    assert fresh.scaler.get_scale() == 512.0
    assert fresh.scaler._get_growth_tracker() == 1
    assert fresh.scaler.state_dict() == st.scaler.state_dict()


def test_the_joint_fold_saves_and_restores_its_training_state(corpus, tmp_path):
    """joint_train's fold: ``last.pth`` holds the fold's TrainState (optimizer, scheduler, scaler,
    counters), and what it holds is what a fresh fold's state takes back."""
    import joint_main

    cfg = _cfg(corpus)
    argv = ["--data_dir", str(corpus), "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir",
            str(tmp_path / "ckpt"), "--run_name", "st", "--fold", "0", "--epochs", "2", "--stop_after_epochs", "1",
            "--val_retrieval", "0", *[f"--{k}={getattr(cfg, k)}" for k in (
                "k_folds", "GF_batch_size", "GF_hidden", "GF_proj_dim", "DeepDXF_d_model", "DeepDXF_heads",
                "DeepDXF_layers", "DeepDXF_proj_dim", "DeepDXF_size_dim", "cross_weight", "cross_dim", "weighting",
                "warmup_steps")], "--no-GF_layout_features"]
    assert joint_main.main(argv)["interrupted"]
    saved = load_checkpoint(tmp_path / "ckpt" / "st" / "last.pth")["state"]["training"]
    assert {"optimizer", "scheduler", "scaler", "step", "skipped_steps"} <= set(saved)
    assert saved["step"] > 0 and saved["scheduler"]["last_epoch"] == saved["step"]
    train, _ = fold_loaders(cfg)
    st = build_fold(cfg, train, DistInfo(), 0)
    st.scaler = _moved_scaler()
    fresh = build_fold(cfg, train, DistInfo(), 0)
    fresh.scaler = torch.amp.GradScaler("cpu", enabled=True)
    assert fresh.load_state_dict(st.state_dict()) is True
    assert fresh.scaler.get_scale() == 512.0 and fresh.scaler._get_growth_tracker() == 1


# ----------------------------------------------------------------------------- GradNorm

def test_gradnorm_sees_each_models_own_loss_gradient_norm(corpus):
    cfg = _cfg(corpus, weighting="gradnorm", max_steps_per_epoch=2)
    train = _loader(cfg)
    st = _state(cfg, train)
    observe = st.weighting.observe
    by_hand: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []

    def checking_observe(losses, task_params, *, reduce=None, grad_scale=1.0):
        norms = []
        for loss, module in ((losses[0], st.objective.gf), (losses[1], st.objective.deepdxf)):
            params = [p for p in module.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
        by_hand.append(torch.stack(norms).detach())
        observe(losses, task_params, reduce=reduce, grad_scale=grad_scale)
        seen.append(st.weighting.last_grad_norms.detach().clone())

    st.weighting.observe = checking_observe
    train_epoch(st, train, cfg, DistInfo())
    assert len(seen) == 2
    for want, got in zip(by_hand, seen):
        assert bool((want > 0).all())
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-8), (got, want)


# ----------------------------------------------------------------------------- DDP

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, port: int, root, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from joint_train import setup_distributed

    cfg = _cfg(root, GF_batch_size=1, accumulation_steps=2, max_steps_per_epoch=8, grad_clip=0.0)
    info = setup_distributed(cfg.device, cfg.dist_backend)
    train = _loader(cfg, info.rank, info.world_size)
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, train.deepdxf_batch_size)
    model = torch.nn.parallel.DistributedDataParallel(obj)
    micro = [-1]
    calls: list[int] = []
    forward = obj.forward

    def counting_forward(*args, **kwargs):
        micro[0] += 1
        return forward(*args, **kwargs)

    obj.forward = counting_forward

    def hook(state, bucket):
        calls.append(micro[0])
        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, hook)
    opt = make_optimizer(obj, weighting, cfg)
    sched = make_lr_scheduler(opt, plan_schedule(1, cfg.epochs, cfg.warmup_steps))
    st = TrainState(obj, model, weighting, opt, sched, make_grad_scaler(torch.device("cpu"), None))
    train_epoch(st, train, cfg, info)
    torch.save({"calls": calls, "micro_batches": micro[0] + 1}, out / f"allreduce{rank}.pt")
    dist.destroy_process_group()


def test_ddp_all_reduces_only_on_the_last_micro_step_of_a_window(tmp_path):
    write_synthetic_joint_corpus(tmp_path, 30, seed=1, max_len=40)
    mp.spawn(_allreduce_worker, args=(_free_port(), tmp_path, tmp_path), nprocs=WORLD, join=True)
    for r in range(WORLD):
        got = torch.load(tmp_path / f"allreduce{r}.pt", weights_only=True)
        n = got["micro_batches"]
        assert n == 3  # 3 micro-batches on each rank: a window of 2, then a short one of 1
        assert got["calls"], "no all-reduce at all"
        assert sorted(set(got["calls"])) == [1, 2]  # micro-steps 0-based: the last of each window
        assert got["calls"].count(1) == got["calls"].count(2)  # every bucket once per window
