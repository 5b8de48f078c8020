"""Mixed precision in one place: which dtype, the autocast context, the GradScaler.

    dtype = amp_dtype(cfg.amp, cfg.amp_dtype, device)   # None: full fp32
    scaler = make_grad_scaler(device, dtype)            # enabled only for fp16
    with autocast(device, dtype):
        loss = model(batch)
    scaler.scale(loss).backward(); scaler.unscale_(opt); ...; scaler.step(opt); scaler.update()

``auto`` picks bf16 only where it is native: CUDA compute capability >= 8.0
(A100, H100, RTX 30xx and later). Older GPUs report bf16 as "supported" through
emulation, which is slow; they get fp16 with a GradScaler instead. On the CPU,
``--amp`` with ``auto`` stays fp32 (CPU autocast rarely pays off for these models);
``--amp_dtype bf16`` asks for CPU bf16 autocast explicitly.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

AMP_DTYPES = ("auto", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA device of compute capability >= 8.0 (bf16 tensor cores)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def amp_dtype(amp: bool, choice: str, device: torch.device | str) -> Optional[torch.dtype]:
    """The autocast dtype for ``--amp`` / ``--amp_dtype`` on ``device`` (None: no autocast).

    Args:
        amp: mixed precision asked for.
        choice: ``auto`` (CUDA: bf16 if native else fp16; CPU: off), ``bf16`` or ``fp16``.
        device: where the model runs.
    """
    if choice not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, got {choice!r}")
    device = torch.device(device)
    if not amp:
        return None
    if device.type == "cuda":
        if choice == "fp16" or (choice == "auto" and not native_bf16(device)):
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu" and choice == "bf16":
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context for None."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def make_grad_scaler(device: torch.device | str, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 autocast (bf16 and fp32 need none)."""
    device = torch.device(device)
    return torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=dtype == torch.float16)


def load_scaler_state(scaler: torch.amp.GradScaler, state: Optional[dict]) -> bool:
    """Restore a GradScaler's state if there is one; False (scaler left fresh) when the
    checkpoint holds none, e.g. a run saved without fp16 and resumed with it."""
    if not state:
        return False
    if not scaler.is_enabled():
        return False
    scaler.load_state_dict(state)
    return True


__all__ = ["AMP_DTYPES", "native_bf16", "amp_dtype", "autocast", "make_grad_scaler", "load_scaler_state"]
