"""Judging an embedding: retrieval metrics against groups, beside every non-learned floor.

``groups`` is a list of groups of drawing names that people (or the revision
generator) consider similar; the protocol and the metrics are :mod:`utils.ranking`'s.
Every evaluation prints, beside a model, the embeddings a model must beat: random
vectors, the entity-type histogram, the raw GF matrices, their standardized
concatenation and the layout-aware counts (:mod:`model.floors`). The strongest floor
is named as the one to beat (:func:`compare_table`, used by ``SimDeepDXF.py --groups``
and the bench scripts).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from model.floors import FLOOR_LABELS, floor_embeddings, random_embedding
from utils.ranking import (METRIC_KEYS, Method, best_by_map, bootstrap_interval, normalize_name, paired_interval,
                           query_clusters, retrieval_metrics)


def load_encodings(data_dir: str | Path) -> dict:
    """The encodings of every drawing with both a GF and a DeepDXF encoding in ``data_dir``
    (per-drawing folders or packed shards, ``dataset.archive.open_archive``), sorted by name.

    Returns:
        ``names`` (list[str]), ``type_counts`` int64 ``[n, 12]`` (counted before any cut),
        ``gf_features`` float32 ``[n, 10, 11]``, ``gf_adjacency`` float32 ``[n, 10, 10]``,
        ``layout`` int32 ``[n, 12, 8, 8]`` (entities per type and grid cell,
        :func:`model.floors.layout_grid`).

    Raises:
        dataset.archive.ArchiveError: no drawing with both encodings (the message says how
            to preprocess).
    """
    from dataset.archive import open_archive
    from model.floors import layout_grid

    archive = open_archive(data_dir)
    names = archive.names()
    order = sorted(range(len(names)), key=names.__getitem__)
    graphs = [archive.graph(i) for i in order]
    return {
        "names": [names[i] for i in order],
        "type_counts": np.stack([archive.type_counts(i) for i in order]).astype(np.int64),
        "gf_features": np.stack([f for f, _ in graphs]).astype(np.float32),
        "gf_adjacency": np.stack([a for _, a in graphs]).astype(np.float32),
        "layout": np.stack([layout_grid(np.asarray(archive.rows(i))) for i in order]),
    }


# ------------------------------------------------------------- floor table
RANDOM_LABEL = "random vectors"
#: the table label of each floor (model.floors keys)
FLOOR_HIST, FLOOR_RAW_GF, FLOOR_STD, FLOOR_LAYOUT, FLOOR_LAYOUT_ROT = (
    FLOOR_LABELS[k] for k in ("hist", "gf_raw", "features", "layout", "layout_rot"))


def _random_floor(names: Sequence[str], groups: list[list[str]], method: Method, seed: int,
                  n_random: int) -> dict:
    """Metrics of seeded random vectors, averaged over ``n_random`` draws (the chance level)."""
    runs = [retrieval_metrics(random_embedding(len(names), 64, seed + i), names, groups, method)
            for i in range(max(n_random, 1))]
    rand = dict(runs[0])
    for k in METRIC_KEYS:
        rand[k] = float(np.mean([r[k] for r in runs]))
    if runs[0]["n_queries"]:
        rand["per_query_ap"] = np.mean([r["per_query_ap"] for r in runs], axis=0).tolist()
        rand["per_query"] = {k: np.mean([r["per_query"][k] for r in runs], axis=0).tolist()
                             for k in runs[0]["per_query"]}
    return rand


def floor_table(enc: dict, groups: Iterable[Iterable[str]], method: Method = "cosine", seed: int = 0,
                n_random: int = 20, fit_rows: Sequence[int] | None = None) -> list[tuple[str, dict | None]]:
    """Metrics of the floors over the drawings ``enc["names"]``: random vectors (mean of
    ``n_random`` seeded draws), then every floor of :func:`model.floors.floor_embeddings`
    (None: n/a, the label says why)."""
    groups = [list(g) for g in groups]
    names = list(enc["names"])
    label = RANDOM_LABEL + (f" (chance, mean of {n_random} draws)" if n_random > 1 else "")
    table: list[tuple[str, dict | None]] = [(label, _random_floor(names, groups, method, seed, n_random))]
    has_gf = np.asarray(enc.get("has_gf", np.ones(len(names), dtype=bool))).astype(bool)
    for key, emb in floor_embeddings(enc, fit_rows).items():
        label = FLOOR_LABELS[key]
        if emb is not None:
            table.append((label, retrieval_metrics(emb, names, groups, method)))
        elif key in ("gf_raw", "features"):
            table.append((f"{label} (n/a: {int((~has_gf).sum())} .h5 drawings without GF twin)", None))
        else:
            table.append((f"{label} (n/a: no DeepDXF rows)", None))
    return table


def format_table(rows: Sequence[tuple[str, dict | None]], n_boot: int = 1000, seed: int = 0) -> str:
    """A markdown table: embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR
    (a row with metrics None reads n/a)."""
    lines = ["| embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR |",
             "|---|---|---|---|---|---|---|---|"]
    for label, m in rows:
        if m is None:
            lines.append(f"| {label} | n/a |  |  |  |  |  |  |")
            continue
        lo, hi = bootstrap_interval(m.get("per_query_ap", []), n_boot=n_boot, seed=seed)
        ci = "–" if math.isnan(lo) else f"{lo:.3f}–{hi:.3f}"
        vals = " | ".join(f"{m[k]:.3f}" for k in METRIC_KEYS if k != "mAP")
        lines.append(f"| {label} | {m['mAP']:.3f} | {ci} | {vals} |")
    return "\n".join(lines)


def strongest_floor(rows: Sequence[tuple[str, dict | None]]) -> tuple[str, dict] | None:
    """The floor with the highest mAP among ``floor_table`` rows (random vectors left
    out); None when no floor could be computed."""
    return best_by_map([(label, m) for label, m in rows if not label.startswith(RANDOM_LABEL)])


def verdict_lines(models: Sequence[tuple[str, dict | None]], floors: Sequence[tuple[str, dict | None]],
                  n_boot: int = 1000, seed: int = 0, groups: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Plain sentences under a table: the floor to beat, and whether each model beats it.
    ``groups``: the groups of the queries; given, the paired interval resamples whole groups
    (the queries of one group succeed or fail together)."""
    best = strongest_floor(floors)
    if best is None:
        return ["no floor could be computed: nothing to compare with"]
    label, fm = best
    lines = [f"the floor to beat: {label} (mAP {fm['mAP']:.3f})"]
    clusters = None if groups is None or "queries" not in fm else query_clusters(fm["queries"], groups)
    for mlabel, m in models:
        if m is None:
            continue
        diff = m["mAP"] - fm["mAP"]
        p_lo, p_hi = paired_interval(m.get("per_query_ap", []), fm.get("per_query_ap", []), n_boot, seed,
                                     clusters=clusters)
        over = "queries" if clusters is None else f"queries, resampling their {len(set(clusters.tolist()))} groups"
        paired = "" if math.isnan(p_lo) else f"; paired over the same {over} {p_lo:+.3f} to {p_hi:+.3f} (95%)"
        clear = not math.isnan(p_lo) and (p_lo > 0 or p_hi < 0)
        noise = "" if clear or math.isnan(p_lo) else ": not a clear difference"
        if diff > 0:
            lines.append(f"{mlabel}: beats the floor to beat by {diff:+.3f} mAP{paired}{noise}")
        else:
            lines.append(f"{mlabel}: does NOT beat the floor to beat ({m['mAP']:.3f} vs {fm['mAP']:.3f} mAP{paired})"
                         f"{noise}; the non-learned {label} retrieves at least as well")
    return lines


def compare_table(
    models: Sequence[tuple[str, np.ndarray | None]],
    enc: dict,
    groups: Iterable[Iterable[str]],
    method: Method = "cosine",
    n_boot: int = 1000,
    seed: int = 0,
    n_random: int = 10,
    fit_rows: Sequence[int] | None = None,
    floor_prefix: str = "floor: ",
) -> tuple[str, list[tuple[str, dict | None]]]:
    """The one evaluation table: each model's embedding ``(label, [n, D] or None for n/a)``
    beside every floor, then the floor to beat and a verdict per model.

    Args:
        models: embeddings of the drawings ``enc["names"]`` in that order.
        enc: encodings as :func:`floor_embeddings` takes them, with ``names``.
        fit_rows: rows whose statistics z-score the floors; default: drawings in no group
            (the unlabelled part of the gallery) when there are at least 2, else all.
    Returns:
        ``(text, rows)``: the table with its header and verdict lines, and the rows.
    Raises:
        ValueError: no group has two members among the names.
    """
    groups = [list(g) for g in groups]
    names = list(enc["names"])
    if fit_rows is None:
        labelled = {normalize_name(n) for g in groups for n in g}
        unlabelled = [i for i, n in enumerate(names) if normalize_name(n) not in labelled]
        fit_rows = unlabelled if len(unlabelled) >= 2 else None
    model_rows = [(label, None if emb is None else retrieval_metrics(emb, names, groups, method))
                  for label, emb in models]
    floors = floor_table(enc, groups, method, seed, n_random, fit_rows)
    verdicts = verdict_lines(model_rows, floors, n_boot, seed, groups)
    floors = [(label if label.startswith(RANDOM_LABEL) else floor_prefix + label, m) for label, m in floors]
    first = floors[0][1]
    if first["n_queries"] == 0:
        raise ValueError("no group has two members in the gallery: nothing to evaluate "
                         "(are the names in the groups file the gallery's drawing names?)")
    rows = model_rows + floors
    head = (f"gallery: {len(names)} drawings; queries: {first['n_queries']} (every member of a group of >= 2); "
            f"similarity: {method}; 95% CI: bootstrap over queries ({n_boot} resamples)")
    text = "\n".join([head, format_table(rows, n_boot, seed), *verdicts])
    return text, rows


__all__ = ["load_encodings", "RANDOM_LABEL", "FLOOR_HIST", "FLOOR_RAW_GF", "FLOOR_STD",
           "FLOOR_LAYOUT", "FLOOR_LAYOUT_ROT", "floor_table", "format_table", "strongest_floor", "verdict_lines",
           "compare_table"]
