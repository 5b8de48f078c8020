"""Retrieval quality on any labelled archive: the default embedding (chosen per archive by
``joint_main.py``) beside every floor, on evaluation sets the model never trained on.

    python bench/archive_quality.py --train data/bench/kicad/train data/bench/lf-train \
        --train_groups data/bench/kicad/train/groups.json \
        --set kicad-selection-kind data/bench/kicad/selection data/bench/kicad/selection/kind.json \
        --set kicad-selection-variant data/bench/kicad/selection data/bench/kicad/selection/variant.json \
        --seeds 0 1 2 --epochs 8 --output data/bench/archive-quality

``--train``: preprocessed folders (``GF/``, ``DeepDXF/``) the models train on (linked into
one folder); ``--train_groups``: their labelled groups (``joint_main.py --groups``: the
group term learns them and the embedding choice is scored on them). Every ``--set NAME
DIR GROUPS`` is a preprocessed gallery with its groups (JSON list of groups of names);
each member of a group is a query. Rows per set: every floor (z-scored with that
gallery, as ``SimDeepDXF.py --groups`` prints them), then per training seed the
embeddings of ``--embeddings`` (``auto``: what training chose for the archive). Tables
go to stdout and ``--output``/archive_quality.md (+ .json), with the strongest floor
marked and, for each learned row, the paired interval against it (every interval resamples
whole groups of queries: the queries of one group succeed or fail together). Models are trained
once per seed and reused on a rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.quality import Entry, build_table, format_markdown, format_verdict, verdict  # noqa: E402
from dataset.files import atomic_write_text  # noqa: E402
from utils.ranking import read_groups, retrieval_metrics  # noqa: E402
from utils.retrieval.cache import EmbeddingCache  # noqa: E402
from utils.retrieval.embedders import make_embedder  # noqa: E402
from utils.retrieval.evaluate import floor_table  # noqa: E402
from utils.retrieval.gallery import build_gallery, collect_files  # noqa: E402


def link_training_folder(sources: Sequence[Path], dest: Path) -> Path:
    """One preprocessed folder of symlinks to every drawing of ``sources`` (first name wins)."""
    for sub in ("GF", "DeepDXF"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for src in sources:
        for sub, ext in (("GF", ".npz"), ("DeepDXF", ".h5")):
            for p in sorted((src / sub).glob(f"*{ext}")):
                link = dest / sub / p.name
                if not link.exists():
                    link.symlink_to(p.resolve())
    return dest


def train(data: Path, groups: Path | None, out: Path, seed: int, epochs: int, extra: Sequence[str]) -> Path:
    """A joint model of ``data`` (one fold of 5) with ``seed``; reused when already there."""
    ckpt = out / "ckpt" / f"seed{seed}" / "best_model.pth"
    if ckpt.is_file():
        return ckpt
    cmd = [sys.executable, str(ROOT / "joint_main.py"), "--data_dir", str(data), "--seed", str(seed),
           "--epochs", str(epochs), "--k_folds", "5", "--fold", "0", "--run_name", f"seed{seed}",
           "--logs_dir", str(out / "logs"), "--checkpoints_dir", str(out / "ckpt"), *extra]
    if groups is not None:
        cmd += ["--groups", str(groups)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return ckpt


def rechoose(out: Path, seed: int, groups: Path | None) -> None:
    """Choose the search embedding of a trained seed again (``utils.train.embedding_choice.choose_and_store``
    on the saved split and config), e.g. after the choice rule changed; no training."""
    import shutil

    from config.cli import config_from_dict
    from config.joint_config import JointConfig
    from dataset.loaders.joint import JointData
    from utils.train.checkpoint import load_checkpoint
    from utils.train.embedding_choice import choose_and_store
    from utils.ranking import resolve_groups
    from utils.train.splits import Split

    run = out / "ckpt" / f"seed{seed}"
    fold_ckpt = run / "fold_0.pth"
    cfg = config_from_dict(JointConfig, load_checkpoint(fold_ckpt)["config"])
    data = JointData(cfg)
    split = Split.load(out / "logs" / f"seed{seed}" / "split.json")
    user = [] if groups is None else [[data.names[i] for i in g] for g in resolve_groups(data.names, read_groups(groups))[0]
                                      if len(g) >= 2]

    class Log:
        def info(self, msg: str) -> None:
            print(f"seed {seed}: {msg}")
    train_idx, val_idx = split.folds[0]
    choose_and_store(fold_ckpt, data.dataset, data.names, split.groups, val_idx, Log(),
                     max_drawings=cfg.choice_max_drawings, seed=cfg.seed, user_groups=user, distractors=train_idx)
    shutil.copyfile(fold_ckpt, run / "best_model.pth")


def evaluate_set(name: str, folder: Path, groups_path: Path, models: dict[int, Path], embeddings: Sequence[str],
                 cache: Path) -> dict:
    """The table of one evaluation set: floors, then each embedding over the seeds."""
    groups = read_groups(groups_path)
    files = collect_files([folder / "DeepDXF"])
    entries: list[Entry] = []
    first = None
    for label, m in floor_table_of(files, groups, cache):
        entries.append(Entry(label, "floor", [m] if m is not None else []))
    for emb in embeddings:
        runs, chosen = [], set()
        for seed, ckpt in sorted(models.items()):
            embedder = make_embedder(ckpt, emb)
            chosen.add(embedder.kind)
            g = build_gallery(files, embedder, EmbeddingCache(cache), workers=1, quiet=True, progress_bar=False)
            first = first or g
            runs.append(retrieval_metrics(g.vectors, g.names, groups))
        note = "chosen per seed: " + ", ".join(sorted(chosen)) if emb == "auto" else ""
        entries.append(Entry(emb, "inductive", runs, note))
    table = build_table(entries, groups=groups)
    text = format_markdown(name, table)
    verdicts = [format_verdict(name, v) for e in embeddings if (v := verdict(table, e)) is not None]
    return {"table": table, "text": text + "\n\n" + "\n".join(f"- {v}" for v in verdicts)}


def floor_table_of(files: Sequence[tuple[Path, str]], groups: list[list[str]], cache: Path) -> list:
    """The floors of the gallery ``files``, z-scored with the gallery (as ``--groups`` does),
    and the non-learned fusions the embedding choice may pick (the standardized histogram +
    raw GF pair with a small layout block), so that no choice of a floor passes as learning."""
    from model.floors import BLOCK_DIMS, floor_block, standardize
    from utils.train.embedding_choice import LAYOUT_TIE_WEIGHTS
    from utils.retrieval.embedders import floor_embedder

    g = build_gallery(files, floor_embedder("layout"), EmbeddingCache(cache), workers=1, quiet=True,
                      progress_bar=False)
    arrays = {"names": g.names, **g.enc}
    rows = floor_table(arrays, groups)
    unit = {b: standardize(raw, raw, [BLOCK_DIMS[b]])
            for b in ("hist", "gf_raw", "layout", "layout_rot") for raw in [floor_block(b, arrays)]}
    for layout in ("layout", "layout_rot"):
        for w in LAYOUT_TIE_WEIGHTS:
            emb = np.concatenate([unit["hist"], unit["gf_raw"], w * unit[layout]], axis=1)
            rows.append((f"standardized histogram + raw GF + {layout} x{w:g}", retrieval_metrics(emb, g.names, groups)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", nargs="+", required=True, help="preprocessed folders to train on")
    p.add_argument("--train_groups", default=None, help="groups of the training drawings (joint_main.py --groups)")
    p.add_argument("--set", nargs=3, action="append", default=[], metavar=("NAME", "DIR", "GROUPS"),
                   help="an evaluation set: a preprocessed gallery and its groups")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--embeddings", nargs="+", default=["auto", "joint", "joint_floors"])
    p.add_argument("--output", default="data/bench/archive-quality")
    p.add_argument("--rechoose", action="store_true", help="choose the search embedding of the trained seeds again")
    p.add_argument("--train_args", nargs=argparse.REMAINDER, default=[],
                   help="more joint_main.py flags (the rest of the command line)")
    args = p.parse_args(argv)
    out = Path(args.output)
    data = link_training_folder([Path(t) for t in args.train], out / "train")
    groups = Path(args.train_groups) if args.train_groups else None
    models = {s: train(data, groups, out, s, args.epochs, args.train_args) for s in args.seeds}
    if args.rechoose:
        for s in args.seeds:
            rechoose(out, s, groups)
    parts, tables = [], {}
    for name, folder, gpath in args.set:
        res = evaluate_set(name, Path(folder), Path(gpath), models, args.embeddings, out / "cache")
        tables[name] = res["table"]
        parts.append(res["text"])
        print(res["text"] + "\n", flush=True)
    atomic_write_text(out / "archive_quality.md", "\n\n".join(parts) + "\n")
    atomic_write_text(out / "archive_quality.json", json.dumps(tables, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
