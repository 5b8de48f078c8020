"""A retrieval store for one model's embeddings of a large archive (10^5-10^6 drawings).

Layout of a store folder (one folder per model identity)::

    index.sqlite       table ``entries``: content hash -> path, row, failure reason;
                       table ``meta``: dim, rows, index bookkeeping
    shard-00000.npy    float32 [SHARD_ROWS, dim] each, memory-mapped; rows are appended
    shard-00001.npy    (a shard is allocated whole, the filled part is ``meta.rows``)
    ann.faiss          the approximate index (faiss IVF-Flat, inner product on
                       L2-normalized rows), built once and extended as rows arrive;
                       the lists it visits per query (nprobe) are calibrated at build
                       time for recall@10 >= 0.97 against exact search

Nothing is rewritten when drawings are added: new rows go to the end of the last
shard, new entries into sqlite (one transaction per ``add``), new vectors into the
saved index. Search is exact (numpy over the memory-mapped shards, in blocks) below
``exact_below`` rows or when faiss is missing, approximate above.

Only cosine similarity is indexed: the rows are stored as given and normalized when
scored. ``search(..., exact=True)`` gives the exact answer at any size, and tests
hold the approximate one against it.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from numpy.lib.format import open_memmap

from dataset.files import atomic_write

SHARD_ROWS = 1 << 16
EXACT_BELOW = 50_000
_EPS = 1e-12


class StoreError(RuntimeError):
    """The store folder cannot be used (another model's store, a damaged file, ...)."""


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def _faiss():
    try:
        import faiss  # type: ignore
    except ImportError:
        return None
    return faiss


class EmbeddingStore:
    """Embeddings of one model, keyed by drawing content hash.

    Args:
        folder: the store folder (created when missing).
        dim: embedding width; required for a new store, checked against an old one.
        exact_below: stores with fewer rows are searched exactly.
        shard_rows: rows per ``.npy`` shard (tests use small shards).
    """

    def __init__(self, folder: str | Path, dim: Optional[int] = None, exact_below: int = EXACT_BELOW,
                 shard_rows: int = SHARD_ROWS) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.exact_below = exact_below
        self.db = sqlite3.connect(self.folder / "index.sqlite")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS entries (hash TEXT PRIMARY KEY, path TEXT NOT NULL, "
                            "row INTEGER, failure TEXT)")
            self.db.execute("CREATE INDEX IF NOT EXISTS entries_row ON entries(row)")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        stored_dim = self._meta("dim")
        if stored_dim is None:
            if dim is None:
                raise StoreError(f"{self.folder}: a new store needs the embedding width (dim)")
            self._set_meta(dim=int(dim), rows=0, shard_rows=int(shard_rows), index_rows=0)
        elif dim is not None and int(dim) != stored_dim:
            raise StoreError(f"{self.folder}: holds {stored_dim}-wide embeddings, not {dim}: "
                             "a store belongs to one model; use another folder")
        self.dim = int(self._meta("dim"))
        self.shard_rows = int(self._meta("shard_rows"))
        self._ann = None

    # --- bookkeeping -------------------------------------------------------------
    def _meta(self, key: str) -> Optional[int]:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, **values: int) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    def __len__(self) -> int:
        """Rows (embedded drawings) in the store."""
        return int(self._meta("rows") or 0)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- entries -------------------------------------------------------------------
    def lookup(self, hashes: Sequence[str]) -> dict[str, tuple[Optional[int], Optional[str]]]:
        """``hash -> (row, failure)`` for the hashes the store knows (others are absent)."""
        found: dict[str, tuple[Optional[int], Optional[str]]] = {}
        hashes = list(hashes)
        for s in range(0, len(hashes), 900):  # sqlite's bound-parameter limit
            part = hashes[s:s + 900]
            marks = ",".join("?" * len(part))
            for h, row, failure in self.db.execute(
                    f"SELECT hash, row, failure FROM entries WHERE hash IN ({marks})", part):
                found[h] = (row, failure)
        return found

    def paths(self, rows: np.ndarray) -> list[str]:
        """The path stored with each row (the latest path seen for that content)."""
        flat = [int(r) for r in np.asarray(rows).ravel()]
        by_row: dict[int, str] = {}
        for s in range(0, len(flat), 900):
            part = flat[s:s + 900]
            marks = ",".join("?" * len(part))
            by_row.update(self.db.execute(f"SELECT row, path FROM entries WHERE row IN ({marks})", part))
        return [by_row.get(r, "") for r in flat]

    def add_failures(self, hashes: Sequence[str], paths: Sequence[str], reasons: Sequence[str]) -> None:
        """Remember drawings that could not be embedded (not retried until their content changes)."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO entries (hash, path, row, failure) VALUES (?, ?, NULL, ?)",
                                zip(hashes, map(str, paths), reasons))

    def add(self, hashes: Sequence[str], paths: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """Append embeddings ``[n, dim]``; returns their rows ``int64 [n]``.

        A hash already in the store keeps its row (its path is updated); the new
        vectors go to the end of the last shard and into the saved index.
        """
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim or emb.shape[0] != len(hashes):
            raise StoreError(f"{self.folder}: expected [{len(hashes)}, {self.dim}] embeddings, got {emb.shape}")
        known = self.lookup(hashes)
        rows = np.empty(len(hashes), dtype=np.int64)
        new = [i for i, h in enumerate(hashes) if known.get(h, (None, None))[0] is None]
        start = len(self)
        for j, i in enumerate(new):
            rows[i] = start + j
        for i, h in enumerate(hashes):
            if known.get(h, (None, None))[0] is not None:
                rows[i] = known[h][0]
        self._write_rows(start, emb[new])
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO entries (hash, path, row, failure) VALUES (?, ?, ?, NULL)",
                                ((h, str(p), int(r)) for h, p, r in zip(hashes, paths, rows)))
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rows', ?)", (start + len(new),))
        return rows

    # --- vectors -------------------------------------------------------------------
    def _shard_path(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.npy"

    def _write_rows(self, start: int, emb: np.ndarray) -> None:
        done = 0
        while done < len(emb):
            row = start + done
            k, offset = divmod(row, self.shard_rows)
            path = self._shard_path(k)
            if path.exists():
                shard = open_memmap(path, mode="r+")
            else:
                shard = open_memmap(path, mode="w+", dtype=np.float32, shape=(self.shard_rows, self.dim))
            take = min(len(emb) - done, self.shard_rows - offset)
            shard[offset:offset + take] = emb[done:done + take]
            shard.flush()
            del shard
            done += take

    def shards(self) -> list[np.ndarray]:
        """The filled part of every shard, memory-mapped read-only: ``float32 [m_k, dim]``."""
        n = len(self)
        out = []
        for k in range((n + self.shard_rows - 1) // self.shard_rows):
            filled = min(self.shard_rows, n - k * self.shard_rows)
            out.append(np.load(self._shard_path(k), mmap_mode="r")[:filled])
        return out

    def vectors(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Embeddings of ``rows`` (all rows when None) as an in-memory ``float32 [n, dim]``."""
        if rows is None:
            return np.concatenate(self.shards(), axis=0) if len(self) else np.zeros((0, self.dim), np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shards = self.shards()
        k = rows // self.shard_rows
        for s in np.unique(k):
            sel = k == s
            out[sel] = shards[int(s)][rows[sel] - int(s) * self.shard_rows]
        return out

    # --- search ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, exact: Optional[bool] = None,
               block_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by cosine similarity for each query ``[q, dim]``.

        Returns ``(scores float32 [q, k'], rows int64 [q, k'])`` with ``k' = min(k, len)``,
        best first. ``exact=None`` chooses: exact below ``exact_below`` rows or without
        faiss, the saved approximate index above.
        """
        q = _normalize(np.atleast_2d(queries))
        n = len(self)
        k = min(int(k), n)
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if exact is None:
            exact = n < self.exact_below or _faiss() is None
        if not exact:
            ann = self.ann_index()
            scores, rows = ann.search(q, k)
            return scores.astype(np.float32), rows.astype(np.int64)
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_r = np.full((len(q), k), -1, dtype=np.int64)
        base = 0
        for shard in self.shards():
            for s in range(0, len(shard), block_rows):
                block = _normalize(shard[s:s + block_rows])
                sim = q @ block.T
                take = min(k, sim.shape[1])
                idx = np.argpartition(-sim, take - 1, axis=1)[:, :take]
                cand_s = np.concatenate([best_s, np.take_along_axis(sim, idx, axis=1)], axis=1)
                cand_r = np.concatenate([best_r, idx + base + s], axis=1)
                order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
                best_s = np.take_along_axis(cand_s, order, axis=1)
                best_r = np.take_along_axis(cand_r, order, axis=1)
            base += len(shard)
        return best_s, best_r

    def ann_index(self):
        """The saved approximate index, extended with rows added since it was saved,
        rebuilt when the store has grown 4x past the size it was trained on."""
        faiss = _faiss()
        if faiss is None:
            raise StoreError("approximate search needs faiss (pip install faiss-cpu)")
        path = self.folder / "ann.faiss"
        n = len(self)
        in_index = int(self._meta("index_rows") or 0)
        trained_on = int(self._meta("index_trained_on") or 0)
        grown = n > 4 * max(trained_on, 1)
        if self._ann is None and path.exists() and in_index <= n and not grown:
            self._ann = faiss.read_index(str(path))
            self._ann.nprobe = int(self._meta("index_nprobe") or 1)
        if self._ann is None or grown:
            self._ann, in_index, trained_on = self._train_ann(faiss), 0, n
        if in_index < n:
            for start in range(in_index, n, self.shard_rows):
                self._ann.add(_normalize(self.vectors(np.arange(start, min(n, start + self.shard_rows)))))
            if in_index == 0:
                self._ann.nprobe = self._calibrate_nprobe(self._ann)
            index = self._ann
            atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
            self._set_meta(index_rows=n, index_trained_on=trained_on, index_nprobe=int(index.nprobe))
        return self._ann

    def _train_ann(self, faiss):
        """An empty IVF-Flat index (inner product) with ``nlist ~ 4 sqrt(n)`` lists,
        trained on a sample of the rows."""
        n = len(self)
        nlist = int(max(16, min(65536, 4 * np.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.sort(np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False))
        index.train(_normalize(self.vectors(sample)))
        return index

    def _calibrate_nprobe(self, index, target: float = 0.97, n_queries: int = 100, k: int = 10) -> int:
        """The smallest ``nprobe`` (lists visited per query) whose recall@10 against the
        exact answer reaches ``target`` on ``n_queries`` stored rows used as queries."""
        n = len(self)
        rows = np.sort(np.random.default_rng(1).choice(n, size=min(n, n_queries), replace=False))
        queries = self.vectors(rows)
        _, exact = self.search(queries, k, exact=True)
        def recall(nprobe: int) -> float:
            index.nprobe = nprobe
            _, approx = index.search(_normalize(queries), k)
            return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx.tolist(), exact.tolist())]))

        hi = 1
        while hi < index.nlist and recall(hi) < target:  # doubling, then bisection between hi/2 and hi
            hi = min(index.nlist, hi * 2)
        lo = max(1, hi // 2)
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if recall(mid) >= target else (mid, hi)
        index.nprobe = hi
        return hi


def open_store(folder: str | Path, dim: Optional[int] = None, **kwargs) -> EmbeddingStore:
    """Open (or create) a store; a damaged sqlite file is a :class:`StoreError` naming the fix."""
    try:
        return EmbeddingStore(folder, dim, **kwargs)
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{folder}: the store index is damaged ({err}); delete the folder to rebuild it") from err


