"""The search embedding chosen for the gallery searched (``SimDeepDXF.py --choose``), judged
on groups the choice never saw.

For each labelled gallery and trained joint checkpoint, the gallery's groups are split in
two halves at random (``--splits`` times): the choice is made on one half (as ``--choose``
makes it, over the whole gallery) and judged on the other, beside

- ``auto``: the checkpoint's own choice, made on the archive it was trained on;
- the set's strongest floor over all its groups (the tables' floor to beat), on the judged half;
- the strongest floor *of the judged half*, picked in hindsight among a dozen (biased upward).

Usage::

    python bench/gallery_choice.py --models RUN/ckpt/seed*/best_model.pth \\
        --set kicad-report-kind data/bench/kicad/report data/bench/kicad/report/kind.json ... \\
        --splits 10 --output data/bench/gallery-choice

Writes ``--output``/gallery_choice.md (+ .json) and prints the same table.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dataset.files import atomic_write_text  # noqa: E402
from model.fusion import Block, fuse, with_statistics_of  # noqa: E402
from utils.ranking import paired_interval, query_clusters, read_groups, resolve_groups, retrieval_metrics  # noqa: E402
from utils.retrieval.cache import EmbeddingCache  # noqa: E402
from utils.retrieval.embedders import make_embedder, parts_embedder  # noqa: E402
from utils.retrieval.gallery import build_gallery, collect_files  # noqa: E402
from utils.train.embedding_choice import candidates, choose_from_parts, score  # noqa: E402


def vectors_of(blocks: Sequence[Block], parts: dict[str, np.ndarray]) -> np.ndarray:
    """The searched vectors of ``blocks`` over the gallery ``parts`` (z-scored floors with the gallery)."""
    return fuse(parts, with_statistics_of(blocks, parts))


def paired_over_groups(a: dict, b: dict, groups: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Paired 95 % interval of ``a``'s minus ``b``'s per-query AP (two ``retrieval_metrics``
    results over the same queries), resampling whole ``groups``: a split counts as clearly
    above or below the floor only if the difference holds over its groups, not query by query."""
    return paired_interval(a["per_query_ap"], b["per_query_ap"], clusters=query_clusters(a["queries"], groups))


def judge_set(folder: Path, groups_path: Path, model: Path, splits: int, cache: Path) -> list[dict]:
    """One row per split: the chosen, auto and hindsight-floor mAP on the judged half."""
    embedder = parts_embedder(model)
    gallery = build_gallery(collect_files([folder / "DeepDXF"]), embedder, EmbeddingCache(cache), workers=1,
                            quiet=True, progress_bar=False)
    parts, names = embedder.split(gallery.rows), list(gallery.names)
    index_groups, _ = resolve_groups(names, read_groups(groups_path))
    groups = [[names[i] for i in g] for g in index_groups if len(g) >= 2]
    auto = make_embedder(model, "auto")
    auto_vectors = vectors_of(auto.blocks, parts)
    whole = [c for c in candidates(parts) if c.floor]
    score(whole, parts, names, groups)
    table_floor = max(whole, key=lambda c: c.metrics["mAP"])  # the tables' floor to beat (all groups)
    rows = []
    for split in range(splits):
        order = np.random.default_rng(split).permutation(len(groups))
        chosen_on = [groups[k] for k in order[: len(order) // 2]]
        judged = [groups[k] for k in order[len(order) // 2:]]
        choice = choose_from_parts(parts, names, chosen_on, "the choosing half")
        chosen = retrieval_metrics(vectors_of([Block.from_dict(b) for b in choice["blocks"]], parts), names, judged)
        floors = [c for c in candidates(parts) if c.floor]
        score(floors, parts, names, judged)
        best = max(floors, key=lambda c: c.metrics["mAP"])
        auto_m = retrieval_metrics(auto_vectors, names, judged)
        fixed = next(c for c in floors if c.name == table_floor.name)
        lo, hi = paired_over_groups(chosen, best.metrics, judged)
        rows.append({"split": split, "chosen": choice["name"], "chosen_mAP": chosen["mAP"], "auto": auto.kind,
                     "auto_mAP": auto_m["mAP"], "floor": best.name, "floor_mAP": best.metrics["mAP"],
                     "table_floor": fixed.name, "table_floor_mAP": fixed.metrics["mAP"],
                     "paired_vs_floor": [lo, hi], "n_queries": chosen["n_queries"]})
    return rows


def summarize(name: str, rows: list[dict]) -> str:
    """A markdown line of one set over every model and split."""
    c, a, f, t = (np.array([r[k] for r in rows]) for k in ("chosen_mAP", "auto_mAP", "floor_mAP", "table_floor_mAP"))
    wins = sum(r["paired_vs_floor"][0] > 0 for r in rows)
    losses = sum(r["paired_vs_floor"][1] < 0 for r in rows)
    picks = ", ".join(f"{k} {v}" for k, v in Counter(r["chosen"] for r in rows).most_common(4))
    return (f"| {name} | {rows[0]['n_queries']} | {a.mean():.3f} ± {a.std():.3f} | {c.mean():.3f} ± {c.std():.3f} | "
            f"{rows[0]['table_floor']} {t.mean():.3f} | {f.mean():.3f} ± {f.std():.3f} | {np.mean(c - t):+.3f} | "
            f"{np.mean(c - f):+.3f} | {wins} / {losses} of {len(rows)} | {picks} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="joint checkpoints (e.g. one per seed)")
    p.add_argument("--set", nargs=3, action="append", metavar=("NAME", "DIR", "GROUPS"), required=True,
                   help="a labelled gallery: a preprocessed folder and its groups")
    p.add_argument("--splits", type=int, default=10, help="random halvings of the groups per model")
    p.add_argument("--output", default="data/bench/gallery-choice")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| set | judged queries | auto (chosen at training) | chosen on the other half | the set's "
             "strongest floor (all groups) | strongest floor of the judged half (hindsight) | chosen − set's floor | "
             "chosen − hindsight floor | splits clearly above / below the hindsight floor | chosen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for name, folder, groups in args.set:
        rows = []
        for model in args.models:
            rows += [dict(r, model=model) for r in judge_set(Path(folder), Path(groups), Path(model), args.splits,
                                                             out / "cache")]
        results[name] = rows
        lines.append(summarize(name, rows))
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out / "gallery_choice.md", text + "\n")
    atomic_write_text(out / "gallery_choice.json", json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
