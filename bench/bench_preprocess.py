"""Benchmark preprocessing against parsing alone, per worker and per shard.

    python bench/bench_preprocess.py [--input DIR] [--workers N]
    python bench/bench_preprocess.py --synthetic_only --n 2000 --workers 8 --shards 4

Times, on a folder of drawings (default ``$DXF_BENCH_DIR/leadframe``, see ``bench/bench_data.py``):
(a) ``ezdxf.readfile`` alone, one process; (b) the full preprocessing
(``dataset/dxf_process.py``: read, boxes, both encodings, writing) with 1 worker;
(c) the same with N workers. Prints files/s, the ratio b/a and the speed-up c vs b,
with wall-clock and CPU seconds (CPU time is robust when the machine is shared).

On a synthetic archive of ``--n`` drawings (the sample corpus generator,
``dataset/make_sample_dxf.py``; past its 60 distinct drawings the files are copies
under new names) it prints (d) files/s with 1, 2, 4, ... ``--workers`` workers and
files/s per worker, and (e) ``--shards`` shards run one after the other, as N
machines would run them side by side: files and files/s per shard, the balance
(largest shard / mean) and the time of the merge.

Also times the GF overlap counting alone on a synthetic 50,000-entity drawing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ezdxf
import numpy as np

from bench.bench_data import LEADFRAME
from config.process_config import ProcessConfig
from dataset.dxf_process import run
from dataset.dxf_process_GF import GF_CLASSES, count_overlaps, gf_encode
from dataset.make_sample_dxf import FAMILIES, make_sample_corpus

logging.getLogger("ezdxf").setLevel(logging.ERROR)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def synthetic_boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` boxes scattered like a drawing: many small parts, some long lines, a frame."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1000, size=(n, 2))
    sizes = rng.lognormal(mean=0.5, sigma=1.0, size=(n, 2))
    lines = rng.random(n) < 0.05  # 5 % long horizontal/vertical lines
    sizes[lines, 0] *= 50
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    boxes[0] = (-10, -10, 1010, 1010)  # a frame around everything
    cls = rng.integers(0, len(GF_CLASSES), size=n)
    return boxes, cls


def synthetic_archive(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` drawings in ``folder``: the sample corpus (at most 60 distinct ones), then
    copies of it under new names."""
    per_family = max(1, min(6, -(-n // len(FAMILIES))))
    distinct = make_sample_corpus(folder / "distinct", seed=seed, n_revisions=per_family)
    files = []
    for k in range(n):
        src = distinct[k % len(distinct)]
        dst = folder / f"{src.stem}__copy{k // len(distinct)}.dxf"
        shutil.copyfile(src, dst)
        files.append(dst)
    shutil.rmtree(folder / "distinct")
    return files


def quiet_run(cfg: ProcessConfig) -> list[dict]:
    """``dataset.dxf_process.run`` without its progress bar and summary."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run(cfg)


def bench_synthetic(n: int, max_workers: int, n_shards: int) -> None:
    """(d) throughput per worker count and (e) per shard on a synthetic archive of ``n`` drawings."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        t0 = time.perf_counter()
        files = synthetic_archive(src, n)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"synthetic archive: {len(files)} drawings, {size_mb:.1f} MB "
              f"(written in {time.perf_counter() - t0:.1f} s)")
        counts = sorted({1, *(w for w in (2, 4, 8, 16, 32, 64) if w < max_workers), max_workers})
        base = None
        for workers in counts:
            cfg = ProcessConfig(input=[str(src)], output=str(Path(tmp) / f"w{workers}"), workers=workers,
                                overwrite=True)
            rows, wall, _ = timed(lambda: quiet_run(cfg))
            rate = len(rows) / wall
            base = base or rate
            print(f"(d) {workers:3d} workers: {wall:7.1f} s wall, {rate:7.1f} files/s, "
                  f"{rate / workers:6.1f} files/s per worker, speed-up {rate / base:4.2f}")
        out = Path(tmp) / "shards"
        times = []
        for i in range(n_shards):
            cfg = ProcessConfig(input=[str(src)], output=str(out), workers=max_workers, overwrite=True,
                                shard=f"{i}/{n_shards}")
            rows, wall, _ = timed(lambda: quiet_run(cfg))
            times.append(wall)
            print(f"(e) shard {i}/{n_shards}: {len(rows):6d} files, {wall:7.1f} s wall, "
                  f"{len(rows) / wall:7.1f} files/s ({max_workers} workers)")
        merged, wall_merge, _ = timed(lambda: quiet_run(ProcessConfig(output=str(out), merge=True)))
        mean = sum(times) / len(times)
        print(f"(e) {n_shards} machines side by side: {max(times):.1f} s wall (slowest shard), "
              f"{len(merged) / max(times):.1f} files/s in all, balance {max(times) / mean:.2f} "
              f"(slowest / mean shard), merge of {len(merged)} rows {wall_merge:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(LEADFRAME), help="folder of DXF files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for (c)")
    parser.add_argument("--entities", type=int, default=50_000, help="synthetic drawing size for the overlap timing")
    parser.add_argument("--n", type=int, default=20, help="drawings in the synthetic archive for (d) and (e)")
    parser.add_argument("--shards", type=int, default=2, help="shards for (e)")
    parser.add_argument("--synthetic_only", action="store_true", help="skip (a)-(c) on --input")
    args = parser.parse_args()

    bench_synthetic(args.n, args.workers, args.shards)
    files = [] if args.synthetic_only else sorted(Path(args.input).rglob("*.dxf"))
    if files:
        print(f"{len(files)} DXF files in {args.input}")

        def read_all():
            for f in files:
                try:
                    ezdxf.readfile(str(f))
                except (ezdxf.DXFError, OSError, UnicodeDecodeError, ValueError):
                    pass  # unreadable files cost their parse attempt, as in (b)

        _, wall_a, cpu_a = timed(read_all)
        print(f"(a) ezdxf.readfile alone       : {wall_a:6.1f} s wall, {cpu_a:6.1f} s CPU, {len(files) / wall_a:5.1f} files/s")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ProcessConfig(input=[args.input], output=tmp, workers=1, overwrite=True)
            _, wall_b, cpu_b = timed(lambda: run(cfg))
        print(f"(b) full preprocessing, 1 worker: {wall_b:6.1f} s wall, {cpu_b:6.1f} s CPU, {len(files) / wall_b:5.1f} files/s")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ProcessConfig(input=[args.input], output=tmp, workers=args.workers, overwrite=True)
            _, wall_c, _ = timed(lambda: run(cfg))
        print(f"(c) full preprocessing, {args.workers} workers: {wall_c:6.1f} s wall, {len(files) / wall_c:5.1f} files/s")
        print(f"ratio b/a: {wall_b / wall_a:.2f} (wall), {cpu_b / cpu_a:.2f} (CPU)   target <= 1.5")
        print(f"speed-up c vs b with {args.workers} workers: {wall_b / wall_c:.2f}   target >= 1.7 with 2")
    elif not args.synthetic_only:
        print(f"no DXF files under {args.input}: skipping (a)-(c)")

    boxes, cls = synthetic_boxes(args.entities)
    _, wall, _ = timed(lambda: count_overlaps(boxes, cls, len(GF_CLASSES)))
    print(f"GF overlap counting, {args.entities} entities: {wall:.2f} s   target <= 3 s")
    types = [GF_CLASSES[c] for c in cls]
    _, wall, _ = timed(lambda: gf_encode(types, boxes))
    print(f"GF encoding (counts, overlaps, features, adjacency), {args.entities} entities: {wall:.2f} s")


if __name__ == "__main__":
    main()
