"""Checkpoints of the toolkit: the one reader and writer, for the GF, DeepDXF and joint models.

A checkpoint is a ``torch.save`` dict of tensors and plain values::

    {"format_version": CHECKPOINT_FORMAT, "toolkit": "dxf-similarity", "kind": "GF",
     "config": {...plain config dict...}, "state": {...state dicts...}, **extra}

``state`` holds the models' (and optionally optimizer/stopper) state dicts; ``extra``
carries anything else (epoch, fold, val_loss, ...). What ``state`` holds per kind:

- ``GF`` / ``DeepDXF``: ``model`` (the model's state dict);
- ``joint``: ``gf``, ``deepdxf``, ``weighting`` (and ``heads`` when the cross-model
  term is on); ``config`` is the flat ``JointConfig`` dict.

Files are read with ``torch.load(weights_only=True)`` only: a checkpoint never
unpickles code. :func:`save_checkpoint` stores numpy scalars as Python numbers and
numpy arrays as tensors, so everything it writes reads back that way.
:func:`load_trained_models` rebuilds the models of any kind, ready to embed.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from config.cli import config_from_dict
from config.GF_config import SAVED_CONFIG_FALLBACKS
from config.joint_config import JointConfig
from dataset.files import atomic_write
from model.DeepDXF_model import DeepDXFModel, deepdxf_model_from_config
from model.GF_model import DenseGraphMatching, gf_model_from_config

CHECKPOINT_FORMAT = 1
TOOLKIT_TAG = "dxf-similarity"
KINDS = ("GF", "DeepDXF", "joint")
_RESERVED = {"format_version", "toolkit", "kind", "config", "state"}


class CheckpointError(ValueError):
    """A checkpoint is missing, not ours, of another format version or another model."""


def _storable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and numpy arrays as tensors (recursively),
    so that ``torch.load(weights_only=True)`` reads it back."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return type(value)((k, _storable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_storable(v) for v in value)
    return value


def save_checkpoint(
    path: str | Path, kind: str, config: dict[str, Any], state: dict[str, Any], **extra: Any
) -> Path:
    """Write a checkpoint atomically (``dataset.files.atomic_write``).

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
    payload = _storable({
        "format_version": CHECKPOINT_FORMAT,
        "toolkit": TOOLKIT_TAG,
        "kind": kind,
        "config": dict(config),
        "state": state,
        **extra,
    })
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _why_unreadable(err: Exception) -> str:
    """The line of a ``torch.load`` error that says what is wrong (e.g. the unsupported global)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.split(" was not an allowed global")[0].removeprefix("Error: ")
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def load_checkpoint(path: str | Path, expect_kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, tensors on the CPU.

    Only tensors and plain Python values are read (``torch.load(weights_only=True)``).

    Args:
        path: the checkpoint file.
        expect_kind: if given, the ``kind`` it must have (``"GF"``, ``"DeepDXF"``, ``"joint"``).
    Raises:
        CheckpointError: the file is missing, not a torch file, holds Python objects other
            than tensors and plain values, is not a checkpoint of this toolkit, is of another
            ``format_version``, or of another kind. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train a model first with "
            "python GF_main.py / DeepDXF_train.py / joint_main.py"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a checkpoint of this toolkit: it holds Python objects other than tensors "
            f"and plain values ({_why_unreadable(err)}); checkpoints are read without running "
            "pickled code, so a file of another program is refused"
        ) from err
    except Exception as err:  # torch raises many types for a file that is not a torch file
        raise CheckpointError(
            f"{path} is not a checkpoint of this toolkit (torch.load cannot read it: {_why_unreadable(err)})"
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
    if ckpt["kind"] not in KINDS:
        raise CheckpointError(f"{path} is a checkpoint of unknown kind {ckpt['kind']!r}; expected one of {KINDS}")
    if expect_kind is not None and ckpt["kind"] != expect_kind:
        raise CheckpointError(
            f"{path} is a {ckpt['kind']} checkpoint, but a {expect_kind} checkpoint is needed here"
        )
    return ckpt


def joint_config_from_checkpoint(ckpt: dict[str, Any]) -> JointConfig:
    """The ``JointConfig`` stored (flat) in a loaded joint checkpoint; a field it lacks takes
    its value from before the field existed (``SAVED_CONFIG_FALLBACKS``)."""
    return config_from_dict(JointConfig, {**SAVED_CONFIG_FALLBACKS, **ckpt["config"]})


@dataclass
class TrainedModels:
    """The models of one checkpoint, in eval mode.

    Attributes:
        kind: ``"GF"``, ``"DeepDXF"`` or ``"joint"``.
        gf: the GF model (None for a DeepDXF checkpoint).
        deepdxf: the DeepDXF model (None for a GF checkpoint).
        config: the checkpoint's config dict (flat ``JointConfig`` fields for a joint run).
        path: the checkpoint file.
        extra: the checkpoint's other top-level entries (``search_embedding``, ``fold``, ...).
    """

    kind: Literal["GF", "DeepDXF", "joint"]
    gf: Optional[DenseGraphMatching]
    deepdxf: Optional[DeepDXFModel]
    config: dict[str, Any]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


# what the models of each kind are stored as in ``state``
_STATE_KEYS = {"GF": {"gf": "model"}, "DeepDXF": {"deepdxf": "model"}, "joint": {"gf": "gf", "deepdxf": "deepdxf"}}


def load_trained_models(path: str | Path, device: str | torch.device = "cpu") -> TrainedModels:
    """Rebuild the model(s) of a GF, DeepDXF or joint checkpoint, in eval mode on ``device``.

    Args:
        path: a checkpoint written by one of the trainers.
        device: where the models go.
    Raises:
        CheckpointError: the file is not a readable checkpoint (see :func:`load_checkpoint`),
            lacks a model's state, or its weights do not fit the model its config describes
            (written by another version of the model code). The message names the file.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    kind, config, state = ckpt["kind"], ckpt["config"], ckpt["state"]
    builders = {"gf": gf_model_from_config, "deepdxf": deepdxf_model_from_config}
    models: dict[str, torch.nn.Module | None] = {"gf": None, "deepdxf": None}
    for model_name, key in _STATE_KEYS[kind].items():
        if not isinstance(state, dict) or key not in state:
            raise CheckpointError(f"{path}: this {kind} checkpoint holds no state[{key!r}] (the {model_name} model)")
        try:
            model = builders[model_name](config)
            model.load_state_dict(state[key])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            first = str(err).splitlines()[0][:200] if str(err) else ""
            raise CheckpointError(
                f"{path}: the {model_name} model cannot be rebuilt from this {kind} checkpoint "
                f"({type(err).__name__}: {first}); was it written by another version of the model code?"
            ) from err
        models[model_name] = model.to(device).eval()
    extra = {k: v for k, v in ckpt.items() if k not in _RESERVED}
    return TrainedModels(kind=kind, gf=models["gf"], deepdxf=models["deepdxf"], config=dict(config), path=path,
                         extra=extra)


__all__ = [
    "CHECKPOINT_FORMAT", "KINDS", "CheckpointError", "TrainedModels", "save_checkpoint", "load_checkpoint",
    "load_trained_models", "joint_config_from_checkpoint",
]
