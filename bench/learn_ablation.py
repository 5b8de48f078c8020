"""Ablations of the learned embedding on the selection split only (never the report split).

    python bench/learn_ablation.py --revisions data/bench/revisions-hard \\
        --prep data/bench/quality-hard/prep/revisions --output data/bench/ablation \\
        --variants base views --seeds 0 1 2 --epochs 10

For every training variant (extra ``joint_main.py`` flags, :data:`VARIANTS`) and seed, a
joint model is trained on the ``train`` split (``bench/quality.py``'s protocol and
training function; checkpoints cached under ``--output``), then the drawings of the
``selection-revisions`` set (with the train drawings as distractors when
``--train_distractors``) are embedded in-process and judged beside every floor:

- learned: ``joint``, its ``gf`` and ``deepdxf`` parts;
- combined (``utils.retrieval.embedders.fuse``): ``joint`` plus floor blocks, for
  each block set of :data:`BLOCK_SETS` and each weight of ``--weights``;
- floors: histogram, raw GF, standardized histogram + raw GF, layout, layout_rot;
- with ``--untrained``: the same networks before training (fresh weights of the seed),
  what training has to beat to have added anything.

``--cv K`` chooses on more drawings: K folds over the sources of the train and selection
splits together, each fold's sources judged by models trained on the other folds (K
models per variant and seed), the folds' queries joined into one table. The report split
stays untouched either way.

Learned and combined rows are the mean over seeds with a bootstrap 95 % interval over
queries (of the per-query AP averaged over seeds). The table is printed and written to
``--output``/ablation.md and ablation.json; the measured tables are kept in
``bench/learn_ablation.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.quality import (  # noqa: E402
    Entry, Runner, _link_farm, _prepared, _short_hash, build_table, defaults_fingerprint, extra_training, format_markdown,
    protocol_sets, train)
from dataset.files import atomic_write_text  # noqa: E402
from model.floors import floor_block  # noqa: E402
from utils.retrieval.embedders import Block, block_statistics, fuse, make_embedder, part_functions  # noqa: E402
from utils.retrieval.encodings import DrawingEncoding, load_drawing, stack_encodings  # noqa: E402
from utils.train.checkpoint import load_checkpoint  # noqa: E402
from utils.ranking import METRIC_KEYS, bootstrap_interval, retrieval_metrics  # noqa: E402
from utils.retrieval.evaluate import floor_table  # noqa: E402

#: training variants: name -> extra joint_main.py flags
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "views": ["--DeepDXF_aug_turn", "--DeepDXF_aug_mirror", "--DeepDXF_aug_edit"],
    "turn": ["--DeepDXF_aug_turn", "--DeepDXF_aug_mirror"],
    "gf_layout": ["--GF_layout_features"],  # the default since encoding format 2 (same as base)
    "no_gf_layout": ["--no-GF_layout_features"],
    "views_gf_layout": ["--DeepDXF_aug_turn", "--DeepDXF_aug_mirror", "--DeepDXF_aug_edit", "--GF_layout_features"],
    "group": ["--group_weight", "1"],  # the default since round 4 (same as base)
    "no_group": ["--group_weight", "0"],
    "group4": ["--group_weight", "4"],
    # the GF node-level loss contrasts the classes of one drawing, which the concat pooling
    # already tells apart; these train both encoders by the graph-level group term alone
    "group_only": ["--weighting", "fixed", "--w_GF", "0", "--w_DeepDXF", "0", "--group_weight", "1"],
    "group_no_gf_loss": ["--weighting", "fixed", "--w_GF", "0", "--group_weight", "1"],
    "group_views": ["--group_weight", "1", "--DeepDXF_aug_turn", "--DeepDXF_aug_mirror", "--DeepDXF_aug_edit"],
}
#: floor blocks appended to the joint embedding: name -> ((block, z-scored?), ...)
BLOCK_SETS: dict[str, tuple[tuple[str, bool], ...]] = {
    "gf_raw": (("gf_raw", False),),
    "gf_raw+layout_rot": (("gf_raw", False), ("layout_rot", True)),
    "hist+gf_raw": (("hist", True), ("gf_raw", False)),
    "hist+gf_raw+layout_rot": (("hist", True), ("gf_raw", False), ("layout_rot", True)),
    "hist+gf_z+layout_rot": (("hist", True), ("gf", True), ("layout_rot", True)),
}


def encodings_of(names: Sequence[str], prep: Path) -> list[DrawingEncoding]:
    """The preprocessed encodings (``prep/DeepDXF/<name>.h5`` with its GF twin) of ``names``."""
    return [load_drawing(prep / "DeepDXF" / f"{n}.h5") for n in names]


def combined_rows(learned: np.ndarray, arrays: dict, weights: Sequence[float]) -> dict[str, np.ndarray]:
    """``joint + <blocks> w=<weight>`` -> combined embedding ``[n, D + ...]`` (the gallery
    itself is the z-scoring reference)."""
    out = {}
    for set_name, blocks in BLOCK_SETS.items():
        parts = {"learned": learned, **{b: floor_block(b, arrays) for b, _ in blocks}}
        for w in weights:
            fused = [Block("learned")] + [Block(b, w, *(block_statistics(parts[b]) if z else (None, None)))
                                          for b, z in blocks]
            out[f"joint + {set_name} (w={w:g})"] = fuse(parts, fused)
    return out


def untrained_rows(ckpt: Path, encs: Sequence[DrawingEncoding], seed: int) -> dict[str, np.ndarray]:
    """``joint``/``gf``/``deepdxf`` of the checkpoint's networks *before training*: the same
    config, fresh weights drawn with ``seed`` (a floor for what training adds)."""
    import torch

    from config.GF_config import SAVED_CONFIG_FALLBACKS
    from model.DeepDXF_model import deepdxf_model_from_config
    from model.GF_model import gf_model_from_config

    config = load_checkpoint(ckpt)["config"]
    torch.manual_seed(seed)
    gf, dd = gf_model_from_config(config).eval(), deepdxf_model_from_config(config).eval()
    # the trained embedders' own functions (GF layout node features included when configured)
    parts = part_functions(gf, dd, bool(config.get("GF_layout_features", SAVED_CONFIG_FALLBACKS["GF_layout_features"])))
    return {f"{name}, untrained": parts[name](list(encs)) for name in ("joint", "gf", "deepdxf")}


def selection_set(name: str, names: Sequence[str], groups: Sequence[Sequence[str]], prep: Path) -> dict:
    """An evaluation set: its drawings' encodings, stacked arrays and floor rows."""
    encs = encodings_of(names, prep)
    arrays = stack_encodings(encs)
    enc = {"names": list(names), **{k: arrays[k] for k in ("type_counts", "gf_features", "gf_adjacency", "layout")}}
    floors = [Entry(label, "floor", [m]) for label, m in floor_table(enc, groups) if m is not None]
    return {"name": name, "names": list(names), "groups": [list(g) for g in groups], "encs": encs,
            "arrays": arrays, "floors": floors}


def kinds_set(folder: Path, prep: Path) -> dict:
    """The ``selection-kinds`` set: ``folder/groups.json`` restricted to the drawings ``prep`` holds."""
    have = _prepared(prep)
    groups = [[n for n in g if n in have] for g in json.loads((folder / "groups.json").read_text(encoding="utf-8"))]
    groups = [g for g in groups if len(g) >= 2]
    return selection_set("selection-kinds", sorted(n for g in groups for n in g), groups, prep)


@dataclass
class Fold:
    """One training set and the revision set its models are judged on."""

    name: str
    fit_names: list[str]          # drawings the models train on
    sources: dict[str, Path]      # name -> preprocessing root of each training drawing
    revisions: dict               # the selection_set() its models are judged on


def cv_folds(revisions: Path, prep: Path, k: int, seed: int, distractors: bool,
             sources_only: bool) -> list[tuple[list[str], list[str], list[list[str]]]]:
    """``k`` folds over the source drawings of the train and selection splits together
    (the report split is never touched): ``(train names, gallery names, query groups)``
    per fold. A fold's groups are its sources with their revisions; the models of the fold
    train on the other folds' drawings (sources only with ``sources_only``), which also
    join its gallery as distractors with ``distractors``."""
    from sklearn.model_selection import KFold

    splits = json.loads((revisions / "splits.json").read_text(encoding="utf-8"))
    have = _prepared(prep)
    by_source = {g[0]: [n for n in g if n in have]
                 for g in json.loads((revisions / "groups.json").read_text(encoding="utf-8"))}
    pool = [s for s in splits["train"] + splits["selection"] if by_source.get(s)]
    out = []
    for rest, held in KFold(n_splits=k, shuffle=True, random_state=seed).split(pool):
        groups = [by_source[pool[i]] for i in held]
        others = [n for i in rest for n in by_source[pool[i]]]
        fit = [pool[i] for i in rest if pool[i] in have] if sources_only else others
        gallery = [n for g in groups for n in g] + (others if distractors else [])
        out.append((sorted(fit), sorted(gallery), groups))
    return out


def concat_queries(runs: Sequence[dict]) -> dict:
    """One metrics dict of folds that judged *different* queries (their query lists joined)."""
    runs = [r for r in runs if r["n_queries"]]
    per_query = {k: [v for r in runs for v in r["per_query"][k]] for k in METRIC_KEYS}
    out = {k: float(np.mean(per_query[k])) for k in METRIC_KEYS}
    out.update({"n_queries": sum(r["n_queries"] for r in runs), "n_gallery": max(r["n_gallery"] for r in runs),
                "missing": sorted({m for r in runs for m in r["missing"]}),
                "queries": [q for r in runs for q in r["queries"]], "per_query_ap": per_query["mAP"],
                "per_query": per_query})
    return out


def average_runs(runs: Sequence[dict]) -> dict:
    """One metrics dict of several models that judged the *same* queries (per-query means)."""
    per_query = {k: np.mean([r["per_query"][k] for r in runs], axis=0).tolist() for k in METRIC_KEYS}
    out = dict(runs[0])
    out.update({k: float(np.mean(per_query[k])) for k in METRIC_KEYS})
    out.update({"per_query_ap": per_query["mAP"], "per_query": per_query})
    return out


def revision_floors(folds: Sequence[Fold]) -> list[Entry]:
    """The floor rows of the revision set: each floor's metrics of every fold, queries joined."""
    return [Entry(e.label, "floor", [concat_queries([f.revisions["floors"][i].runs[0] for f in folds])])
            for i, e in enumerate(folds[0].revisions["floors"])]


def learned_entries(runs: dict[str, dict[int, list[dict]]], n_folds: int, disjoint: bool) -> list[Entry]:
    """Learned rows from ``label -> seed -> one metrics dict per fold``: one run per seed.

    ``disjoint``: the folds judged different queries (the revision set), which are joined,
    and a seed whose folds did not all train is left out; otherwise every fold judged the
    same queries (the kinds set), which are averaged over the folds that trained.
    """
    merge = concat_queries if disjoint else average_runs
    return [Entry(label, "inductive", [merge(per_fold) for per_fold in by_seed.values()
                                       if not disjoint or len(per_fold) == n_folds])
            for label, by_seed in runs.items()]


def paired_differences(tables: dict[str, dict], reference: str = "base",
                       labels: Sequence[str] = ("joint", "gf", "deepdxf"), n_boot: int = 1000) -> list[str]:
    """What training and each variant add, paired over the same queries.

    ``tables``: ``"<set>/<variant>"`` -> :func:`build_table` result. For every learned row
    of ``labels``, the mean per-query AP difference with a bootstrap 95 % interval against
    its untrained twin (``"<label>, untrained"``, with ``--untrained``) and against the
    same row of the ``reference`` variant (when it ran). Returns markdown list lines.
    """
    def per_query(table: dict, label: str) -> np.ndarray:
        row = next((r for r in table["rows"] if r["label"] == label and r["kind"] == "inductive"), None)
        return np.asarray(row["per_query_ap"] if row else [], dtype=np.float64)

    def paired(a: np.ndarray, b: np.ndarray) -> str:
        lo, hi = bootstrap_interval(a - b, n_boot=n_boot)
        return f"{(a - b).mean():+.3f} ({lo:+.3f} to {hi:+.3f})"

    lines = []
    for key, table in tables.items():
        set_name, variant = key.split("/", 1)
        ref = tables.get(f"{set_name}/{reference}") if variant != reference else None
        for label in labels:
            a = per_query(table, label)
            if not a.size:
                continue
            parts = []
            u = per_query(table, f"{label}, untrained")
            if u.size == a.size:
                parts.append(f"vs untrained {paired(a, u)}")
            b = per_query(ref, label) if ref is not None else np.zeros(0)
            if b.size == a.size:
                parts.append(f"vs {reference} {paired(a, b)}")
            if parts:
                lines.append(f"- {set_name}, {variant}, {label}: " + "; ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--revisions", default="data/bench/revisions", help="bench/make_revisions.py output")
    parser.add_argument("--prep", default="data/bench/quality/prep/revisions",
                        help="its preprocessing (bench/quality.py writes it under <output>/prep/revisions)")
    parser.add_argument("--output", default="data/bench/ablation", help="cache and result folder")
    parser.add_argument("--variants", nargs="+", default=["base", "views"], choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k_folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="floor block weights of the combined embeddings")
    parser.add_argument("--train_distractors", action="store_true",
                        help="the train drawings join the selection gallery as distractors")
    parser.add_argument("--train_args", default="", help="extra joint_main.py flags for every variant")
    parser.add_argument("--extra_train", nargs="*", default=[],
                        help="preprocessed folders (dataset/dxf_process.py output) whose drawings join the training "
                             "set, e.g. revisions of other drawings made with bench/make_revisions.py --fractions 1 0 0")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="choose on K folds over the sources of the train and selection splits together instead "
                             "of the one selection split: each fold's sources are judged by models trained on the "
                             "other folds (K models per variant and seed); the report split stays untouched")
    parser.add_argument("--train_sources_only", action="store_true",
                        help="train on the train split's source drawings alone, without their generated revisions "
                             "(as on an archive that has no revisions); the galleries stay the same")
    parser.add_argument("--kinds", default="",
                        help="a second selection set for 'same kind': a folder with groups.json (drawing names) and "
                             "its preprocessing in --kinds_prep (e.g. a symbol library's categories)")
    parser.add_argument("--kinds_prep", default="", help="dataset/dxf_process.py output of --kinds")
    parser.add_argument("--untrained", action="store_true",
                        help="also judge each model's networks before training (same config, fresh weights of the seed)")
    parser.add_argument("--n_boot", type=int, default=1000)
    args = parser.parse_args(argv)

    out, prep, revisions = Path(args.output), Path(args.prep), Path(args.revisions)
    run = Runner(out, args.threads)
    t0 = time.perf_counter()
    if args.cv:
        plans = cv_folds(revisions, prep, args.cv, 0, args.train_distractors, args.train_sources_only)
        plans = [(f"cv{k}of{args.cv}", fit, gallery, groups) for k, (fit, gallery, groups) in enumerate(plans)]
        print(f"{args.cv} folds over {sum(len(p[3]) for p in plans)} train + selection sources "
              f"(galleries {', '.join(str(len(p[2])) for p in plans)} drawings)", flush=True)
    else:
        train_names, sets = protocol_sets(revisions, prep, None, None, None, args.train_distractors)
        sel = next(s for s in sets if s.name == "selection-revisions")
        print(f"train {len(train_names)} drawings; selection gallery {len(sel.names)}, {len(sel.groups)} groups",
              flush=True)
        fit_train = train_names
        if args.train_sources_only:
            firsts = {g[0] for g in json.loads((revisions / "groups.json").read_text(encoding="utf-8"))}
            fit_train = [n for n in train_names if n in firsts]
        plans = [("selection", fit_train, sel.names, sel.groups)]
    if args.train_sources_only:
        print("training on source drawings only, without their revisions", flush=True)
    kinds = kinds_set(Path(args.kinds), Path(args.kinds_prep)) if args.kinds else None
    if kinds is not None:
        print(f"selection-kinds: {len(kinds['names'])} drawings, {len(kinds['groups'])} groups", flush=True)

    folds = []
    for name, fit_train, gallery, groups in plans:
        sources = extra_training([Path(d) for d in args.extra_train], exclude=set(fit_train) | set(gallery))
        sources.update({n: prep for n in fit_train})
        folds.append(Fold(name, sorted(sources), sources, selection_set("selection-revisions", gallery, groups, prep)))
    if args.extra_train:
        print(f"training sets: {', '.join(str(len(f.fit_names)) for f in folds)} drawings, with those of "
              f"{', '.join(args.extra_train)}", flush=True)
    set_names = ["selection-revisions"] + (["selection-kinds"] if kinds is not None else [])
    md, results = [], {}
    for variant in args.variants:
        extra = VARIANTS[variant] + args.train_args.split()
        # set -> label -> seed -> one metrics dict per fold
        runs: dict[str, dict[str, dict[int, list[dict]]]] = {n: {} for n in set_names}
        for seed in args.seeds:
            for fold in folds:
                data_dir = _link_farm(out / "train" / _short_hash(fold.fit_names), fold.fit_names, fold.sources)
                tag = f"{variant}-e{args.epochs}-s{seed}-{_short_hash(fold.fit_names + extra)}-d{defaults_fingerprint()}"
                ckpt = train(run, data_dir, out / "models" / f"{tag}.pth", args.epochs, args.k_folds, seed, extra, tag)
                if ckpt is None:
                    print(f"  note: {variant} seed {seed} {fold.name}: training failed (see {out / 'logs'})")
                    continue
                joint_embedder = make_embedder(ckpt, "joint")
                gf_dim = make_embedder(ckpt, "gf").embed(fold.revisions["encs"][:1]).shape[1]
                for es in [fold.revisions] + ([kinds] if kinds is not None else []):
                    joint = joint_embedder.embed(es["encs"]).astype(np.float64)
                    rows = {"joint": joint, "gf": joint[:, :gf_dim], "deepdxf": joint[:, gf_dim:]}
                    rows.update(combined_rows(joint, es["arrays"], args.weights))
                    if args.untrained:
                        rows.update(untrained_rows(ckpt, es["encs"], seed))
                    for label, emb in rows.items():
                        runs[es["name"]].setdefault(label, {}).setdefault(seed, []).append(
                            retrieval_metrics(emb, es["names"], es["groups"]))
        for set_name in set_names:
            disjoint = set_name == "selection-revisions"  # each fold judged its own revision queries
            floors = revision_floors(folds) if disjoint else kinds["floors"]
            table = build_table(floors + learned_entries(runs[set_name], len(folds), disjoint), n_boot=args.n_boot)
            results[f"{set_name}/{variant}"] = table
            md.append(format_markdown(f"{set_name}, variant {variant} ({' '.join(extra) or 'defaults'}), "
                                      f"{args.epochs} epochs", table))
            print(md[-1], flush=True)
    trained_on = (f"{args.cv} folds over the train and selection sources (each fold judged by models trained on the "
                  f"others, {', '.join(str(len(f.fit_names)) for f in folds)} drawings)" if args.cv
                  else f"the train split ({len(folds[0].fit_names)} drawings)")
    header = (f"Selection split only (the report split untouched). Joint models trained on {trained_on}"
              + (", sources only" if args.train_sources_only else "")
              + (f", with {', '.join(args.extra_train)}" if args.extra_train else "")
              + ", "
              f"seeds {args.seeds}, {args.epochs} epochs; revisions from {revisions}"
              + ("; train drawings as distractors" if args.train_distractors else "") + ".")
    diffs = paired_differences(results, n_boot=args.n_boot)
    if diffs:
        md.append("### Paired differences (mean per-query AP, 95 % bootstrap interval over the same queries)\n\n"
                  + "\n".join(diffs))
        print(md[-1], flush=True)
    text = header + "\n\n" + "\n\n".join(md) + "\n"
    atomic_write_text(out / "ablation.md", text)
    atomic_write_text(out / "ablation.json", json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {out / 'ablation.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
