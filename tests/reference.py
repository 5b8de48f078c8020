"""Slow, obvious reference implementations that tests hold the toolkit's math against."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def standardized_blocks(blocks: Sequence[np.ndarray], fit_rows: Optional[Sequence[int]] = None) -> np.ndarray:
    """Each column z-scored with the mean and (population) std of ``fit_rows`` (all rows when
    None; a zero std counts as 1), then each block's rows scaled to unit length, blocks side
    by side; loops instead of broadcasting."""
    out = []
    for block in blocks:
        b = np.asarray(block, dtype=np.float64)
        fit = b if fit_rows is None else b[list(fit_rows)]
        z = np.empty_like(b)
        for j in range(b.shape[1]):
            col = [float(v) for v in fit[:, j]]
            mean = sum(col) / len(col)
            std = math.sqrt(sum((v - mean) ** 2 for v in col) / len(col))
            for i in range(b.shape[0]):
                z[i, j] = (b[i, j] - mean) / (std if std > 1e-12 else 1.0)
        for i in range(b.shape[0]):
            norm = math.sqrt(sum(v * v for v in z[i]))
            z[i] = z[i] / norm if norm > 1e-12 else z[i]
        out.append(z)
    return np.concatenate(out, axis=1)


def average_precision(ranked_relevance: Sequence[bool]) -> float:
    """AP of one ranking over its whole length: the mean over the positives of the precision
    at each positive's rank."""
    hits, total = 0, 0.0
    for rank, rel in enumerate(ranked_relevance, 1):
        if rel:
            hits += 1
            total += hits / rank
    return total / hits if hits else float("nan")
