"""Retrieval on the validation drawings during training, beside the raw GF floor.

A falling validation loss does not mean a better similarity embedding: on held-out
lead-frame revisions the joint embedding got *worse* from 10 to 50 epochs while the
loss kept falling (``bench/learn_ablation.md``). So every validation pass can also
measure what the embedding is for: the validation drawings that share a group
(``--group_pattern``: pieces and revisions of one drawing) with another validation
drawing are queries, every sampled validation drawing is the gallery, and the mAP of
the joint embedding (``SimDeepDXF.py --embedding joint``) is logged beside the mAP of
the strongest non-learned floor on the same drawings (``floor_mAP``; every floor of
:mod:`model.floors`: the entity-type histogram, the raw GF matrices, their standardized
concatenation, the layout and the rotation-robust layout, each as ``floor_<kind>_mAP``).
A model below its floor has learned nothing a count would not give.

A user's groups (``joint_main.py --groups FILE``, a JSON list of groups of drawing
names, as ``SimDeepDXF.py --groups`` reads) add queries: validation drawings in a
listed group are picked with the group and search for its other members.

The drawings are a seeded sample of at most ``max_drawings`` validation drawings,
fixed for the run, taking whole groups with >= 2 members first. When no group has two
members among them (an archive without pieces or revisions), there is nothing to
measure and the metrics are NaN.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from dataset.formats import GF_CLASSES
from model.DeepDXF_model import embed_sequences
from model.GF_model import embed_graphs
from model.floors import FLOOR_LABELS, floor_embeddings, layout_grid
from model.joint_loss import joint_embedding
from utils.ranking import best_by_map, retrieval_metrics

#: the GF feature columns the raw GF floor reads (the class layout, when appended, is not a floor)
GF_COLUMNS = len(GF_CLASSES) + 1
#: the floors the check compares with (:data:`model.floors.FLOOR_LABELS` keys)
FLOOR_KEYS = tuple(FLOOR_LABELS)


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


def merge_groups(groups: Sequence[str], extra: Sequence[Sequence[int]] = ()) -> list[str]:
    """Per-drawing group labels with the ``extra`` groups (lists of drawing indices, e.g. a
    user's ``--groups``) merged in: drawings linked by a pattern group or a listed group,
    directly or through others, share a label. ``groups``: [n] label of every drawing."""
    parent = list(range(len(groups)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        parent[find(i)] = find(first.setdefault(g, i))
    for members in extra:
        members = [int(m) for m in members]
        for m in members[1:]:
            parent[find(m)] = find(members[0])
    return [str(groups[find(i)]) for i in range(len(groups))]


def _query_groups(drawings: Sequence[int], names: Sequence[str], groups: Sequence[str],
                  extra: Sequence[Sequence[int]]) -> list[list[str]]:
    """The groups of >= 2 members among ``drawings``: pattern groups, then the ``extra`` ones."""
    members: dict[str, list[str]] = {}
    for i in drawings:
        members.setdefault(groups[int(i)], []).append(names[int(i)])
    picked = {int(i) for i in drawings}
    listed = [[names[m] for m in g if int(m) in picked] for g in extra]
    return [m for m in members.values() if len(m) >= 2] + [m for m in listed if len(m) >= 2]


def floor_arrays(dataset: Any, drawings: Sequence[int],
                 graphs: Optional[Sequence[tuple[np.ndarray, np.ndarray]]] = None,
                 rows: Optional[Sequence[np.ndarray]] = None) -> dict[str, np.ndarray]:
    """The encodings :func:`model.floors.floor_embeddings` reads, of ``drawings`` (joint
    indices of ``dataset``, a ``JointDataset``): ``type_counts [n, 12]`` (from the archive,
    counted before any cut, as a search counts them), ``gf_features [n, 10, 11]``,
    ``gf_adjacency [n, 10, 10]``, ``layout [n, 12, 8, 8]``. ``graphs``/``rows``: the
    drawings' ``dataset.graph``/``dataset.rows`` when the caller has read them already."""
    graphs = graphs if graphs is not None else [dataset.graph(int(i)) for i in drawings]
    rows = rows if rows is not None else [dataset.rows(int(i)) for i in drawings]
    return {"type_counts": np.stack([dataset.archive.type_counts(int(dataset.ids[int(i)])) for i in drawings]),
            "gf_features": np.stack([f[:, :GF_COLUMNS] for f, _ in graphs]).astype(np.float32),
            "gf_adjacency": np.stack([a for _, a in graphs]).astype(np.float32),
            "layout": np.stack([layout_grid(r) for r in rows])}


def floor_maps(dataset: Any, names: Sequence[str], groups: Sequence[str], drawings: Sequence[int],
               extra_groups: Sequence[Sequence[int]] = ()) -> dict[str, float]:
    """``floor_<kind>_mAP`` of every non-learned floor over ``drawings`` and ``floor_mAP``,
    the strongest of them (NaN when there is no query). The floors learn nothing: compute
    them once per set of drawings. Standardized floors are z-scored on these drawings."""
    out = {f"floor_{k}_mAP": math.nan for k in FLOOR_KEYS}
    out["floor_mAP"] = math.nan
    query_groups = _query_groups(drawings, names, groups, extra_groups)
    if len(drawings) < 2 or not query_groups:
        return out
    picked = [names[int(i)] for i in drawings]
    floors = floor_embeddings(floor_arrays(dataset, drawings))
    rows = [(k, retrieval_metrics(e, picked, query_groups) if e is not None else None) for k, e in floors.items()]
    for k, m in rows:
        if m is not None:
            out[f"floor_{k}_mAP"] = float(m["mAP"])
    best = best_by_map(rows)
    if best is not None:
        out["floor_mAP"] = float(best[1]["mAP"])
    return out


def strongest_floor(metrics: dict[str, float]) -> Optional[str]:
    """The kind (:data:`FLOOR_KEYS`) whose ``floor_<kind>_mAP`` is ``floor_mAP`` in ``metrics``
    (keys with or without a ``val_``/``test_`` prefix); None when there is none."""
    for prefix in ("", "val_", "test_"):
        best = metrics.get(f"{prefix}floor_mAP", math.nan)
        if math.isfinite(best):
            for k in FLOOR_KEYS:
                if metrics.get(f"{prefix}floor_{k}_mAP") == best:
                    return k
    return None


def validation_retrieval(objective: Any, dataset: Any, names: Sequence[str], groups: Sequence[str],
                         drawings: Sequence[int], extra_groups: Sequence[Sequence[int]] = (),
                         floors: Optional[dict[str, float]] = None) -> dict[str, float]:
    """``retrieval_mAP`` of the joint embedding over ``drawings`` (joint-drawing indices of
    ``dataset``, a ``JointDataset``) and the floors of :func:`floor_maps` (``floor_mAP``:
    the strongest); NaN when there are fewer than two drawings or no query.

    Args:
        objective: the joint model (``JointObjective``: ``.gf`` and ``.deepdxf``).
        names, groups: name and group (``--group_pattern``) of every joint drawing.
        extra_groups: more groups of similar drawings, as joint-drawing indices (``--groups``).
        floors: :func:`floor_maps` of these drawings when already computed (the floors do
            not change during training).
    """
    nan = {"retrieval_mAP": math.nan, "floor_mAP": math.nan, **{f"floor_{k}_mAP": math.nan for k in FLOOR_KEYS}}
    query_groups = _query_groups(drawings, names, groups, extra_groups)
    if len(drawings) < 2 or not query_groups:
        return nan
    graphs = [dataset.graph(int(i)) for i in drawings]
    feats = np.stack([f for f, _ in graphs]).astype(np.float32)
    adj = np.stack([a for _, a in graphs]).astype(np.float32)
    g = embed_graphs(objective.gf, feats, adj)
    e = embed_sequences(objective.deepdxf, [dataset.rows(int(i)) for i in drawings])
    joint = joint_embedding(torch.from_numpy(g), torch.from_numpy(e)).numpy()
    picked = [names[int(i)] for i in drawings]
    learned = retrieval_metrics(joint, picked, query_groups)
    if floors is None:
        floors = floor_maps(dataset, names, groups, drawings, extra_groups)
    return {"retrieval_mAP": float(learned["mAP"]), **floors}


__all__ = ["FLOOR_KEYS", "pick_validation_drawings", "merge_groups", "floor_arrays", "floor_maps", "strongest_floor",
           "validation_retrieval"]
