"""Speed and recall of the retrieval store (``utils.embedding_store``) at archive scale.

    python bench/bench_store.py                       # 10^5 embeddings
    python bench/bench_store.py --sizes 100000 1000000 --dim 256

Synthetic clustered embeddings stand in for an archive (revisions of one part sit
close together, as real embeddings do). For each size it reports: time to fill a new
store (append + sqlite), time to build the approximate index, query latency (median
and 95th percentile over ``--queries`` single queries) of the approximate and the
exact search, recall@10 of the approximate search against the exact one, the time
to add 1,000 more drawings to the existing store and its index (embedding cost
excluded; the index is extended in memory), and the time to write the index back,
which a gallery build does once at its end rather than on every add.
Targets: < 50 ms per query at 10^6, recall@10 >= 0.95.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from utils.retrieval.store import EmbeddingStore  # noqa: E402


def clustered(n: int, dim: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """``float32 [n, dim]``: n points around n/20 centres (groups of ~20 similar drawings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(8, n // 20), dim)).astype(np.float32)
    pick = rng.integers(0, len(centres), n)
    out = centres[pick]
    out += spread * rng.normal(size=(n, dim)).astype(np.float32)
    return out


def bench_size(n: int, dim: int, n_queries: int, folder: Path, spread: float) -> dict[str, float]:
    emb = clustered(n + 1000, dim, seed=n, spread=spread)
    store = EmbeddingStore(folder, dim=dim, exact_below=0)
    t0 = time.perf_counter()
    block = 100_000
    for s in range(0, n, block):
        e = min(n, s + block)
        store.add([f"h{i}" for i in range(s, e)], [f"/archive/{i}.dxf" for i in range(s, e)], emb[s:e])
    fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.ann_index()
    build = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    queries = emb[rng.choice(n, n_queries, replace=False)] + 0.1 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    approx_t, exact_t, hits = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        _, a = store.search(q[None], k=10)
        approx_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, x = store.search(q[None], k=10, exact=True)
        exact_t.append(time.perf_counter() - t0)
        hits.append(len(set(a[0].tolist()) & set(x[0].tolist())) / 10)
    t0 = time.perf_counter()
    store.add([f"h{i}" for i in range(n, n + 1000)], [f"/archive/{i}.dxf" for i in range(n, n + 1000)], emb[n:])
    add_rows = time.perf_counter() - t0
    store.ann_index()  # the new rows enter the index in memory
    add_1000 = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.save_index()  # once, at the end of a gallery build (SimDeepDXF.py) or on close
    save = time.perf_counter() - t0
    store.close()
    return {"n": n, "fill_s": fill, "index_build_s": build,
            "ann_ms_median": 1e3 * float(np.median(approx_t)), "ann_ms_p95": 1e3 * float(np.percentile(approx_t, 95)),
            "exact_ms_median": 1e3 * float(np.median(exact_t)), "recall_at_10": float(np.mean(hits)),
            "add_1000_s": add_1000, "add_rows_s": add_rows, "save_s": save}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--spread", type=float, default=1.0, help="noise around each group centre (1.0: as far as the centres are from the origin)")
    args = ap.parse_args()
    print(f"spread {args.spread}, {args.queries} single queries, k = 10")
    print("| embeddings | fill store | build index | approx. query (median / p95) | exact query | recall@10 "
          "| add 1,000 (rows; + index in memory) | save the index once |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_size(n, args.dim, args.queries, Path(tmp) / "store", args.spread)
        print(f"| {n:,} × {args.dim} | {r['fill_s']:.1f} s | {r['index_build_s']:.1f} s | "
              f"{r['ann_ms_median']:.2f} / {r['ann_ms_p95']:.2f} ms | {r['exact_ms_median']:.0f} ms | "
              f"{r['recall_at_10']:.3f} | {r['add_rows_s']:.3f} s; {r['add_1000_s']:.2f} s | "
              f"{r['save_s']:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
