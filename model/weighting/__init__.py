"""Loss weighting of joint training, like LibMTL's: one interface (``base.py``), one short
file per method (``fixed``, ``uncertainty``, ``gradnorm``, ``dwa``), state in buffers."""
from __future__ import annotations

from typing import Optional, Sequence

from model.weighting.base import LossWeighting, normalized_weights
from model.weighting.dwa import DWAWeighting
from model.weighting.fixed import FixedWeighting
from model.weighting.gradnorm import GradNormWeighting
from model.weighting.uncertainty import UncertaintyWeighting

METHODS = ("fixed", "uncertainty", "gradnorm", "dwa")


def build_weighting(method: str, names: Sequence[str], fixed_weights: Optional[Sequence[float]] = None,
                    dwa_temperature: float = 2.0, gradnorm_alpha: float = 1.5) -> LossWeighting:
    """The weighting ``method`` (``fixed``, ``uncertainty``, ``gradnorm``, ``dwa``) for tasks ``names``."""
    n = len(names)
    if method == "fixed":
        return FixedWeighting(n, names, fixed_weights)
    if method == "uncertainty":
        return UncertaintyWeighting(n, names)
    if method == "gradnorm":
        return GradNormWeighting(n, names, alpha=gradnorm_alpha)
    if method == "dwa":
        return DWAWeighting(n, names, temperature=dwa_temperature)
    raise ValueError(f"unknown weighting {method!r}: choose fixed, uncertainty, gradnorm or dwa")


__all__ = ["METHODS", "LossWeighting", "FixedWeighting", "UncertaintyWeighting", "GradNormWeighting", "DWAWeighting",
           "build_weighting", "normalized_weights"]
