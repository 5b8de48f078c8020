"""Held-out retrieval quality: learned embeddings against every non-learned floor.

    python bench/make_revisions.py --input data/dxf/leadframe --max_sources 60
    python bench/quality.py --epochs 3 --seeds 0 1 2

Evaluation sets (each a gallery searched with every member of a group as a query):

- ``selection-revisions``: sources of the ``selection`` split and their revisions
  (``bench/make_revisions.py`` output). Designs and hyper-parameters are chosen here.
- ``report-revisions``: the same for the ``report`` split. Only for the final table.
- ``report-human-groups``: the labelled drawings (``--human``, with ``groups.json``)
  plus the distractor drawings (``--distractors``). A report set: never tuned on.

Rows per set: every non-learned floor (random vectors, entity-type histogram, raw GF
matrices, their standardized concatenation, and the ``--floors`` exported by
``SimDeepDXF.py``, e.g. the layout-aware counts), then each learned embedding
(``--learned``) of a joint model trained

- *inductive*: on the ``train`` split only (sources and their revisions);
- *transductive*: on ``train`` plus the searched gallery (self-supervised: no labels;
  the searched drawings are linked under anonymous names, :func:`anonymous_names`, so
  that no group can be read from their names).

Learned rows are the mean over ``--seeds`` training seeds; the interval is a
bootstrap 95 % interval over queries (of the per-query AP averaged over seeds). The
strongest floor of each set is marked "floor to beat" and every row shows its
difference to it.

Everything made (preprocessing, symlinked training/gallery folders, checkpoints,
exported embeddings, logs) is cached under ``--output``; a rerun reuses it. Tables go
to stdout and to ``--output``/quality.md and quality.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.bench_data import LABELLED, LEADFRAME  # noqa: E402
from dataset.files import atomic_write_text  # noqa: E402
from utils.ranking import bootstrap_interval, normalize_name, paired_interval, query_clusters, retrieval_metrics  # noqa: E402
from utils.retrieval.evaluate import floor_table, load_encodings  # noqa: E402

SETS = ("selection-revisions", "report-revisions", "report-human-groups")
DEFAULT_FLOORS: tuple[str, ...] = ()  # every floor (layout ones included) is computed in-process by floor_table
DEFAULT_LEARNED = ("joint_floors", "joint", "gf", "deepdxf")
KINDS = ("floor", "inductive", "transductive")
FLOOR_TO_BEAT = "floor to beat"


# ===================================================================== tables
@dataclass
class Entry:
    """One row of a table: an embedding and its metrics, one dict per seed.

    ``runs`` are :func:`utils.ranking.retrieval_metrics` results over the same names
    (so their per-query lists align); a floor has one run.
    """

    label: str
    kind: str
    runs: list[dict] = field(default_factory=list)
    note: str = ""


def summarize(entry: Entry, n_boot: int = 1000, seed: int = 0, clusters: Optional[Sequence[int]] = None) -> dict:
    """Mean metrics over the runs of ``entry``, the seed spread of mAP and a bootstrap
    95 % interval over queries of the per-query AP (averaged over runs first); with
    ``clusters`` (an id per query, e.g. its group) whole clusters are resampled."""
    runs = entry.runs
    out: dict = {"label": entry.label, "kind": entry.kind, "n_seeds": len(runs), "note": entry.note}
    for key in ("mAP", "P@1", "R@10", "nDCG@10", "MRR"):
        vals = [r[key] for r in runs if key in r]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    maps = [r["mAP"] for r in runs]
    out["mAP_seed_std"] = float(np.std(maps)) if len(maps) > 1 else 0.0
    out["mAP_per_seed"] = [float(m) for m in maps]
    per_q = [r.get("per_query_ap", []) for r in runs]
    if per_q and all(len(p) == len(per_q[0]) for p in per_q) and per_q[0]:
        ap = np.mean(np.asarray(per_q, dtype=np.float64), axis=0)
        usable = clusters is not None and len(clusters) == ap.size
        lo, hi = bootstrap_interval(ap, n_boot=n_boot, seed=seed, clusters=clusters if usable else None)
        out["per_query_ap"] = [float(a) for a in ap]
        if usable:
            out["query_groups"] = [int(c) for c in clusters]
    else:
        lo, hi = float("nan"), float("nan")
        out["per_query_ap"] = []
    out["mAP_CI95"] = [lo, hi]
    out["n_queries"] = runs[0]["n_queries"] if runs else 0
    out["n_gallery"] = runs[0]["n_gallery"] if runs else 0
    return out


def build_table(entries: Sequence[Entry], n_boot: int = 1000, seed: int = 0,
                groups: Optional[Sequence[Sequence[str]]] = None) -> dict:
    """Summaries of ``entries`` with the strongest floor marked.

    The floor to beat is the non-random floor with the highest mAP; every row gets
    ``delta_vs_floor`` (its mAP minus that floor's). ``groups``: the groups the queries
    came from (names); given, every interval of the table and of :func:`verdict` resamples
    whole groups (``utils.ranking.query_clusters`` of each row's ``queries``, kept in the
    row as ``query_groups``), not single queries.

    Returns:
        ``{"rows": [summaries], "floor_to_beat": label or None, "n_groups": the number of
        groups the queries fall in, or None}``.
    """
    def clusters_of(e: Entry) -> Optional[np.ndarray]:
        queries = e.runs[0].get("queries") if groups is not None else None
        return query_clusters(queries, groups) if queries else None
    rows = [summarize(e, n_boot, seed, clusters_of(e)) for e in entries if e.runs]
    ids = next((r["query_groups"] for r in rows if r.get("query_groups")), None)
    floors = [r for r in rows if r["kind"] == "floor" and not r["label"].startswith("random")
              and not math.isnan(r["mAP"])]
    best = max(floors, key=lambda r: r["mAP"], default=None)
    for r in rows:
        r["floor_to_beat"] = best is not None and r is best
        r["delta_vs_floor"] = (r["mAP"] - best["mAP"]) if best is not None else float("nan")
    return {"rows": rows, "floor_to_beat": best["label"] if best else None,
            "n_groups": None if ids is None else int(len(np.unique(ids)))}


def format_markdown(title: str, table: dict) -> str:
    """A markdown table of :func:`build_table` output under a ``### title`` heading."""
    rows = table["rows"]
    n_q = rows[0]["n_queries"] if rows else 0
    n_g = rows[0]["n_gallery"] if rows else 0
    in_groups = f" in {table['n_groups']} groups; intervals resample whole groups" if table.get("n_groups") else ""
    lines = [f"### {title} (gallery {n_g} drawings, {n_q} queries{in_groups})", "",
             "| embedding | row | seeds | mAP | 95% CI | P@1 | R@10 | vs floor to beat |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["mAP_CI95"]
        ci = "–" if math.isnan(lo) else f"{lo:.3f}–{hi:.3f}"
        m = f"{r['mAP']:.3f}" + (f" ± {r['mAP_seed_std']:.3f}" if r["n_seeds"] > 1 else "")
        seeds = "–" if r["kind"] == "floor" else str(r["n_seeds"])
        if r["floor_to_beat"]:
            vs = f"**{FLOOR_TO_BEAT}**"
        elif math.isnan(r["delta_vs_floor"]):
            vs = "–"
        else:
            vs = f"{r['delta_vs_floor']:+.3f}"
        label = r["label"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {label} | {r['kind']} | {seeds} | {m} | {ci} | {r['P@1']:.3f} | {r['R@10']:.3f} | {vs} |")
    return "\n".join(lines)


def verdict(table: dict, label: str, kind: str = "inductive", n_boot: int = 1000, seed: int = 0) -> Optional[dict]:
    """Does the row ``label``/``kind`` of a :func:`build_table` result beat the floor to
    beat by more than the half-width of that floor's 95 % interval?

    Beside that criterion, the paired one: the bootstrap 95 % interval over queries of
    the mean per-query AP difference (row minus floor, the same queries resampled for
    both), which sees through the spread the two share; whole groups of queries are
    resampled when the table knows them (``build_table(..., groups=)``).

    Returns ``{"label", "kind", "mAP", "floor", "floor_mAP", "difference", "half_width",
    "beats", "paired_CI95"}`` (``beats``: difference > half-width; ``paired_CI95``
    ``[lo, hi]``, NaN without per-query APs), or None when the table has no such row or
    no floor to beat.
    """
    rows = table["rows"]
    row = next((r for r in rows if r["label"] == label and r["kind"] == kind), None)
    floor = next((r for r in rows if r["floor_to_beat"]), None)
    if row is None or floor is None:
        return None
    lo, hi = floor["mAP_CI95"]
    half = (hi - lo) / 2 if not (math.isnan(lo) or math.isnan(hi)) else float("nan")
    diff = row["mAP"] - floor["mAP"]
    a, b = np.asarray(row.get("per_query_ap", [])), np.asarray(floor.get("per_query_ap", []))
    clusters = row.get("query_groups")
    if clusters is not None and len(clusters) != a.size:
        clusters = None
    paired = list(paired_interval(a, b, n_boot=n_boot, seed=seed, clusters=clusters)) \
        if a.size and a.size == b.size else [float("nan"), float("nan")]
    n_groups = None if clusters is None else int(len(np.unique(clusters)))
    return {"label": label, "kind": kind, "mAP": row["mAP"], "floor": floor["label"], "floor_mAP": floor["mAP"],
            "difference": diff, "half_width": half, "beats": bool(diff > half), "paired_CI95": paired,
            "n_groups": n_groups}


def format_verdict(set_name: str, v: dict) -> str:
    """One sentence for :func:`verdict`'s result."""
    head = (f"{set_name}: {v['label']} ({v['kind']}) {v['mAP']:.3f} vs {v['floor']} {v['floor_mAP']:.3f}: "
            f"{v['difference']:+.3f}, floor interval half-width {v['half_width']:.3f}")
    lo, hi = v.get("paired_CI95", [float("nan")] * 2)
    over = f"the same queries, resampling their {v['n_groups']} groups" if v.get("n_groups") else "the same queries"
    paired = "" if math.isnan(lo) else (f" Paired over {over}, the difference is {lo:+.3f} to {hi:+.3f} (95 %): "
                                        + ("better than the floor." if lo > 0 else "worse than the floor." if hi < 0
                                           else "not distinguishable from the floor."))
    if v["beats"]:
        return head + ": **beats the floor**." + paired
    short = v["half_width"] - v["difference"]
    return head + f": **does not beat the floor** ({short:.3f} short of a clear win)." + paired


def metrics_on(names: Sequence[str], emb: np.ndarray, keep: Sequence[str],
               groups: Sequence[Sequence[str]]) -> dict:
    """:func:`retrieval_metrics` of the rows of ``emb: [n, d]`` whose names are in
    ``keep``, in ``keep``'s order (so every embedding of a set is judged on one gallery)."""
    index = {normalize_name(n): i for i, n in enumerate(names)}
    rows = [index[k] for k in keep]
    return retrieval_metrics(np.asarray(emb, dtype=np.float64)[rows], list(keep), groups)


# ===================================================================== plumbing
def _short_hash(items: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(items).encode("utf-8")).hexdigest()[:10]


def defaults_fingerprint() -> str:
    """A short hash of ``joint_main.py``'s default config: part of every cached model's
    name, so that a model trained under other defaults is not reused as if it were today's."""
    from dataclasses import asdict

    from config.joint_config import JointConfig

    return _short_hash([json.dumps(asdict(JointConfig()), sort_keys=True, default=str)])


def _same_names(folder: Path, names: Sequence[str]) -> bool:
    """True when ``folder`` was built for exactly ``names`` (its ``.names`` stamp); else
    the folder is removed so that the caller builds it afresh."""
    stamp = folder / ".names"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == "\n".join(sorted(names)):
        return True
    if folder.exists():
        shutil.rmtree(folder)
    return False


def _link_farm(folder: Path, names: Sequence[str], sources: dict[str, Path],
               aliases: Optional[dict[str, str]] = None) -> Path:
    """``folder/GF/<name>.npz`` and ``folder/DeepDXF/<name>.h5`` as symlinks to the
    preprocessed files of ``names`` (``sources``: name -> preprocessing output root),
    linked as ``aliases[name]`` where given. A folder of the same content is reused."""
    aliases = aliases or {}
    links = {n: aliases.get(n, n) for n in names}
    if _same_names(folder, list(links.values())):
        return folder
    for sub, ext in (("GF", ".npz"), ("DeepDXF", ".h5")):
        (folder / sub).mkdir(parents=True)
        for n, link in links.items():
            (folder / sub / f"{link}{ext}").symlink_to((sources[n] / sub / f"{n}{ext}").resolve())
    (folder / ".names").write_text("\n".join(sorted(links.values())), encoding="utf-8")
    return folder


def anonymous_names(names: Sequence[str]) -> dict[str, str]:
    """``name -> searched-<hash>``: searched drawings join transductive training under
    names that say nothing of their group, so that ``--group_pattern`` (the group term,
    the grouped split) cannot read the evaluation's labels from ``X__rev1`` or ``X_2``."""
    return {n: "searched-" + hashlib.sha1(n.encode("utf-8")).hexdigest()[:16] for n in names}


def _dxf_farm(folder: Path, names: Sequence[str], dxf_paths: dict[str, Path]) -> Path:
    """``folder/<name>.dxf`` symlinks to the drawings (for exports that need the DXF)."""
    if _same_names(folder, names):
        return folder
    folder.mkdir(parents=True)
    for n in names:
        if n in dxf_paths:
            (folder / f"{n}.dxf").symlink_to(dxf_paths[n].resolve())
    (folder / ".names").write_text("\n".join(sorted(names)), encoding="utf-8")
    return folder


class Runner:
    """Runs the project's CLIs in subprocesses, logging each to ``logs/``."""

    def __init__(self, output: Path, threads: int, python: str = sys.executable):
        self.logs = output / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                        PYTHONHASHSEED="0")

    def __call__(self, args: Sequence[str], log_name: str) -> bool:
        log = self.logs / f"{log_name}.log"
        t0 = time.perf_counter()
        with open(log, "w", encoding="utf-8") as fh:
            fh.write("$ " + " ".join(args) + "\n")
            fh.flush()
            proc = subprocess.run([self.python, *args], cwd=ROOT, env=self.env, stdout=fh,
                                  stderr=subprocess.STDOUT, check=False)
        ok = proc.returncode == 0
        print(f"  {'ok ' if ok else 'FAILED'} {args[0]} ({log_name}, {time.perf_counter() - t0:.0f} s)"
              + ("" if ok else f": see {log}"), flush=True)
        return ok


def preprocess(run: Runner, inputs: Sequence[Path], out: Path, workers: int, tag: str) -> bool:
    """``dataset/dxf_process.py`` (it skips drawings already done and unchanged)."""
    return run(["dataset/dxf_process.py", "--input", *map(str, inputs), "--output", str(out),
                "--workers", str(workers)], f"preprocess-{tag}")


def train(run: Runner, data_dir: Path, dest: Path, epochs: int, k_folds: int, seed: int,
          extra: Sequence[str], tag: str) -> Optional[Path]:
    """Train a joint model on ``data_dir`` and copy its best checkpoint to ``dest``
    (reused when present). Returns ``dest`` or None when training failed."""
    if dest.is_file():
        print(f"  reuse {dest}")
        return dest
    run_name = f"quality_{tag}"
    ok = run(["joint_main.py", "--data_dir", str(data_dir), "--epochs", str(epochs), "--k_folds", str(k_folds),
              "--fold", "0", "--seed", str(seed), "--run_name", run_name, *extra], f"train-{tag}")
    best = ROOT / "checkpoints" / run_name / "best_model.pth"
    if not ok or not best.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, dest)
    return dest


def export(run: Runner, embedding: str, galleries: Sequence[Path], dest: Path, cache: Path, workers: int,
           tag: str, model: Optional[Path] = None) -> Optional[dict]:
    """``SimDeepDXF.py --export`` of one embedding over the first gallery that works
    (preprocessed .h5 files, then the DXF files). Returns ``{name: vector}`` or None."""
    if not dest.is_file():
        for k, gallery in enumerate(galleries):
            args = ["SimDeepDXF.py", "--embedding", embedding, "--gallery", str(gallery), "--export", str(dest),
                    "--cache_dir", str(cache), "--workers", str(workers)]
            if model is not None:
                args += ["--model_path", str(model)]
            if run(args, f"export-{tag}" + (f"-try{k}" if k else "")):
                break
        else:
            return None
    with np.load(dest, allow_pickle=False) as z:
        return {normalize_name(str(n)): v for n, v in zip(z["names"], np.asarray(z["embeddings"]))}


# ===================================================================== protocol
@dataclass
class EvalSet:
    """A searched gallery with its groups: ``names`` are preprocessed drawing names."""

    name: str
    names: list[str]
    groups: list[list[str]]
    prep: dict[str, Path]  # name -> preprocessing output root
    dxf: dict[str, Path]   # name -> DXF file


def _dxf_index(folders: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in folders:
        if f.is_dir():
            for p in sorted(f.rglob("*")):
                if p.suffix.lower() == ".dxf" and p.is_file():
                    out.setdefault(p.stem, p)
    return out


def _prepared(prep_root: Path) -> set[str]:
    gf = {p.stem for p in (prep_root / "GF").glob("*.npz")}
    return gf & {p.stem for p in (prep_root / "DeepDXF").glob("*.h5")}


def protocol_sets(revisions: Path, prep_rev: Path, human: Optional[Path], distractors: Optional[Path],
                  prep_human: Optional[Path], train_distractors: bool = False) -> tuple[list[str], list[EvalSet]]:
    """The ``train`` drawing names and the evaluation sets (only drawings that
    preprocessing kept). ``train_distractors``: the train drawings join each revision
    gallery as distractors (never as queries)."""
    splits = json.loads((revisions / "splits.json").read_text(encoding="utf-8"))
    rev_groups = json.loads((revisions / "groups.json").read_text(encoding="utf-8"))
    have = _prepared(prep_rev)
    by_source = {g[0]: [n for n in g if n in have] for g in rev_groups}
    rev_dxf = _dxf_index([revisions])

    def members(split: str) -> tuple[list[str], list[list[str]]]:
        groups = [by_source[s] for s in splits[split] if s in by_source and by_source[s]]
        return sorted(n for g in groups for n in g), groups

    train_names, _ = members("train")
    sets = []
    for split in ("selection", "report"):
        names, groups = members(split)
        if train_distractors:
            names = sorted(names + train_names)
        sets.append(EvalSet(f"{split}-revisions", names, groups, {n: prep_rev for n in names}, rev_dxf))
    if human is not None and prep_human is not None and (human / "groups.json").is_file():
        h_names = sorted(_prepared(prep_human))
        h_groups = json.loads((human / "groups.json").read_text(encoding="utf-8"))
        dxf = _dxf_index([human] + ([distractors] if distractors else []))
        sets.append(EvalSet("report-human-groups", h_names, h_groups, {n: prep_human for n in h_names}, dxf))
    return train_names, sets


def extra_training(folders: Sequence[Path], exclude: set[str]) -> dict[str, Path]:
    """``{name: folder}`` of the drawings preprocessed in ``folders`` (both encodings), for
    training only; names in ``exclude`` (evaluation drawings) and repeats are left out."""
    out: dict[str, Path] = {}
    for folder in folders:
        if not (folder / "GF").is_dir():
            raise FileNotFoundError(f"{folder}: no GF/ folder: run python dataset/dxf_process.py --output {folder}")
        for n in sorted(_prepared(folder)):
            if n not in exclude:
                out.setdefault(n, folder)
    return out


def parse_checkpoints(items: Sequence[str]) -> dict[str, list[Path]]:
    """``ROW=PATH`` items -> ``{row: [paths]}``; ROW is ``inductive`` or
    ``transductive:<set>`` (one item per seed)."""
    out: dict[str, list[Path]] = {}
    valid = {"inductive"} | {f"transductive:{s}" for s in SETS}
    for item in items:
        row, sep, path = item.partition("=")
        if not sep or row not in valid:
            raise ValueError(f"--checkpoints {item!r}: expected ROW=PATH with ROW one of {', '.join(sorted(valid))}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--checkpoints {item!r}: no checkpoint at {path}")
        out.setdefault(row, []).append(Path(path))
    return out


def evaluate_set(s: EvalSet, floor_vecs: dict[str, dict], learned: dict[str, dict[str, list[dict]]],
                 notes: dict[str, str]) -> list[Entry]:
    """Entries of one set: in-process floors, exported floors, learned rows.

    Args:
        floor_vecs: exported floor name -> ``{name: vector}``.
        learned: ``"<embedding>|<row>"`` -> list over seeds of ``{name: vector}``.
    """
    common = set(s.names)
    for vecs in list(floor_vecs.values()) + [v for runs in learned.values() for v in runs]:
        common &= set(vecs)
    keep = sorted(common)
    if len(keep) < len(s.names):
        print(f"  note: {s.name}: {len(s.names) - len(keep)} drawings missing from some embedding: "
              f"all rows use the {len(keep)} every embedding has")
    enc = load_encodings_subset(s, keep)
    entries = []
    for label, m in floor_table(enc, s.groups):
        if m is None:
            print(f"  note: {s.name}: floor {label}: left out")
        else:
            entries.append(Entry(label, "floor", [m]))
    for label, vecs in floor_vecs.items():
        entries.append(Entry(label, "floor", [metrics_on(list(vecs), np.stack(list(vecs.values())), keep, s.groups)]))
    for key, runs in learned.items():
        emb, row = key.split("|")
        ms = [metrics_on(list(v), np.stack(list(v.values())), keep, s.groups) for v in runs]
        entries.append(Entry(emb, row, ms, notes.get(key, "")))
    return entries


def load_encodings_subset(s: EvalSet, keep: Sequence[str]) -> dict:
    """:func:`utils.retrieval.evaluate.load_encodings` of the drawings ``keep`` (in that order)."""
    roots = sorted({s.prep[n] for n in keep})
    parts = [load_encodings(r) for r in roots]
    index = {n: (k, i) for k, p in enumerate(parts) for i, n in enumerate(p["names"])}
    out: dict = {"names": list(keep)}
    for key in ("type_counts", "gf_features", "gf_adjacency", "layout"):
        out[key] = np.stack([parts[index[n][0]][key][index[n][1]] for n in keep])
    return out


# ===================================================================== main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--revisions", default="data/bench/revisions",
                        help="bench/make_revisions.py output (drawings, groups.json, splits.json)")
    parser.add_argument("--human", default=str(LABELLED),
                        help="labelled drawings with a groups.json ('' to leave the set out)")
    parser.add_argument("--distractors", default=str(LEADFRAME),
                        help="unlabelled drawings searched with the labelled ones")
    parser.add_argument("--output", default="data/bench/quality", help="cache and result folder")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3 to report)")
    parser.add_argument("--k_folds", type=int, default=5, help="joint_main.py --k_folds (fold 0 is trained)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every subprocess")
    parser.add_argument("--workers", type=int, default=1, help="processes of preprocessing and exports")
    parser.add_argument("--rows", nargs="+", choices=["inductive", "transductive"],
                        default=["inductive", "transductive"], help="which learned rows")
    parser.add_argument("--learned", nargs="*", default=list(DEFAULT_LEARNED),
                        help="SimDeepDXF.py --embedding kinds taken from a trained joint model")
    parser.add_argument("--floors", nargs="*", default=list(DEFAULT_FLOORS),
                        help="SimDeepDXF.py --embedding kinds that need no model (a kind whose export "
                             "fails is skipped with a note)")
    parser.add_argument("--checkpoints", nargs="*", default=[],
                        help="existing checkpoints as ROW=PATH, ROW = inductive or transductive:<set> "
                             "(repeat for seeds); rows without one are trained unless --no_train")
    parser.add_argument("--no_train", action="store_true", help="train nothing: floors and --checkpoints only")
    parser.add_argument("--train_args", default="",
                        help="extra joint_main.py flags, one string (e.g. '--num_threads 1')")
    parser.add_argument("--train_distractors", action="store_true",
                        help="add the train drawings to each revision gallery as distractors (a larger, harder "
                             "search; the inductive model has then seen the distractors, never the queries)")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="evaluation sets")
    parser.add_argument("--extra_train", nargs="*", default=[],
                        help="preprocessed folders whose drawings join every model's training set (never searched), "
                             "e.g. revisions of other drawings: bench/make_revisions.py --fractions 1 0 0, then "
                             "dataset/dxf_process.py")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args(argv)

    out = Path(args.output)
    revisions = Path(args.revisions)
    for f in ("groups.json", "splits.json"):
        if not (revisions / f).is_file():
            print(f"error: no {revisions / f}: run python bench/make_revisions.py --output {revisions} first",
                  file=sys.stderr)
            return 2
    try:
        given = parse_checkpoints(args.checkpoints)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run = Runner(out, args.threads)
    t_start = time.perf_counter()

    print("preprocessing", flush=True)
    prep_rev = out / "prep" / "revisions"
    if not preprocess(run, [revisions], prep_rev, args.workers, "revisions"):
        return 1
    human = Path(args.human) if args.human else None
    prep_human = None
    if human is not None and "report-human-groups" in args.sets:
        if (human / "groups.json").is_file():
            prep_human = out / "prep" / "human"
            inputs = [human] + ([Path(args.distractors)] if args.distractors and Path(args.distractors).is_dir() else [])
            if not preprocess(run, inputs, prep_human, args.workers, "human"):
                prep_human = None
        else:
            print(f"  note: no {human / 'groups.json'}: the human-groups set is left out")
    train_names, sets = protocol_sets(revisions, prep_rev, human, Path(args.distractors) if args.distractors else None,
                                      prep_human, args.train_distractors)
    sets = [s for s in sets if s.name in args.sets]
    print(f"train split: {len(train_names)} drawings; sets: "
          + ", ".join(f"{s.name} {len(s.names)}" for s in sets), flush=True)

    # ------------------------------------------------------------ models
    extra = args.train_args.split()
    models: dict[str, list[Path]] = {}  # row key -> checkpoints over seeds

    searched = {n for s in sets for n in s.names}
    try:
        extra_src = extra_training([Path(d) for d in args.extra_train], exclude=searched | set(train_names))
    except FileNotFoundError as err:
        print(f"error: --extra_train {err}", file=sys.stderr)
        return 2
    if extra_src:
        print(f"extra training drawings: {len(extra_src)} from {', '.join(args.extra_train)}", flush=True)
    fit_names = train_names + sorted(extra_src)

    def model_rows() -> list[tuple[str, list[str], dict[str, Path], dict[str, str]]]:
        """``(row key, training names, name -> preprocessing root, name -> linked name)``."""
        rows = []
        fit_set = set(fit_names)
        if "inductive" in args.rows:
            rows.append(("inductive", fit_names, {**extra_src, **{n: prep_rev for n in train_names}}, {}))
        if "transductive" in args.rows:
            for s in sets:
                names = dict.fromkeys(fit_names)
                names.update(dict.fromkeys(s.names))
                src = {**extra_src, **{n: prep_rev for n in train_names}}
                src.update(s.prep)  # same name = same drawing: the searched copy is used
                hidden = anonymous_names([n for n in s.names if n not in fit_set])
                rows.append((f"transductive:{s.name}", list(names), src, hidden))
        return rows

    print("models", flush=True)
    for key, names, src, hidden in model_rows():
        if key in given:
            models[key] = given[key]
            continue
        if args.no_train:
            continue
        tag = key.replace(":", "-")
        h = _short_hash(sorted(hidden.get(n, n) for n in names))
        data_dir = _link_farm(out / "train" / f"{tag}-{h}", sorted(names), src, hidden)
        for seed in args.seeds:
            dest = out / "models" / f"{tag}-{h}-e{args.epochs}-d{defaults_fingerprint()}" / f"seed{seed}.pth"
            ckpt = train(run, data_dir, dest, args.epochs, args.k_folds, seed, extra,
                         f"{tag}-{h}-e{args.epochs}-s{seed}")
            if ckpt is not None:
                models.setdefault(key, []).append(ckpt)

    # ------------------------------------------------------------ exports + tables
    print("embeddings", flush=True)
    cache = out / "cache"
    results: dict = {"sets": {}, "train_drawings": len(train_names), "extra_train_drawings": len(extra_src),
                     "extra_train": args.extra_train, "epochs": args.epochs, "seeds": args.seeds, "checkpoints": {k: [str(p) for p in v] for k, v in models.items()}}
    md: list[str] = []
    verdicts: list[str] = []
    for s in sets:
        h5_dir = _link_farm(out / "sets" / s.name, s.names, s.prep) / "DeepDXF"
        dxf_dir = _dxf_farm(out / "sets" / f"{s.name}-dxf", s.names, s.dxf)
        galleries = [h5_dir, dxf_dir]
        emb_dir = out / "embeddings" / s.name
        floor_vecs: dict[str, dict] = {}
        for kind in args.floors:
            vecs = export(run, kind, galleries, emb_dir / f"{kind}.npz", cache, args.workers, f"{s.name}-{kind}")
            if vecs is None:
                print(f"  note: {s.name}: --embedding {kind} could not be exported: row left out")
            else:
                floor_vecs[kind] = vecs
        learned: dict[str, list[dict]] = {}
        notes: dict[str, str] = {}
        for key, ckpts in models.items():
            row = key.split(":")[0]
            if key.startswith("transductive:") and key != f"transductive:{s.name}":
                continue
            for kind in args.learned:
                for ckpt in ckpts:
                    digest = hashlib.sha1(ckpt.read_bytes()).hexdigest()[:10]
                    vecs = export(run, kind, galleries, emb_dir / f"{kind}-{row}-{digest}.npz", cache,
                                  args.workers, f"{s.name}-{kind}-{row}-{digest}", model=ckpt)
                    if vecs is None:
                        print(f"  note: {s.name}: --embedding {kind} of {ckpt} could not be exported")
                        continue
                    learned.setdefault(f"{kind}|{row}", []).append(vecs)
        entries = evaluate_set(s, floor_vecs, learned, notes)
        table = build_table(entries, n_boot=args.n_boot, groups=s.groups)
        results["sets"][s.name] = table
        md.append(format_markdown(s.name, table))
        v = verdict(table, args.learned[0]) if args.learned else None
        if v is not None and s.name.startswith("report"):
            table["verdict"] = v
            verdicts.append("- " + format_verdict(s.name, v))

    n_seeds = max((len(v) for v in models.values()), default=0)
    header = ("Retrieval quality (mAP over queries, cosine; 95% CI: bootstrap over whole groups of queries). "
              + (f"Learned rows: joint models ({args.epochs} epochs when trained here), mean ± std over "
                 f"{n_seeds} seed(s)." if models else "No learned rows.")
              + f" Train split: {len(train_names)} drawings"
              + (f" (+ {len(extra_src)} extra training drawings)." if extra_src else ".")
              + (" Revision galleries include the train drawings as distractors." if args.train_distractors else "")
              + (" Fewer than 3 seeds: not for reporting." if models and n_seeds < 3 else ""))
    text = header + "\n\n" + "\n\n".join(md) + "\n"
    if verdicts:
        text += (f"\n### Verdict: does {args.learned[0]} beat the floor to beat by more than its interval?\n\n"
                 + "\n".join(verdicts) + "\n")
    print()
    print(text)
    atomic_write_text(out / "quality.md", text)
    atomic_write_text(out / "quality.json", json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {out / 'quality.md'} and {out / 'quality.json'} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
