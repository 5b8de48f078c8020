"""DistributedDataParallel plumbing of the trainers: who am I, join, reduce, leave.

Launched by ``torchrun`` (or any launcher that sets ``WORLD_SIZE``/``RANK`` and
``MASTER_ADDR``/``MASTER_PORT``), a trainer calls::

    info = setup_distributed(device="cuda")     # DistInfo(rank, world_size, local_rank, device)
    ...
    sums = all_reduce_sum(torch.tensor([...]), info)
    cleanup_distributed(info)                   # barrier, then destroy the process group

A single process gets ``DistInfo(world_size=1)`` and every helper is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: rank, world size, local rank, device (world size 1: no DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank_from_env(env: Mapping[str, str], rank: int, device_count: int) -> int:
    """The local rank (GPU index on this node): ``LOCAL_RANK`` (torchrun), else
    ``SLURM_LOCALID`` (srun), else ``rank % device_count`` (0 without devices)."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if env.get(key, "").strip():
            return int(env[key])
    return rank % device_count if device_count > 0 else 0


def setup_distributed(device: str | torch.device = "cpu", backend: str = "auto") -> DistInfo:
    """Join the process group when ``WORLD_SIZE`` > 1, else describe a single process.

    Args:
        device: the configured device; ``cuda`` becomes ``cuda:<local rank>``.
        backend: ``auto`` = nccl on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(device)
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    local_rank = local_rank_from_env(os.environ, rank, n_gpus)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=chosen, init_method="env://")
    return DistInfo(rank, world, local_rank, device)


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group: a barrier first, so that no rank tears the group down
    while rank 0 still writes the summary and checkpoints (and then talks to the others)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``t`` over ranks (``t`` itself in a single process)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``t`` over ranks."""
    return all_reduce_sum(t, info) / info.world_size


def reduce_sums(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum each named value over ranks (float64; every rank must pass the same keys)."""
    if not info.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    t = all_reduce_sum(t, info).cpu()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast_object(value: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (picklable objects)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(value: Any, info: DistInfo) -> Optional[list[Any]]:
    """Every rank's ``value`` as a list on rank 0 (None on the others); ``[value]`` alone."""
    if not info.enabled:
        return [value]
    out: Optional[list[Any]] = [None] * info.world_size if info.is_main else None
    dist.gather_object(value, out, dst=0)
    return out


__all__ = ["DistInfo", "local_rank_from_env", "setup_distributed", "cleanup_distributed", "all_reduce_sum",
           "all_reduce_mean", "reduce_sums", "broadcast_object", "gather_objects"]
