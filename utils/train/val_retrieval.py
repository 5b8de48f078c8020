"""Retrieval on the validation drawings during training, beside the raw GF floor.

A falling validation loss does not mean a better similarity embedding: on held-out
lead-frame revisions the joint embedding got *worse* from 10 to 50 epochs while the
loss kept falling (``bench/learn_ablation.md``). So every validation pass can also
measure what the embedding is for: the validation drawings that share a group
(``--group_pattern``: pieces and revisions of one drawing) with another validation
drawing are queries, every sampled validation drawing is the gallery, and the mAP of
the joint embedding (``SimDeepDXF.py --embedding joint``) is logged beside the mAP of
the raw GF matrices (the non-learned floor the default embedding builds on) on the
same drawings.

The drawings are a seeded sample of at most ``max_drawings`` validation drawings,
fixed for the run, taking whole groups with >= 2 members first. When no group has two
members among them (an archive without pieces or revisions), there is nothing to
measure and the metrics are NaN.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from config.GF_config import GF_BASE_FEATURES
from model.DeepDXF_model import embed_sequences
from model.GF_model import embed_graphs
from utils.embedders import joint_vectors
from utils.retrieval import raw_gf_embedding, retrieval_metrics


def pick_validation_drawings(indices: Sequence[int], groups: Sequence[str], max_drawings: int,
                             seed: int = 0) -> list[int]:
    """The drawings (of ``indices``) the retrieval check uses: whole groups with >= 2
    members among ``indices``, in a seeded order, then the others, up to
    ``max_drawings``. ``groups``: the group of every joint drawing (indexed by them).
    Returns sorted indices (empty when no group has two members)."""
    by_group: dict[str, list[int]] = {}
    for i in indices:
        by_group.setdefault(groups[int(i)], []).append(int(i))
    multi = [g for g, members in by_group.items() if len(members) >= 2]
    if not multi or max_drawings < 2:
        return []
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k in rng.permutation(len(multi)):
        members = by_group[multi[k]]
        if len(chosen) + len(members) > max_drawings:
            continue
        chosen.extend(members)
    singles = [i for g, members in by_group.items() if len(members) == 1 for i in members]
    room = max_drawings - len(chosen)
    if room > 0 and singles:
        chosen.extend(int(singles[k]) for k in rng.permutation(len(singles))[:room])
    return sorted(chosen)


def validation_retrieval(objective: Any, dataset: Any, names: Sequence[str], groups: Sequence[str],
                         drawings: Sequence[int]) -> dict[str, float]:
    """``retrieval_mAP`` of the joint embedding and ``floor_mAP`` of the raw GF matrices
    over ``drawings`` (joint-drawing indices of ``dataset``, a ``JointDataset``); NaN
    when there are fewer than two drawings or no query.

    Args:
        objective: the joint model (``JointObjective``: ``.gf`` and ``.deepdxf``).
        names, groups: name and group of every joint drawing.
    """
    nan = {"retrieval_mAP": math.nan, "floor_mAP": math.nan}
    if len(drawings) < 2:
        return nan
    graphs = [dataset.graph(int(i)) for i in drawings]
    feats = np.stack([f for f, _ in graphs]).astype(np.float32)
    adj = np.stack([a for _, a in graphs]).astype(np.float32)
    g = embed_graphs(objective.gf, feats, adj)
    e = embed_sequences(objective.deepdxf, [dataset.rows(int(i)) for i in drawings])
    joint = joint_vectors(g, e)
    picked = [names[int(i)] for i in drawings]
    members: dict[str, list[str]] = {}
    for i, n in zip(drawings, picked):
        members.setdefault(groups[int(i)], []).append(n)
    group_lists = [m for m in members.values() if len(m) >= 2]
    if not group_lists:
        return nan
    learned = retrieval_metrics(joint, picked, group_lists)
    floor = retrieval_metrics(raw_gf_embedding(feats[:, :, :GF_BASE_FEATURES], adj), picked, group_lists)
    return {"retrieval_mAP": float(learned["mAP"]), "floor_mAP": float(floor["mAP"])}


__all__ = ["pick_validation_drawings", "validation_retrieval"]
