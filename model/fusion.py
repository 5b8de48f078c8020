"""Fused embeddings: blocks of learned parts and floors side by side (numpy).

A search embedding of a checkpoint is a list of :class:`Block`: each block is one source
(a learned part, ``gf``, ``deepdxf`` or ``joint``, or a floor block of
:mod:`model.floors`), optionally z-scored with stored statistics (from the training
drawings), L2-normalized and scaled by its weight; :func:`fuse` puts them side by side.
A block of weight ``w`` weighs ``w**2`` against a unit block in a cosine similarity.
A z-scored block is z-scored, at search time, with the statistics of the gallery searched
(:func:`with_statistics_of`): those of the training archive lost to the gallery's own on
every other archive measured.
Training chooses the blocks for its archive (``utils/embedding_choice.py``) and stores
them in the checkpoint; retrieval rebuilds the same vectors from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from model.floors import zscore_l2

#: the learned sources a block can name (the others are ``model.floors.BLOCK_DIMS`` keys)
LEARNED_PARTS = ("gf", "deepdxf", "joint")


@dataclass
class Block:
    """One block of a fused embedding.

    Attributes:
        name: a learned part (:data:`LEARNED_PARTS`) or a floor block (``model.floors.BLOCK_DIMS``).
        weight: the block's length after L2-normalization.
        mean, std: column statistics ``[d]`` that z-score the block before normalization, or None.
    """

    name: str
    weight: float = 1.0
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint (:meth:`from_dict` reads them back)."""
        out: dict[str, Any] = {"name": self.name, "weight": float(self.weight)}
        if self.mean is not None:
            out["mean"] = np.asarray(self.mean, dtype=np.float64).tolist()
            out["std"] = np.asarray(self.std, dtype=np.float64).tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Block":
        mean, std = d.get("mean"), d.get("std")
        return cls(str(d["name"]), float(d.get("weight", 1.0)),
                   None if mean is None else np.asarray(mean, dtype=np.float64),
                   None if std is None else np.asarray(std, dtype=np.float64))

    def describe(self) -> str:
        """``name(z)xw``: ``(z)`` when it is z-scored."""
        return f"{self.name}{'(z)' if self.mean is not None else ''}x{self.weight:g}"


def fuse(parts: dict[str, np.ndarray], blocks: Sequence[Block]) -> np.ndarray:
    """``[w_1 * L2(z(b_1)) | w_2 * L2(z(b_2)) | ...]`` of raw blocks ``parts[name]: [n, d]``
    (z: the block's stored z-score, when it has one). Returns float32 ``[n, sum d]``."""
    out = []
    for b in blocks:
        x = np.asarray(parts[b.name], dtype=np.float64)
        if b.mean is not None:
            std = np.asarray(b.std, dtype=np.float64)
            x = (x - b.mean) / np.where(std > 1e-12, std, 1.0)
        out.append(b.weight * zscore_l2(x, None))
    return np.concatenate(out, axis=1).astype(np.float32)


def with_statistics_of(blocks: Sequence[Block], parts: Optional[dict[str, np.ndarray]]) -> list[Block]:
    """``blocks`` with each z-scored block's statistics replaced by those of ``parts[name]``
    (``[m, d]``, e.g. the searched gallery's raw blocks): the z-score of a floor is the
    gallery's, not the training archive's. ``parts`` None or of fewer than 2 rows: the
    z-scored blocks are only L2-normalized (as :func:`model.floors.zscore_l2` does)."""
    out = []
    for b in blocks:
        if b.mean is None:
            out.append(b)
        elif parts is None or len(parts[b.name]) < 2:
            out.append(Block(b.name, b.weight))
        else:
            out.append(Block(b.name, b.weight, *block_statistics(parts[b.name])))
    return out


def block_statistics(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std ``[d]`` of raw block rows ``[m, d]`` (the z-score a :class:`Block` stores)."""
    x = np.asarray(raw, dtype=np.float64)
    return x.mean(0), x.std(0)


def describe_blocks(blocks: Sequence[Block]) -> str:
    """``joint x1 + layout_rot(z) x2`` style name of a fused embedding."""
    return " + ".join(b.describe() for b in blocks)


__all__ = ["LEARNED_PARTS", "Block", "fuse", "with_statistics_of", "block_statistics", "describe_blocks"]
