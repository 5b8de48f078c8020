"""Choose the search embedding for the archive a model was trained on.

A fusion weight chosen on one archive is not right on another: on lead-frame revisions
the raw GF matrices are the strongest floor, on floor plans grouped by building a layout
grid is, and a learned embedding may add to either or to neither. So after training,
``joint_main.py`` scores on the archive's own validation drawings

- the learned parts (``joint``, ``gf``, ``deepdxf``),
- every non-learned floor of the tables (the entity-type histogram and the raw GF
  matrices, each as it is and standardized, their standardized pair, the layout grid and
  its rotation-robust form), and the standardized pair with a small layout block added
  (it breaks the near-ties of global counts),
- and each learned part (joint, GF, DeepDXF) fused with each floor at a few weights,

with every z-scored floor block z-scored with the statistics of the drawings it ranks, as
a search z-scores it with the gallery it searches (``model.fusion.with_statistics_of``;
the statistics stored with a block, those of the validation drawings scored, mark it as
z-scored),

and stores the one :func:`pick` chooses in the checkpoint (``search_embedding``: its blocks
with their statistics, every candidate's mAP, the floor it was measured against, and one
line saying why): the standardized counts unless another floor, then a learned candidate,
is better on the same queries beyond their noise.
``SimDeepDXF.py --embedding auto`` then searches with exactly that embedding.

Queries are the validation drawings that share a group (``--group_pattern``: pieces and
revisions of one drawing, e.g. the revisions ``dataset/make_revisions.py`` generates)
or a group of the user's ``--groups`` file; the gallery is those drawings plus the other
validation drawings, then training drawings, as distractors (at most ``max_drawings``;
a search ranks the training drawings too). Without two such
drawings there is nothing to choose on, and no choice is stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from model.DeepDXF_model import embed_sequences
from model.floors import BLOCK_DIMS, FLOOR_LABELS, floor_block
from model.fusion import Block, block_statistics, describe_blocks, fuse, with_statistics_of
from model.GF_model import embed_graphs
from model.joint_loss import joint_embedding
from utils.ranking import paired_interval, query_clusters, retrieval_metrics
from utils.train.val_retrieval import floor_arrays

#: floor blocks that are z-scored (with the statistics of the drawings they rank)
ZSCORED = ("hist", "gf_raw", "layout", "layout_rot")
#: the learned parts fused with a floor block: the joint embedding and each model's part alone
#: (with grid pooling the DeepDXF part holds a layout floor of its own; the GF part fused with
#: the counts was the strongest candidate on two of three selection sets: footprint variants
#: and lead-frame revisions)
FUSED_PARTS = ("joint", "deepdxf", "gf")
#: weights of a floor block fused with the unit learned part
FUSION_WEIGHTS = (1.0, 2.0, 4.0)
#: weights of a layout block added to the standardized histogram + raw GF pair: a small layout
#: term breaks the near-ties of global counts between drawings of one kind (a non-learned floor)
LAYOUT_TIE_WEIGHTS = (0.25, 0.5)


@dataclass
class Candidate:
    """One embedding to score: its name, blocks and whether it is a non-learned floor."""

    name: str
    blocks: list[Block]
    floor: bool = False
    metrics: Optional[dict] = field(default=None, repr=False)


def drawing_parts(gf_model: Any, deepdxf_model: Any, dataset: Any, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Every raw block of the joint drawings ``indices`` of ``dataset`` (a ``JointDataset``):
    the floor blocks of ``model.floors.BLOCK_DIMS`` (from ``val_retrieval.floor_arrays``, as
    the retrieval check and a search read them) and ``gf``, ``deepdxf`` and ``joint`` of the
    two models. Each ``[n, d]``; every drawing is read once."""
    graphs = [dataset.graph(int(i)) for i in indices]
    rows = [np.asarray(dataset.rows(int(i))) for i in indices]
    arrays = floor_arrays(dataset, indices, graphs, rows)
    parts = {name: floor_block(name, arrays) for name in BLOCK_DIMS}
    g = embed_graphs(gf_model, np.stack([np.asarray(f, dtype=np.float32) for f, _ in graphs]), arrays["gf_adjacency"])
    d = embed_sequences(deepdxf_model, rows)
    parts.update(gf=g, deepdxf=d, joint=joint_embedding(torch.from_numpy(g), torch.from_numpy(d)).numpy())
    return parts


def candidates(parts: dict[str, np.ndarray]) -> list[Candidate]:
    """The embeddings to choose from; the z-scored floor blocks carry ``parts``' statistics
    (they mark the block as z-scored: scoring and search z-score it with the drawings it ranks)."""
    z = {name: Block(name, 1.0, *block_statistics(parts[name])) for name in ZSCORED}

    def zb(name: str, weight: float = 1.0) -> Block:
        return Block(name, weight, z[name].mean, z[name].std)

    floors = {  # the floors of the tables (model.floors.FLOOR_LABELS), by the same names
        "hist": [Block("hist")],
        "hist_std": [zb("hist")],
        "gf_raw": [Block("gf_raw")],
        "gf_std": [zb("gf_raw")],
        "features": [zb("hist"), zb("gf_raw")],
        "layout": [zb("layout")],
        "layout_rot": [zb("layout_rot")],
    }
    out = [Candidate(name, [Block(name)]) for name in ("joint", "gf", "deepdxf")]
    out += [Candidate(name, blocks, floor=True) for name, blocks in floors.items()]
    for layout in ("layout", "layout_rot"):
        for w in LAYOUT_TIE_WEIGHTS:
            out.append(Candidate(f"features + {layout} x{w:g}", floors["features"] + [zb(layout, w)], floor=True))
    for part in FUSED_PARTS:
        for name, blocks in floors.items():
            if name in ("hist", "hist_std"):
                continue
            for w in FUSION_WEIGHTS:
                fused = [Block(part)] + [Block(b.name, w, b.mean, b.std) for b in blocks]
                out.append(Candidate(f"{part} + {name} x{w:g}", fused))
    return out


def score(cands: Sequence[Candidate], parts: dict[str, np.ndarray], names: Sequence[str],
          groups: Sequence[Sequence[str]]) -> None:
    """Fill each candidate's ``metrics`` (``utils.ranking.retrieval_metrics``) on the drawings
    ``names`` (rows of ``parts``) against ``groups``."""
    clusters = None
    for c in cands:  # floor blocks z-scored with the scored drawings, as a search z-scores them with its gallery
        c.metrics = retrieval_metrics(fuse(parts, with_statistics_of(c.blocks, parts)), names, groups)
        if clusters is None:  # the same queries for every candidate: the group of each, once
            clusters = query_clusters(c.metrics["queries"], groups)
        c.metrics["query_groups"] = clusters


#: the least mAP by which a floor must beat the default floor (beside a clear interval)
TIE = 0.002
#: the floors in order of preference: the first scored one is the default (the standardized
#: counts: the strongest or close to it on every selection set measured); the order also
#: breaks ties of the others
FLOOR_PRIOR = ("features", "gf_raw", "gf_std", "layout_rot", "layout", "hist_std", "hist")


def _prior_rank(name: str) -> int:
    """Position of a floor in :data:`FLOOR_PRIOR`; the fused floors after them."""
    return FLOOR_PRIOR.index(name) if name in FLOOR_PRIOR else len(FLOOR_PRIOR)


#: fewer query groups than this and the default floor stays: a bootstrap that resamples a
#: handful of groups cannot tell a difference from noise (the validation groups of a symbol
#: library, 4 categories, picked the plain histogram, "+0.011 to +0.667"; on the library's
#: other groups it was no better than the default)
MIN_CHOICE_GROUPS = 10


def n_query_groups(c: Candidate) -> int:
    """How many groups the queries ``c`` was scored on come from (without ``query_groups``
    each query counts alone, as the intervals then resample queries one by one)."""
    groups = c.metrics.get("query_groups")
    return len(np.unique(groups)) if groups is not None else len(c.metrics.get("per_query_ap", []))


#: bootstrap resamples of the corrected interval (its tail is 0.1 % or less)
PICK_BOOTSTRAPS = 10_000


def corrected_alpha(n_tried: int, alpha: float = 0.05) -> float:
    """The two-sided error level of each candidate's paired interval against the one it would
    replace: ``alpha / n_tried`` (Bonferroni over the candidates tried)."""
    return alpha / max(1, n_tried)


def corrected_lower_bound(c: Candidate, ref: Candidate, n_tried: int) -> float:
    """The lower end of the paired interval of ``c``'s per-query AP minus ``ref``'s, 95 %
    corrected for ``n_tried`` candidates (:func:`corrected_alpha`); the queries' groups
    (``query_groups``, when scored) are resampled whole."""
    return paired_interval(c.metrics.get("per_query_ap", []), ref.metrics.get("per_query_ap", []),
                           n_boot=PICK_BOOTSTRAPS, alpha=corrected_alpha(n_tried),
                           clusters=c.metrics.get("query_groups"))[0]


def default_floor(cands: Sequence[Candidate]) -> Candidate:
    """The first scored floor of :data:`FLOOR_PRIOR` (``features`` when it was scored)."""
    floors = [c for c in cands if c.floor and c.metrics is not None and np.isfinite(c.metrics["mAP"])]
    return min(floors, key=lambda c: (_prior_rank(c.name), -c.metrics["mAP"]))


def pick(cands: Sequence[Candidate]) -> tuple[Candidate, Candidate]:
    """The chosen candidate and the floor it was measured against.

    The default floor (:func:`default_floor`, the standardized counts) stays unless another
    floor is better on the same queries beyond their noise: higher by more than :data:`TIE`
    and the paired bootstrap interval of its per-query AP minus the default's above zero,
    95 % corrected for the number of other floors (Bonferroni); the best such floor by mAP
    replaces it. A candidate with a learned part replaces that floor the same way, its
    interval corrected for the number of learned candidates (the best of dozens of noisy candidates
    clears a plain 95 % interval far more often than 1 in 40). A small or saturated
    validation (20 queries, every floor at 1.0) thus keeps the default instead of the floor
    that its noise favours; a large one switches where the archive wants another floor
    (e.g. a rotation-robust layout grid, 0.41 against 0.26 mAP on one footprint library).
    Queries from fewer than :data:`MIN_CHOICE_GROUPS` groups keep the default outright.
    """
    scored = [c for c in cands if c.metrics is not None and np.isfinite(c.metrics["mAP"])]
    default = default_floor(scored)
    if n_query_groups(default) < MIN_CHOICE_GROUPS:
        return default, default
    others = [c for c in scored if c.floor and c is not default]
    better_floors = [c for c in others if c.metrics["mAP"] > default.metrics["mAP"] + TIE
                     and corrected_lower_bound(c, default, len(others)) > 0]
    floor = max(better_floors, key=lambda c: (c.metrics["mAP"], -_prior_rank(c.name))) if better_floors else default
    learned = [c for c in scored if not c.floor]
    better = [c for c in learned if c.metrics["mAP"] > floor.metrics["mAP"]
              and corrected_lower_bound(c, floor, len(learned)) > 0]
    best = max(better, key=lambda c: c.metrics["mAP"]) if better else floor
    return best, floor


def choose_search_embedding(gf_model: Any, deepdxf_model: Any, dataset: Any, names: Sequence[str],
                            val_indices: Sequence[int], groups: Sequence[Sequence[str]],
                            max_drawings: int = 1000, seed: int = 0,
                            distractors: Sequence[int] = ()) -> Optional[dict[str, Any]]:
    """Score every candidate on the validation drawings and return the choice to store in
    the checkpoint (``search_embedding``), or None when no group has two validation members.

    Args:
        gf_model, deepdxf_model: the trained models (a joint checkpoint's).
        dataset: the joint drawings (``graph(i)``, ``rows(i)``); ``names``: their names.
        val_indices: joint-drawing indices of the validation part.
        groups: groups of similar drawing names (pieces/revisions by ``--group_pattern``, and
            the user's ``--groups``); only validation members count.
        max_drawings: drawings at most: whole validation groups first, then the other
            validation drawings, then ``distractors``.
        distractors: joint-drawing indices that may fill the gallery after the other validation
            drawings (the training drawings: the archive a search ranks holds them too, and
            without them a small archive's few validation queries score 1.0 with every floor).
    Returns:
        ``{"name", "blocks" (Block dicts), "why", "scores" (name -> mAP), "strongest_floor",
        "n_queries", "n_drawings"}``.
    """
    rng = np.random.default_rng(seed)
    val_names = {names[int(i)]: int(i) for i in val_indices}
    val_groups = [[n for n in g if n in val_names] for g in groups]
    val_groups = [g for g in val_groups if len(g) >= 2]
    if not val_groups:
        return None
    members = list(dict.fromkeys(n for g in val_groups for n in g))
    if len(members) > max_drawings:  # whole groups, in a seeded order
        keep: list[str] = []
        for k in rng.permutation(len(val_groups)):
            if len(keep) + len(val_groups[k]) <= max_drawings:
                keep.extend(n for n in val_groups[k] if n not in keep)
        members = keep
        val_groups = [g for g in val_groups if all(n in set(members) for n in g)]
    chosen = set(members)
    others = [n for n in val_names if n not in chosen]
    room = max(0, max_drawings - len(members))
    picked = members + [others[k] for k in rng.permutation(len(others))[:room]]
    room = max(0, max_drawings - len(picked))
    extra = [int(i) for i in distractors if names[int(i)] not in val_names]
    idx = [val_names[n] for n in picked] + [extra[k] for k in rng.permutation(len(extra))[:room]]
    picked = picked + [names[i] for i in idx[len(picked):]]
    parts = drawing_parts(gf_model, deepdxf_model, dataset, idx)
    return choose_from_parts(parts, picked, val_groups, "validation queries of this archive")


def choose_from_parts(parts: dict[str, np.ndarray], names: Sequence[str], groups: Sequence[Sequence[str]],
                      where: str) -> dict[str, Any]:
    """Score every candidate of ``parts`` (raw blocks ``[n, d]`` of the drawings ``names``, as
    :func:`drawing_parts` gives them) against ``groups`` and return the choice (what
    :func:`choose_search_embedding` returns); ``where`` names the queries in its ``why``
    (e.g. "validation queries of this archive")."""
    cands = candidates(parts)
    score(cands, parts, names, groups)
    best, floor = pick(cands)
    n_groups = n_query_groups(best)
    return {"name": best.name, "blocks": [b.to_dict() for b in best.blocks],
            "why": _why(cands, best, floor, f"{best.metrics['n_queries']} {where} ({n_groups} groups)"),
            "description": describe_blocks(best.blocks),
            "scores": {c.name: round(float(c.metrics["mAP"]), 4) for c in cands},
            "strongest_floor": floor.name, "strongest_floor_label": _floor_label(floor.name),
            "n_queries": int(best.metrics["n_queries"]), "n_groups": n_groups, "n_drawings": len(names)}


def _why(cands: Sequence[Candidate], best: Candidate, floor: Candidate, queries: str) -> str:
    """One line: why ``best`` was chosen (``queries``: e.g. "257 validation queries of this archive")."""
    default = default_floor(cands)
    learned = [c for c in cands if not c.floor]
    runner = max(learned, key=lambda c: c.metrics["mAP"])

    def vs(c: Candidate, ref: Candidate) -> str:
        lo, hi = paired_interval(c.metrics["per_query_ap"], ref.metrics["per_query_ap"],
                                 clusters=c.metrics.get("query_groups"))
        return f"{c.name} {c.metrics['mAP']:.3f} vs {ref.name} {ref.metrics['mAP']:.3f}, paired 95% {lo:+.3f} to {hi:+.3f}"
    if best is not floor:
        lower = corrected_lower_bound(best, floor, len(learned))
        return (f"the best of {len(cands)} candidates on {queries}: {vs(best, floor)} (lower bound {lower:+.3f} "
                f"corrected for {len(learned)} learned candidates)")
    if n_query_groups(default) < MIN_CHOICE_GROUPS:
        rival = max((c for c in cands if c.floor and c is not default), key=lambda c: c.metrics["mAP"])
        return (f"the default floor on {queries}: fewer than {MIN_CHOICE_GROUPS} groups are too few to tell "
                f"candidates apart (best other floor: {vs(rival, default)}; best learned: {vs(runner, default)})")
    if floor is default:
        rival = max((c for c in cands if c.floor and c is not default), key=lambda c: c.metrics["mAP"],
                    default=None)
        beaten = f"best other floor: {vs(rival, default)}; " if rival is not None else ""
        return (f"the default floor on {queries} (mAP {default.metrics['mAP']:.3f}): no other floor and no learned "
                f"candidate was clearly better ({beaten}best learned: {vs(runner, default)})")
    n_other = sum(c.floor for c in cands) - 1
    return (f"clearly better than the default floor {default.name} on {queries}: {vs(floor, default)} (lower bound "
            f"{corrected_lower_bound(floor, default, n_other):+.3f} corrected for {n_other} floors); no learned "
            f"candidate was clearly better (best: {vs(runner, floor)})")


def _floor_label(name: str) -> str:
    return FLOOR_LABELS.get(name, name)


def store_choice(paths: Sequence[str | Path], choice: dict[str, Any]) -> None:
    """Add ``search_embedding`` to each checkpoint in ``paths`` (rewritten atomically)."""
    from utils.train.checkpoint import load_checkpoint, save_checkpoint

    for path in paths:
        ckpt = load_checkpoint(path)
        extra = {k: v for k, v in ckpt.items()
                 if k not in ("format_version", "toolkit", "kind", "config", "state", "search_embedding")}
        save_checkpoint(path, ckpt["kind"], ckpt["config"], ckpt["state"], **extra, search_embedding=choice)


def choice_table(choice: dict[str, Any], top: int = 8) -> str:
    """The best ``top`` candidates and every floor, one per line, for the log."""
    scores = sorted(choice["scores"].items(), key=lambda kv: -kv[1])
    lines = [f"  {name:<28} {m:.3f}" + ("  <- chosen" if name == choice["name"] else "")
             for name, m in scores[:top]]
    return "\n".join(lines)


def group_lists(names: Sequence[str], group_of_each: Sequence[str]) -> list[list[str]]:
    """Groups of names with two members or more, from each name's group label."""
    by_group: dict[str, list[str]] = {}
    for n, g in zip(names, group_of_each):
        by_group.setdefault(g, []).append(n)
    return [members for members in by_group.values() if len(members) >= 2]


def choose_and_store(checkpoint: str | Path, dataset: Any, names: Sequence[str], split_groups: Sequence[str],
                     val_idx: Sequence[int], log: Any, *, max_drawings: int, seed: int,
                     user_groups: Sequence[Sequence[str]] = (), distractors: Sequence[int] = ()
                     ) -> Optional[dict[str, Any]]:
    """Choose the search embedding of the fold checkpoint ``checkpoint`` on the fold's
    validation drawings (``val_idx``), store it there (the
    checkpoint is then published as ``best_model.pth`` with it), and log what was chosen and
    why. ``split_groups``: each drawing's ``--group_pattern`` group; ``user_groups``:
    ``--groups`` as lists of names; ``distractors``: the fold's training drawings (they fill
    the ranked gallery after the validation drawings). Returns what summary.json keeps of
    the choice (None: nothing to choose on)."""
    from utils.train.checkpoint import load_trained_models

    groups = group_lists(names, split_groups) + [list(g) for g in user_groups]
    trained = load_trained_models(checkpoint, "cpu")
    choice = choose_search_embedding(trained.gf, trained.deepdxf, dataset, names, val_idx, groups, max_drawings,
                                     seed=seed, distractors=distractors)
    if choice is None:
        log.info("search embedding: not chosen: no two validation drawings share a group (--group_pattern, "
                 "--groups); SimDeepDXF.py --embedding auto uses the default floor features. Give the archive revisions "
                 "(dataset/make_revisions.py) or --groups to let training choose")
        return None
    store_choice([checkpoint], choice)
    log.info(f"search embedding: {choice['name']} [{choice['description']}]: {choice['why']}\n"
             + choice_table(choice))
    if choice["n_groups"] < MIN_CHOICE_GROUPS:
        log.info(f"search embedding: the validation held {choice['n_groups']} group(s); to choose on at least "
                 f"{MIN_CHOICE_GROUPS}, validate on more of them: --k_folds 2 (half of the non-test drawings) and "
                 "--test_fraction 0.1, or more --groups")
    return {k: choice[k] for k in ("name", "description", "why", "scores", "strongest_floor", "n_queries", "n_groups")}


__all__ = ["Candidate", "ZSCORED", "FUSED_PARTS", "FUSION_WEIGHTS", "PICK_BOOTSTRAPS", "TIE", "FLOOR_PRIOR", "corrected_alpha", "default_floor", "drawing_parts", "candidates", "score", "pick",
           "choose_search_embedding", "choose_from_parts", "store_choice", "choice_table", "group_lists", "choose_and_store"]
