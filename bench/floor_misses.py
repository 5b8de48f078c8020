"""Where the revision floor fails: the wrong drawings ranked above a true revision.

    python bench/floor_misses.py --revisions data/bench/revisions-v2 \\
        --prep data/bench/quality-v3/prep/revisions              # selection split, raw GF floor

For every source drawing of the ``selection`` split (``bench/quality.py``'s protocol,
train drawings as distractors), the gallery is ranked by the raw GF matrices (or by an
exported embedding, ``--embedding file.npz`` with ``names`` and ``embeddings``), and every
drawing of another group that comes before one of the source's revisions is listed with
its similarity. Then, per edit of ``bench/make_revisions.py``, the share of revisions
found within the first ``n_revisions`` places: an edit the embedding cannot absorb shows
as a low share. Selection split only: never point it at the report split to choose
anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.quality import load_encodings_subset, protocol_sets  # noqa: E402
from model.floors import raw_gf_embedding  # noqa: E402
from utils.ranking import similarity_matrix  # noqa: E402


def ranked_misses(names: Sequence[str], emb: np.ndarray, groups: Sequence[Sequence[str]]
                  ) -> tuple[list[tuple[str, str, float]], dict[str, list[int]]]:
    """``(misses, ranks)``: misses are ``(source, wrong drawing, cosine)`` ranked above the
    source's last-found revision; ranks maps each revision to its 0-based rank in its
    source's list. ``emb: [n, d]`` rows in ``names`` order; a group's first name is the source."""
    pos = {n: i for i, n in enumerate(names)}
    sim = similarity_matrix(emb, emb, "cosine")
    np.fill_diagonal(sim, -np.inf)
    misses, ranks = [], {}
    for g in groups:
        src, revs = g[0], [r for r in g[1:] if r in pos]
        if src not in pos or not revs:
            continue
        order = np.argsort(-sim[pos[src]], kind="stable")
        rank = {names[j]: r for r, j in enumerate(order)}
        last = max(rank[r] for r in revs)
        members = set(g)
        misses += [(src, names[j], float(sim[pos[src], j])) for j in order[:last] if names[j] not in members]
        ranks.update({r: rank[r] for r in revs})
    return misses, ranks


def found_by_edit(ranks: dict[str, int], plans: dict[str, dict], n_revisions: int) -> dict[str, tuple[float, int]]:
    """Edit -> (share of revisions with that edit ranked within the first ``n_revisions``, count)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for rev, r in ranks.items():
        for edit in plans.get(rev, {}).get("edits", []):
            hits[edit.split("@")[0].rstrip("0123456789")].append(r < n_revisions)
        hits["(all)"].append(r < n_revisions)
    return {e: (float(np.mean(v)), len(v)) for e, v in sorted(hits.items())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--revisions", default="data/bench/revisions-v2", help="bench/make_revisions.py output")
    parser.add_argument("--prep", default="data/bench/quality-v3/prep/revisions",
                        help="dataset/dxf_process.py output of --revisions")
    parser.add_argument("--embedding", default=None, metavar="FILE.npz",
                        help="an exported embedding (names, embeddings) to judge; none: the raw GF matrices")
    args = parser.parse_args(argv)
    revisions = Path(args.revisions)
    _train, sets = protocol_sets(revisions, Path(args.prep), None, None, None, train_distractors=True)
    s = next(x for x in sets if x.name == "selection-revisions")
    if args.embedding:
        data = np.load(args.embedding, allow_pickle=False)
        index = {str(n): i for i, n in enumerate(data["names"])}
        keep = [n for n in s.names if n in index]
        emb = data["embeddings"][[index[n] for n in keep]]
        label = Path(args.embedding).name
    else:
        keep = list(s.names)
        enc = load_encodings_subset(s, keep)
        emb, label = raw_gf_embedding(enc["gf_features"], enc["gf_adjacency"]), "raw GF matrices"
    meta = json.loads((revisions / "revisions.json").read_text(encoding="utf-8"))
    misses, ranks = ranked_misses(keep, emb, s.groups)
    print(f"{label}: {len(s.groups)} selection sources, gallery {len(keep)} drawings; "
          f"{len(misses)} wrong drawings ranked above a revision:")
    for src, wrong, cos in misses:
        print(f"  {src}  <-  {wrong}   cos {cos:.3f}")
    late = sorted((r, rev) for rev, r in ranks.items() if r >= meta["n_revisions"])
    print(f"\nrevisions ranked after place {meta['n_revisions']}:")
    for r, rev in late:
        info = meta["revisions"].get(rev, {})
        print(f"  {rev}: place {r + 1}; edits {', '.join(info.get('edits', []))}; "
              f"{info.get('n_source', '?')} -> {info.get('n_result', '?')} entities")
    print(f"\nrevisions found within the first {meta['n_revisions']} places, by edit:")
    for edit, (share, n) in found_by_edit(ranks, meta["revisions"], meta["n_revisions"]).items():
        print(f"  {edit:12s} {share:.2f}  ({n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
