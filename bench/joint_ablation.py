"""Ablation of joint training: retrieval mAP on the lead-frame dev set (README table).

    python bench/joint_ablation.py                       # data/real, every variant, 1 seed
    python bench/joint_ablation.py --variants gf deepdxf joint-uncertainty --seeds 0 1

Every variant is trained self-supervised on the same drawings (``--data_dir``, plus
``--extra_dirs`` merged by symlinks) with the same fold, epochs and batch layout:

* ``gf``: ``GF_main.py`` alone; ``deepdxf``: ``DeepDXF_train.py`` alone, with the
  DeepDXF batch size the joint runs derive (so both see batches of the same size);
* ``joint-<weighting>``: ``joint_main.py`` without the cross-model term, for each
  weighting; ``joint-<weighting>-cross``: with it (``--cross_weight``).

Then every drawing of ``bench/eval_leadframe_dev.py``'s gallery (the 93 preprocessed
real drawings) is embedded, and retrieval is scored on the 26 dev queries (cosine):
the GF part, the DeepDXF part, and their concatenation (each block L2-normalized,
what ``SimDeepDXF.py --embedding joint`` does); for the separately trained models the
concatenation of the two is the control a joint model has to beat. The floors are
printed beside them. Results accumulate in ``--out`` (JSON; finished runs are not
redone), and a markdown table is printed.

Result (2026-11-26, a snapshot of the working tree at 19:29 UTC: HEAD b40e142 plus the GF/DeepDXF
engineers' uncommitted work; 1 CPU thread, ~35 s per joint
run): data/real (93 drawings, no test split, fold 0 of 5: 71 train / 22 val), 30 epochs
(3 steps each, patience 5), GF_batch_size 16, derived DeepDXF batch 23; mAP mean ± std
over 5 seeds (the CI is seed 0's bootstrap over the 26 queries):

| embedding (trained on the same drawings) | GF part | DeepDXF part | GF+DeepDXF concat | 95% CI |
|---|---|---|---|---|
| GF alone (GF_main.py) | 0.771 ± 0.008 | | | 0.646–0.871 |
| DeepDXF alone (DeepDXF_train.py) | | 0.654 ± 0.039 | | 0.529–0.770 |
| GF alone + DeepDXF alone, concatenated | | | 0.738 ± 0.051 | 0.538–0.734 |
| joint, fixed | 0.761 ± 0.009 | 0.688 ± 0.039 | 0.796 ± 0.037 | 0.742–0.937 |
| joint, uncertainty | 0.763 ± 0.009 | 0.686 ± 0.041 | 0.801 ± 0.038 | 0.742–0.936 |
| joint, gradnorm | 0.762 ± 0.009 | 0.688 ± 0.042 | 0.788 ± 0.028 | 0.704–0.906 |
| joint, dwa | 0.762 ± 0.009 | 0.688 ± 0.038 | 0.796 ± 0.037 | 0.742–0.937 |
| joint, fixed + cross term (0.5) | 0.765 ± 0.019 | 0.696 ± 0.041 | 0.784 ± 0.014 | 0.678–0.895 |
| joint, uncertainty + cross term (0.5) | 0.767 ± 0.021 | 0.704 ± 0.045 | 0.790 ± 0.021 | 0.690–0.895 |
| floors: histogram / raw GF / standardized concat | | | 0.593 / 0.674 / 0.726 | |

Reading: without the cross term the two models share nothing, and AdamW with
per-model clipping is invariant to a loss's scale, so the four weightings give the
same embeddings up to noise. The joint DeepDXF part beats DeepDXF alone because of
batching (random same-drawing parts vs. length-grouped batches), not because of the
other model. The cross term lifts each part a little (+0.004 GF, +0.016 DeepDXF) and
narrows the seed spread, but not the concatenation (-0.01); every difference between
joint variants is below the dev set's noise (~0.05). The joint concatenation beats
both floors and both parts (GF alone by only +0.03, inside the noise). Adding
data/thirdparty (1,650 small drawings, seed 0, 4 epochs) did not help: joint
uncertainty concat 0.781, with cross 0.770 (GF alone 0.763, DeepDXF alone 0.647).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.bench_data import LABELLED_GROUPS  # noqa: E402
from dataset.formats import DEFAULT_GROUP_PATTERN  # noqa: E402
from dataset.dxf_process_DeepDXF import load_h5_rows  # noqa: E402
from model.DeepDXF_model import embed_sequences  # noqa: E402
from model.GF_model import embed_graphs  # noqa: E402
from utils.train.checkpoint import load_trained_models  # noqa: E402
from utils.train.splits import make_split  # noqa: E402
from utils.retrieval import bootstrap_interval, floor_table, load_encodings, normalize_name, retrieval_metrics  # noqa: E402

VARIANTS = ("gf", "deepdxf", "joint-fixed", "joint-uncertainty", "joint-gradnorm", "joint-dwa",
            "joint-fixed-cross", "joint-uncertainty-cross")


def merged_data_dir(data_dir: Path, extra: list[Path], work: Path) -> Path:
    """A folder whose GF/ and DeepDXF/ link every drawing of ``data_dir`` and ``extra``."""
    if not extra:
        return data_dir
    out = work / "merged_data"
    for sub, ext in (("GF", "npz"), ("DeepDXF", "h5")):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for d in [data_dir, *extra]:
            for p in (d / sub).glob(f"*.{ext}"):
                link = out / sub / p.name
                if not link.exists():
                    link.symlink_to(p.resolve())
    return out


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_all(gf, dx, enc: dict, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """GF part, DeepDXF part and their L2-normalized concatenation for every gallery drawing."""
    out = {}
    if gf is not None:
        out["GF"] = embed_graphs(gf, enc["gf_features"], enc["gf_adjacency"])
    if dx is not None:
        out["DeepDXF"] = embed_sequences(dx, arrays)
    if gf is not None and dx is not None:
        out["concat"] = np.concatenate([l2(out["GF"]), l2(out["DeepDXF"])], axis=1)
    return out


def train_variant(variant: str, args: argparse.Namespace, data_dir: Path, seed: int, work: Path,
                  dx_batch: int) -> tuple[Path, float]:
    """Train one variant; returns (best checkpoint, seconds)."""
    run = f"{variant}-s{seed}"
    common = ["--data_dir", str(data_dir), "--epochs", str(args.epochs), "--k_folds", str(args.k_folds),
              "--fold", "0", "--test_fraction", str(args.test_fraction), "--seed", str(seed),
              "--patience", str(args.patience), "--run_name", run, "--group_pattern", DEFAULT_GROUP_PATTERN,
              "--logs_dir", str(work / "logs"), "--checkpoints_dir", str(work / "ckpt")]
    common += ["--num_threads", str(args.threads)]
    t0 = time.time()
    if variant == "gf":
        import GF_main

        GF_main.main(common + ["--GF_batch_size", str(args.GF_batch_size)])
    elif variant == "deepdxf":
        import DeepDXF_train

        DeepDXF_train.main(common + ["--DeepDXF_batch_size", str(dx_batch)])
    else:
        import joint_main

        parts = variant.split("-")
        cross = args.cross_weight if parts[-1] == "cross" else 0.0
        joint_main.main(common + ["--GF_batch_size", str(args.GF_batch_size), "--weighting", parts[1],
                                  "--cross_weight", str(cross)])
    return work / "ckpt" / run / "best_model.pth", time.time() - t0


def models_of(ckpt_path: Path):
    trained = load_trained_models(ckpt_path)
    return trained.gf, trained.deepdxf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="data/real")
    p.add_argument("--extra_dirs", nargs="*", default=[], help="more preprocessed folders to train on (e.g. data/thirdparty)")
    p.add_argument("--groups", default=str(LABELLED_GROUPS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--k_folds", type=int, default=5)
    p.add_argument("--test_fraction", type=float, default=0.0)
    p.add_argument("--GF_batch_size", type=int, default=16)
    p.add_argument("--cross_weight", type=float, default=0.5)
    p.add_argument("--work_dir", default="/tmp/joint_ablation")
    p.add_argument("--out", default="bench/joint_ablation.json")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of every run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = merged_data_dir(Path(args.data_dir), [Path(d) for d in args.extra_dirs], work)
    groups = json.loads(Path(args.groups).read_text(encoding="utf-8"))
    enc = load_encodings(args.data_dir)
    arrays = [load_h5_rows(Path(args.data_dir) / "DeepDXF" / f"{n}.h5") for n in enc["names"]]
    names = [normalize_name(n) for n in enc["names"]]
    labelled = {normalize_name(n) for g in groups for n in g}
    fit_rows = [i for i, n in enumerate(names) if n not in labelled] or None

    # the DeepDXF batch size the joint runs derive (fold 0 of the same split)
    from config.joint_config import JointConfig
    from dataset.loaders.joint import JointData

    jcfg = JointConfig(data_dir=str(data_dir), k_folds=args.k_folds, test_fraction=args.test_fraction,
                       GF_batch_size=args.GF_batch_size)
    results: dict = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for seed in args.seeds:
        jcfg.seed = seed
        data = JointData(jcfg)
        split = make_split(data.names, jcfg.test_fraction, jcfg.k_folds, jcfg.seed, jcfg.group_pattern)
        train_loader = data.fold_loaders(split, 0)[0]
        dx_batch = train_loader.deepdxf_batch_size
        for variant in args.variants:
            key = f"{variant}-s{seed}"
            if key in results:
                continue
            ckpt, seconds = train_variant(variant, args, data_dir, seed, work, dx_batch)
            gf, dx = models_of(ckpt)
            embs = embed_all(gf, dx, enc, arrays)
            results[key] = {"variant": variant, "seed": seed, "seconds": round(seconds, 1),
                            "train_drawings": len(train_loader.indices), "DeepDXF_batch": dx_batch,
                            "mAP": {k: retrieval_metrics(e, names, groups)["mAP"] for k, e in embs.items()},
                            "per_query_ap": {k: retrieval_metrics(e, names, groups)["per_query_ap"] for k, e in embs.items()}}
            print(f"{key}: {results[key]['mAP']} ({seconds:.0f} s)", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
        # the control: separately trained GF and DeepDXF, concatenated
        key = f"gf+deepdxf-s{seed}"
        if key not in results and f"gf-s{seed}" in results and f"deepdxf-s{seed}" in results:
            gf, _ = models_of(work / "ckpt" / f"gf-s{seed}" / "best_model.pth")
            _, dx = models_of(work / "ckpt" / f"deepdxf-s{seed}" / "best_model.pth")
            e = embed_all(gf, dx, enc, arrays)["concat"]
            m = retrieval_metrics(e, names, groups)
            results[key] = {"variant": "gf+deepdxf (separate)", "seed": seed, "mAP": {"concat": m["mAP"]},
                            "per_query_ap": {"concat": m["per_query_ap"]}}
            Path(args.out).write_text(json.dumps(results, indent=1))

    print(table(results, enc, groups, fit_rows))
    return 0


def table(results: dict, enc: dict, groups: list, fit_rows) -> str:
    """Markdown: variant | GF part | DeepDXF part | concat (mean over seeds, 95% CI of the first seed's concat)."""
    lines = ["| embedding (trained on the same drawings) | GF part | DeepDXF part | GF+DeepDXF concat | 95% CI (concat or part) | train s |",
             "|---|---|---|---|---|---|"]
    by_variant: dict[str, list[dict]] = {}
    for r in results.values():
        by_variant.setdefault(r["variant"], []).append(r)

    def cell(rs: list[dict], k: str) -> str:
        v = [r["mAP"][k] for r in rs if k in r["mAP"]]
        if not v:
            return ""
        return f"{np.mean(v):.3f}" + (f" ± {np.std(v):.3f} (n={len(v)})" if len(v) > 1 else "")

    for variant, rs in by_variant.items():
        key = "concat" if "concat" in rs[0]["mAP"] else next(iter(rs[0]["mAP"]))
        lo, hi = bootstrap_interval(rs[0]["per_query_ap"][key], n_boot=1000, seed=0)
        secs = [r.get("seconds") for r in rs if r.get("seconds") is not None]
        lines.append(f"| {variant} | {cell(rs, 'GF')} | {cell(rs, 'DeepDXF')} | {cell(rs, 'concat')} | "
                     f"{lo:.3f}–{hi:.3f} | {np.mean(secs):.0f} |" if secs else
                     f"| {variant} | {cell(rs, 'GF')} | {cell(rs, 'DeepDXF')} | {cell(rs, 'concat')} | {lo:.3f}–{hi:.3f} | |")
    for label, m in floor_table(enc, groups, fit_rows=fit_rows, n_random=5)[1:]:
        lo, hi = bootstrap_interval(m["per_query_ap"], n_boot=1000, seed=0)
        lines.append(f"| floor: {label} | | | {m['mAP']:.3f} | {lo:.3f}–{hi:.3f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
