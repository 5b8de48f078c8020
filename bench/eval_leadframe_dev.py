"""Retrieval quality on the labelled lead-frame dev set: floors and embedding files.

    python bench/eval_leadframe_dev.py
    python bench/eval_leadframe_dev.py --embeddings runs/gf.npz runs/deepdxf.npz

Protocol of the dev set's README: every member of a group is a query, the other
members its positives, the gallery every other preprocessed drawing (the 26 dev
drawings plus the 67 of ``leadframe/``). Prints the table ``SimDeepDXF.py --groups``
prints (``utils.retrieval.evaluate.compare_table``): each ``--embeddings`` file (``np.savez``
with arrays ``names``, ``embeddings``, as ``SimDeepDXF.py --export`` writes) beside
every floor (random, histogram, raw GF, standardized concatenation, layout grid and
its rotation-robust form), then the floor to beat.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.bench_data import LABELLED_GROUPS  # noqa: E402
from utils.ranking import normalize_name  # noqa: E402
from utils.retrieval.evaluate import compare_table, load_encodings  # noqa: E402


def aligned(path: str, names: list[str]) -> tuple[str, np.ndarray | None]:
    """The embeddings of an ``--embeddings`` file in the order of ``names`` (None when
    the file lacks some of them; the label says how many)."""
    with np.load(path, allow_pickle=False) as z:
        index = {normalize_name(str(n)): i for i, n in enumerate(z["names"])}
        emb = np.asarray(z["embeddings"], dtype=np.float64)
    label = Path(path).stem
    missing = [n for n in names if n not in index]
    if missing:
        return f"{label} (n/a: {len(missing)} gallery drawings missing, e.g. {missing[0]!r})", None
    return label, emb[[index[n] for n in names]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="data/real", help="preprocessed real drawings (GF/, DeepDXF/)")
    parser.add_argument("--groups", default=str(LABELLED_GROUPS),
                        help="JSON list of groups of similar drawing names")
    parser.add_argument("--embeddings", nargs="*", default=[], help="npz files with arrays names, embeddings")
    parser.add_argument("--method", choices=["cosine", "euclidean"], default="cosine")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", choices=["unlabelled", "all"], default="unlabelled",
                        help="rows whose statistics z-score the standardized floors: drawings in no group "
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
    fit_rows = None if args.fit == "unlabelled" else list(range(len(enc["names"])))
    models = [aligned(path, enc["names"]) for path in args.embeddings]
    text, rows = compare_table(models, enc, groups, method=args.method, n_boot=args.n_boot, seed=args.seed,
                               n_random=20, fit_rows=fit_rows)
    print(f"data: {args.data_dir}")
    print(text)
    missing = next((m["missing"] for _, m in rows if m is not None), [])
    if missing:
        print(f"warning: {len(missing)} group members not preprocessed: " + ", ".join(missing), file=sys.stderr)
    if args.json:
        out = {label: dict(m) for label, m in rows if m is not None}
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
