"""Checkpoints of the toolkit: one format for the GF, DeepDXF and joint models.

A checkpoint is a ``torch.save`` dict::

    {"format_version": CHECKPOINT_FORMAT, "toolkit": "dxf-similarity", "kind": "GF",
     "config": {...plain config dict...}, "state": {...state dicts...}, **extra}

``state`` holds the model's (and optionally optimizer/stopper) state dicts; ``extra``
carries anything else (epoch, fold, val_loss, ...).
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1
TOOLKIT_TAG = "dxf-similarity"
KINDS = ("GF", "DeepDXF", "joint")
_RESERVED = {"format_version", "toolkit", "kind", "config", "state"}


class CheckpointError(ValueError):
    """A checkpoint is missing, not ours, of another format version or another model."""


def save_checkpoint(
    path: str | Path, kind: str, config: dict[str, Any], state: dict[str, Any], **extra: Any
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then ``os.replace``).

    Args:
        path: target file; parent folders are created.
        kind: ``"GF"``, ``"DeepDXF"`` or ``"joint"``.
        config: the model's config as a plain dict (``config.cli.config_to_dict``).
        state: state dicts, e.g. ``{"model": model.state_dict()}``.
        **extra: more plain values stored at the top level (epoch, fold, val_loss...).
    Returns:
        the path written.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
    clash = _RESERVED.intersection(extra)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} are reserved checkpoint keys")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": CHECKPOINT_FORMAT,
        "toolkit": TOOLKIT_TAG,
        "kind": kind,
        "config": dict(config),
        "state": state,
        **extra,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _torch_load(path: Path) -> Any:
    """Load with weights_only=True (plain types and tensors); fall back to a full
    unpickle for our own files that hold other objects (numpy scalars...)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str | Path, expect_kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, tensors on the CPU.

    Args:
        path: the checkpoint file.
        expect_kind: if given, the ``kind`` it must have (``"GF"``, ``"DeepDXF"``, ``"joint"``).
    Raises:
        CheckpointError: the file is missing, unreadable, not a checkpoint of this
            toolkit, of another ``format_version``, or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train a model first with "
            "python GF_main.py / DeepDXF_train.py / joint_main.py"
        )
    try:
        ckpt = _torch_load(path)
    except Exception as err:  # torch raises many types for a foreign/corrupt file
        raise CheckpointError(
            f"{path} is not a checkpoint of this toolkit (cannot be read by torch.load: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "kind" not in ckpt:
        raise CheckpointError(
            f"{path} is not a checkpoint of this toolkit (no format_version/kind: "
            "was it written by another program?)"
        )
    version = ckpt["format_version"]
    if version != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format_version {version}, this toolkit reads version "
            f"{CHECKPOINT_FORMAT}: retrain the model with this version"
        )
    if expect_kind is not None and ckpt["kind"] != expect_kind:
        raise CheckpointError(
            f"{path} is a {ckpt['kind']} checkpoint, but a {expect_kind} checkpoint is needed here"
        )
    return ckpt


__all__ = ["CHECKPOINT_FORMAT", "KINDS", "CheckpointError", "save_checkpoint", "load_checkpoint"]
