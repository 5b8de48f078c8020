"""Joint training speed and memory: fp32, fp16 + GradScaler, bf16; one DDP step.

    python bench/bench_joint.py --device cuda --steps 300          # on a GPU machine
    python bench/bench_joint.py --device cpu --steps 3 --modes fp32  # smoke run

For each precision mode: ``--steps`` joint optimizer steps on fold 0 of ``--data_dir``
(the sample corpus by default) with ``joint_train.train_epoch``, after ``--warmup``
untimed steps; prints drawings/s, steps/s, peak GPU memory, the last loss and the
skipped steps as a markdown table. ``--ddp_check`` then runs one step of the model
wrapped in DistributedDataParallel in a process group of world size 1 (NCCL on CUDA,
gloo on CPU) and checks that it matches the same step without DDP.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from config.joint_config import JointConfig  # noqa: E402
from dataset.loaders.joint import JointData  # noqa: E402
from joint_train import TrainState, build_joint, make_optimizer, train_epoch  # noqa: E402
from utils.train.amp import amp_dtype, make_grad_scaler  # noqa: E402
from utils.train.distributed import DistInfo  # noqa: E402
from utils.train.schedule import make_lr_scheduler, plan_schedule  # noqa: E402
from utils.train.splits import make_split  # noqa: E402

MODES = {"fp32": (False, "auto"), "fp16": (True, "fp16"), "bf16": (True, "bf16")}


def make_state(cfg: JointConfig, loader, device: torch.device, wrap=None) -> TrainState:
    torch.manual_seed(cfg.seed)
    obj, weighting = build_joint(cfg, loader.deepdxf_batch_size)
    obj.to(device)
    weighting.to(device)
    opt = make_optimizer(obj, weighting, cfg)
    model = wrap(obj) if wrap else obj
    sched = make_lr_scheduler(opt, plan_schedule(max(1, len(loader)), cfg.epochs, cfg.warmup_steps))
    return TrainState(obj, model, weighting, opt, sched, make_grad_scaler(device, amp_dtype(cfg.amp, cfg.amp_dtype, device)))


def fold0_train_loader(cfg: JointConfig):
    """The training loader of fold 0 of a fresh split of the joint drawings."""
    data = JointData(cfg)
    split = make_split(data.names, cfg.test_fraction, cfg.k_folds, cfg.seed, cfg.group_pattern)
    return data.fold_loaders(split, 0)[0]


def run_mode(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    amp, dtype = MODES[name]
    cfg = JointConfig(data_dir=args.data_dir, device=str(device), amp=amp, amp_dtype=dtype, k_folds=2,
                      GF_batch_size=args.GF_batch_size, weighting=args.weighting, cross_weight=args.cross_weight,
                      warmup_steps=0)
    info = DistInfo(device=device)
    train = fold0_train_loader(cfg)
    st = make_state(cfg, train, device)
    epoch, steps, drawings, row = 0, 0, 0, {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = None
    while steps < args.warmup + args.steps:
        epoch += 1
        train.set_epoch(epoch)
        if steps >= args.warmup and t0 is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0, steps0, drawings = time.time(), steps, 0
        row = train_epoch(st, train, cfg, info)
        steps += len(train)
        if t0 is not None:
            drawings += sum(len(p) for _, p in train.parts())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.time() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"mode": name, "steps": steps - steps0, "drawings_per_s": drawings / seconds,
            "steps_per_s": (steps - steps0) / seconds, "peak_MiB": peak, "loss": row.get("train_loss"),
            "skipped": st.skipped_steps, "batch": train.deepdxf_batch_size}


def ddp_check(args: argparse.Namespace, device: torch.device) -> str:
    """One step with DDP at world size 1 vs. the same step without; returns a one-line verdict."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        cfg = JointConfig(data_dir=args.data_dir, device=str(device), k_folds=2, GF_batch_size=args.GF_batch_size,
                          DeepDXF_dropout=0.0, grad_clip=0.0, warmup_steps=0)
        train = fold0_train_loader(cfg)
        train.set_epoch(1)
        train.max_steps = 1
        plain = make_state(cfg, train, device)
        ddp = make_state(cfg, train, device, wrap=lambda m: torch.nn.parallel.DistributedDataParallel(
            m, device_ids=[device.index or 0] if device.type == "cuda" else None))
        r1 = train_epoch(plain, train, cfg, DistInfo(device=device))
        r2 = train_epoch(ddp, train, cfg, DistInfo(device=device))
        diff = max((p.grad - q.grad).abs().max().item() for p, q in
                   zip(plain.objective.parameters(), ddp.objective.parameters()) if p.grad is not None)
        return (f"DDP ({backend}, world size 1): loss {r2['train_loss']:.5f} vs {r1['train_loss']:.5f} without DDP, "
                f"max gradient difference {diff:.2e}")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--GF_batch_size", type=int, default=45)
    p.add_argument("--weighting", default="uncertainty")
    p.add_argument("--cross_weight", type=float, default=0.0)
    p.add_argument("--ddp_check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; data {args.data_dir}")
    rows = []
    for mode in args.modes:
        if device.type != "cuda" and mode != "fp32":
            print(f"{mode}: skipped (autocast is CUDA-only here)")
            continue
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            print("bf16: not supported on this card")
            continue
        rows.append(run_mode(mode, args, device))
        print(rows[-1], flush=True)
    print("| mode | drawings/s | steps/s | peak MiB | DeepDXF batch | loss | skipped |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['drawings_per_s']:.1f} | {r['steps_per_s']:.2f} | {r['peak_MiB']:.0f} | "
              f"{r['batch']} | {r['loss']:.4f} | {r['skipped']} |")
    if args.ddp_check:
        print(ddp_check(args, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
