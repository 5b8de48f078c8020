"""Retrieval quality on the labelled lead-frame dev set: floors and embedding files.

    python bench/eval_leadframe_dev.py
    python bench/eval_leadframe_dev.py --embeddings runs/gf.npz runs/deepdxf.npz

Protocol of ``../shared/dxf/leadframe-dev/README.md``: every member of a group is a
query, the other members its positives, the gallery every other preprocessed
drawing (the 26 dev drawings plus the 67 of ``leadframe/``). Prints a markdown
table of the floors (random, histogram, raw GF, standardized concatenation) and of
each ``--embeddings`` file (``np.savez`` with arrays ``names``, ``embeddings``, as
``SimDeepDXF.py --export`` writes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from utils.retrieval import (  # noqa: E402
    floor_table,
    format_table,
    load_encodings,
    normalize_name,
    retrieval_metrics,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="data/real", help="preprocessed real drawings (GF/, DeepDXF/)")
    parser.add_argument("--groups", default="../shared/dxf/leadframe-dev/groups.json",
                        help="JSON list of groups of similar drawing names")
    parser.add_argument("--embeddings", nargs="*", default=[], help="npz files with arrays names, embeddings")
    parser.add_argument("--method", choices=["cosine", "euclidean"], default="cosine")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", choices=["unlabelled", "all"], default="unlabelled",
                        help="rows whose statistics z-score the concatenation: drawings in no group "
                             "(the unlabelled training drawings) or all")
    parser.add_argument("--json", default=None, help="also write all metrics to this JSON file")
    args = parser.parse_args(argv)

    groups_path = Path(args.groups)
    if not groups_path.is_file():
        print(f"error: no groups file at {groups_path}", file=sys.stderr)
        return 2
    groups = json.loads(groups_path.read_text(encoding="utf-8"))
    try:
        enc = load_encodings(args.data_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    fit_rows = None
    if args.fit == "unlabelled":
        labelled = {normalize_name(n) for g in groups for n in g}
        fit_rows = [i for i, n in enumerate(enc["names"]) if n not in labelled] or None
    rows = floor_table(enc, groups, method=args.method, seed=args.seed, fit_rows=fit_rows)
    first = rows[1][1]
    print(f"gallery: {first['n_gallery']} drawings from {args.data_dir}; "
          f"queries: {first['n_queries']}; similarity: {args.method}")
    if first["missing"]:
        print(f"warning: {len(first['missing'])} group members not preprocessed: "
              + ", ".join(first["missing"]), file=sys.stderr)

    for path in args.embeddings:
        with np.load(path, allow_pickle=False) as z:
            names = [normalize_name(str(n)) for n in z["names"]]
            emb = np.asarray(z["embeddings"], dtype=np.float64)
        m = retrieval_metrics(emb, names, groups, method=args.method)
        label = Path(path).stem
        if m["n_gallery"] != first["n_gallery"] or m["n_queries"] != first["n_queries"]:
            label += f" (gallery {m['n_gallery']}, queries {m['n_queries']})"
        rows.append((label, m))

    print(format_table(rows, n_boot=args.n_boot, seed=args.seed))
    if args.json:
        out = {label: {k: v for k, v in m.items()} for label, m in rows}
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
