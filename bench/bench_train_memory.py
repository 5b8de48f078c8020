"""Peak memory and speed of a short joint run against the size of the archive.

    python bench/bench_train_memory.py                                  # 1k and 10k drawings, packed
    python bench/bench_train_memory.py --sizes 1000 10000 100000 --num_workers 2
    python bench/bench_train_memory.py --layout folders --sizes 1000 5000

For each size N: ``--unique`` synthetic drawings (entity counts drawn around the real
corpus's median, random rows and GF graphs) are written once as per-drawing files and
linked under N names (the bytes of every drawing are real; only the disk is spared),
then packed (``--layout packed``, ``dataset/pack.py``) or read as folders. A subprocess
runs ``joint_main.py`` on fold 0 for one epoch of ``--steps`` training batches (tiny
models by default) and the full validation and test passes; the bench reports its
peak resident memory (``ru_maxrss`` of the child), the training drawings/s (from
metrics.csv) and the wall time, as a markdown table. With streaming, the peak stays
flat as N grows; the wall time grows with the evaluation passes (they read every
validation and test drawing).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset.dxf_process_DeepDXF import N_COLUMNS, N_TYPES, save_h5  # noqa: E402
from dataset.dxf_process_GF import save_gf  # noqa: E402
from dataset.archive import pack  # noqa: E402

TINY = ["--GF_hidden", "16", "--GF_proj_dim", "16", "--GF_num_layers", "1", "--DeepDXF_d_model", "32",
        "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "16", "--DeepDXF_size_dim", "4",
        "--DeepDXF_chunk_len", "64", "--DeepDXF_max_view_chunks", "2"]

_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def write_unique(folder: Path, n: int, median_rows: int, seed: int = 0) -> None:
    """``n`` synthetic drawings as ``folder/d<i>.npz`` + ``folder/d<i>.h5`` (lengths log-normal around ``median_rows``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.clip(rng.lognormal(np.log(median_rows), 1.0, n), 5, 8 * median_rows).astype(int)
    for i, length in enumerate(lengths):
        rows = np.full((length, N_COLUMNS), -1, np.int32)
        rows[:, 0] = rng.integers(0, N_TYPES, length)
        used = rng.random((length, N_COLUMNS - 2)) < 0.5
        rows[:, 1:N_COLUMNS - 1] = np.where(used, rng.integers(0, 256, used.shape), -1)
        save_h5(folder / f"d{i}.h5", rows, {"n_total": length, "n_cut": 0, "n_dropped": 0,
                "type_counts": np.bincount(rows[:, 0], minlength=N_TYPES), "extent": np.zeros(3)}, source="bench")
        feats = rng.random((10, 11)).astype(np.float32)
        adj = np.triu(rng.random((10, 10)) < 0.4, 1).astype(np.float32)
        save_gf(folder / f"d{i}.npz", {"features": feats, "adjacency": adj + adj.T})


def link_archive(unique: Path, n_unique: int, out: Path, n: int, layout: str) -> None:
    """``out/GF`` + ``out/DeepDXF`` with ``n`` names linked to the unique files; packed when asked."""
    for sub, ext in (("GF", "npz"), ("DeepDXF", "h5")):
        (out / sub).mkdir(parents=True)
        for j in range(n):
            os.symlink(unique / f"d{j % n_unique}.{ext}", out / sub / f"c{j // n_unique}_d{j % n_unique}.{ext}")
    if layout == "packed":
        pack(out, progress=False)
        shutil.rmtree(out / "GF")
        shutil.rmtree(out / "DeepDXF")


def run(data: Path, work: Path, args: argparse.Namespace) -> dict:
    """One short joint run in a subprocess: peak RSS (MB), training drawings/s, wall seconds."""
    cmd = [sys.executable, str(ROOT / "joint_main.py"), "--data_dir", str(data), "--logs_dir", str(work / "logs"),
           "--checkpoints_dir", str(work / "ckpt"), "--run_name", data.name, "--k_folds", "5", "--fold", "0",
           "--epochs", "1", "--max_steps_per_epoch", str(args.steps), "--GF_batch_size", str(args.GF_batch_size),
           "--num_workers", str(args.num_workers), "--warmup_steps", "0", "--device", args.device,
           *(TINY if args.model == "tiny" else [])]
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    seconds = time.time() - t0
    if done.returncode:
        raise RuntimeError(f"joint_main.py failed on {data}:\n{done.stderr[-3000:]}")
    with open(work / "logs" / data.name / "metrics.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("drawings_per_s")]
    return {"peak_rss_mb": int(done.stdout.strip().splitlines()[-1]) / 1024,
            "train_drawings_per_s": float(rows[-1]["drawings_per_s"]) if rows else float("nan"),
            "wall_s": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Peak RSS and drawings/s of a short joint run vs archive size.")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="archive sizes (drawings)")
    ap.add_argument("--unique", type=int, default=500, help="distinct synthetic drawings, linked under every size's names")
    ap.add_argument("--median_rows", type=int, default=500, help="median entities per drawing (real corpus: ~500)")
    ap.add_argument("--layout", choices=("packed", "folders"), default="packed")
    ap.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of the training process")
    ap.add_argument("--steps", type=int, default=20, help="training batches of the one epoch")
    ap.add_argument("--GF_batch_size", type=int, default=16)
    ap.add_argument("--model", choices=("tiny", "default"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the run")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_train_memory_"))
    results = []
    try:
        unique = work / "unique"
        write_unique(unique, args.unique, args.median_rows)
        for n in args.sizes:
            data = work / f"archive_{n}"
            t0 = time.time()
            link_archive(unique, args.unique, data, n, args.layout)
            prep = time.time() - t0
            r = {"drawings": n, "layout": args.layout, "num_workers": args.num_workers, "prepare_s": prep,
                 **run(data, work, args)}
            results.append(r)
            print(f"{n} drawings: peak RSS {r['peak_rss_mb']:.0f} MB, {r['train_drawings_per_s']:.0f} drawings/s "
                  f"(training), {r['wall_s']:.1f} s", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| drawings | layout | workers | peak RSS (MB) | train drawings/s | run (s) |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['drawings']} | {r['layout']} | {r['num_workers']} | {r['peak_rss_mb']:.0f} | "
              f"{r['train_drawings_per_s']:.0f} | {r['wall_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
