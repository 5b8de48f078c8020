"""Benchmark preprocessing against parsing alone (issue 2 targets).

    python bench/bench_preprocess.py [--input DIR] [--workers N]

Times, on a folder of drawings (default ``../shared/dxf/leadframe``):
(a) ``ezdxf.readfile`` alone, one process; (b) the full preprocessing
(``dataset/dxf_process.py``: read, boxes, both encodings, writing) with 1 worker;
(c) the same with N workers. Prints files/s, the ratio b/a and the speed-up c vs b,
with wall-clock and CPU seconds (CPU time is robust when the machine is shared).
Also times the GF overlap counting alone on a synthetic 50,000-entity drawing.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ezdxf
import numpy as np

from config.process_config import ProcessConfig
from dataset.dxf_process import run
from dataset.dxf_process_GF import GF_CLASSES, count_overlaps, gf_encode

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="../shared/dxf/leadframe", help="folder of DXF files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for (c)")
    parser.add_argument("--entities", type=int, default=50_000, help="synthetic drawing size for the overlap timing")
    args = parser.parse_args()

    files = sorted(Path(args.input).rglob("*.dxf"))
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
    else:
        print(f"no DXF files under {args.input}: skipping (a)-(c)")

    boxes, cls = synthetic_boxes(args.entities)
    _, wall, _ = timed(lambda: count_overlaps(boxes, cls, len(GF_CLASSES)))
    print(f"GF overlap counting, {args.entities} entities: {wall:.2f} s   target <= 3 s")
    types = [GF_CLASSES[c] for c in cls]
    _, wall, _ = timed(lambda: gf_encode(types, boxes))
    print(f"GF encoding (counts, overlaps, features, adjacency), {args.entities} entities: {wall:.2f} s")


if __name__ == "__main__":
    main()
