"""A retrieval store for one model's embeddings of a large archive (10^5-10^6 drawings).

Layout of a store folder (one folder per model identity)::

    index.sqlite       table ``entries``: content hash -> path, row, failure reason;
                       table ``meta``: dim, rows, index bookkeeping
    shard-00000.npy    float32 [SHARD_ROWS, dim] each, memory-mapped; rows are appended
    shard-00001.npy    (a shard is allocated whole, the filled part is ``meta.rows``)
    ann.faiss          the approximate index (faiss IVF with 8-bit scalar-quantized
                       rows, inner product on L2-normalized rows), built once and
                       extended as rows arrive; it proposes RERANK x k candidates,
                       which are re-scored exactly from the shards; the lists it
                       visits per query (nprobe) are calibrated at build time for
                       recall@10 >= 0.97 against exact search

Nothing is rewritten when drawings are added: new rows go to the end of the last
shard, new entries into sqlite (one transaction per ``add``). The approximate index
is extended in memory with the rows it lacks when it is next used, and written back
once, by :meth:`EmbeddingStore.save_index` or :meth:`EmbeddingStore.close` (a gallery
build saves it at its end), not on every ``add``. Rows of the saved index are always a
prefix of the store's rows, so a store whose index file is older than its shards
(Ctrl-C, a crash) only re-adds the missing tail. Search is exact (numpy over the
memory-mapped shards, in blocks) below ``exact_below`` rows or when faiss is missing,
approximate above.

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
from utils.ranking import topk_blocks

SHARD_ROWS = 1 << 16
EXACT_BELOW = 50_000
RERANK = 4  # candidates per wanted row that the approximate index proposes for exact re-scoring
_EPS = 1e-12


class StoreError(RuntimeError):
    """The store folder cannot be used (another model's store, a damaged file, ...)."""


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def _faiss():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss  # type: ignore
    except ImportError:
        return None
    return faiss


class ShardedRows:
    """Append-only rows of one numpy dtype in memory-mapped ``.npy`` shards.

    ``<folder>/<prefix>-00000.npy``, ``-00001.npy``, ... each hold ``shard_rows`` rows of
    ``dtype`` (a plain dtype with ``row_shape``, or a structured dtype); a shard is
    allocated whole on its first row and written in place afterwards. How many rows
    are filled is the caller's bookkeeping (``n``), committed after the rows are
    written, so rows past ``n`` left by an interrupted write are simply overwritten.

    Args:
        folder: where the shards live.
        prefix: file name prefix of the shards.
        dtype: row dtype; ``row_shape``: shape of one row (``()`` for a structured dtype).
        shard_rows: rows per shard.
    """

    def __init__(self, folder: Path, prefix: str, dtype: np.dtype, row_shape: tuple[int, ...],
                 shard_rows: int) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.shard_rows = int(shard_rows)

    def path(self, k: int) -> Path:
        return self.folder / f"{self.prefix}-{k:05d}.npy"

    def write(self, start: int, values: np.ndarray) -> None:
        """Write ``values [m, *row_shape]`` at rows ``start .. start + m - 1``."""
        done = 0
        while done < len(values):
            k, offset = divmod(start + done, self.shard_rows)
            path = self.path(k)
            if path.exists():
                shard = open_memmap(path, mode="r+")
            else:
                shard = open_memmap(path, mode="w+", dtype=self.dtype, shape=(self.shard_rows, *self.row_shape))
            take = min(len(values) - done, self.shard_rows - offset)
            shard[offset:offset + take] = values[done:done + take]
            shard.flush()
            del shard
            done += take

    def shards(self, n: int) -> list[np.ndarray]:
        """The filled part of every shard holding the first ``n`` rows, memory-mapped read-only."""
        out = []
        for k in range((n + self.shard_rows - 1) // self.shard_rows):
            filled = min(self.shard_rows, n - k * self.shard_rows)
            out.append(np.load(self.path(k), mmap_mode="r")[:filled])
        return out

    def take(self, rows: np.ndarray, n: int) -> np.ndarray:
        """Rows ``rows`` (each < ``n``) gathered into memory: ``[len(rows), *row_shape]``."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"{self.folder}: row out of range 0..{n - 1}")
        shards = self.shards(n)
        k = rows // self.shard_rows
        for s in np.unique(k):
            sel = k == s
            out[sel] = shards[int(s)][rows[sel] - int(s) * self.shard_rows]
        return out


def select_keys(db: sqlite3.Connection, table: str, key: str, columns: Sequence[str],
                keys: Sequence[str]) -> dict[str, tuple]:
    """``key -> (columns...)`` for the ``keys`` found in ``table``.

    Few keys: looked up by primary key (``IN``, in chunks sqlite accepts); keys that are a
    good part of the table (a whole gallery): one scan of the table, which costs less
    than ``10^5`` index lookups.
    """
    cols = ", ".join((key, *columns))
    size = db.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    if len(keys) * 4 >= size:
        wanted = set(keys)
        return {r[0]: r[1:] for r in db.execute(f"SELECT {cols} FROM {table}") if r[0] in wanted}
    found: dict[str, tuple] = {}
    keys = list(keys)
    for s in range(0, len(keys), 900):  # sqlite's bound-parameter limit
        part = keys[s:s + 900]
        found.update((r[0], r[1:]) for r in db.execute(
            f"SELECT {cols} FROM {table} WHERE {key} IN ({','.join('?' * len(part))})", part))
    return found


def connect(path: Path) -> sqlite3.Connection:
    """A sqlite connection for an append-mostly index: write-ahead log, commits that
    survive a killed process (``synchronous=NORMAL``), not every power cut."""
    db = sqlite3.connect(path, timeout=120)  # another process appending waits, not fails
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


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
        self.db = connect(self.folder / "index.sqlite")
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
        self._rows = ShardedRows(self.folder, "shard", np.dtype(np.float32), (self.dim,), self.shard_rows)
        self._ann = None
        self._ann_dirty = False  # the index in memory holds rows the saved file lacks
        self.index_saves = 0  # times the index file was written in this session (tests, benchmarks)

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
        """Save the approximate index if it gained rows in this session, then close."""
        try:
            self.save_index()
        finally:
            self.db.close()

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- entries -------------------------------------------------------------------
    def lookup(self, hashes: Sequence[str]) -> dict[str, tuple[Optional[int], Optional[str]]]:
        """``hash -> (row, failure)`` for the hashes the store knows (others are absent)."""
        return select_keys(self.db, "entries", "hash", ("row", "failure"), hashes)

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

        A hash already in the store (or seen earlier in the same call) keeps its row (its
        path is updated); the new vectors go to the end of the last shard. The approximate
        index takes them when it is next used.
        """
        hashes = list(hashes)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim or emb.shape[0] != len(hashes):
            raise StoreError(f"{self.folder}: expected [{len(hashes)}, {self.dim}] embeddings, got {emb.shape}")
        with self.db:  # one writer at a time: another process appending to this store waits
            self.db.execute("BEGIN IMMEDIATE")
            known = {h: r for h, (r, _f) in self.lookup(hashes).items() if r is not None}
            start = len(self)
            rows = np.empty(len(hashes), dtype=np.int64)
            new: list[int] = []
            for i, h in enumerate(hashes):
                if h not in known:
                    known[h] = start + len(new)
                    new.append(i)
                rows[i] = known[h]
            self._rows.write(start, emb[new])  # before the commit that counts them
            self.db.executemany("INSERT OR REPLACE INTO entries (hash, path, row, failure) VALUES (?, ?, ?, NULL)",
                                ((h, str(p), int(r)) for h, p, r in zip(hashes, paths, rows)))
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rows', ?)", (start + len(new),))
        return rows

    # --- vectors -------------------------------------------------------------------
    def shards(self) -> list[np.ndarray]:
        """The filled part of every shard, memory-mapped read-only: ``float32 [m_k, dim]``."""
        return self._rows.shards(len(self))

    def vectors(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Embeddings of ``rows`` (all rows when None) as an in-memory ``float32 [n, dim]``."""
        if rows is None:
            return np.concatenate(self.shards(), axis=0) if len(self) else np.zeros((0, self.dim), np.float32)
        return self._rows.take(rows, len(self))

    # --- search ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, exact: Optional[bool] = None,
               block_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by cosine similarity for each query ``[q, dim]``.

        Returns ``(scores float32 [q, k'], rows int64 [q, k'])`` with ``k' = min(k, len)``,
        best first. ``exact=None`` chooses: exact below ``exact_below`` rows or without
        faiss, the saved approximate index above. A query whose visited lists hold fewer
        than ``k'`` rows is answered exactly (no ``-1`` rows are returned).
        """
        q = _normalize(np.atleast_2d(queries))
        n = len(self)
        k = min(int(k), n)
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if exact is None:
            exact = n < self.exact_below or _faiss() is None
        if not exact:
            scores, rows = self._rerank(q, self.ann_index().search(q, min(n, RERANK * k))[1], k)
            short = np.flatnonzero((rows < 0).any(axis=1))
            if len(short):
                scores[short], rows[short] = self.search(q[short], k, exact=True, block_rows=block_rows)
            return scores, rows
        blocks = (shard[s:s + block_rows] for shard in self.shards() for s in range(0, len(shard), block_rows))
        rows, scores = topk_blocks(q, blocks, k)
        return scores.astype(np.float32), rows

    def _rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine of each query ``[q, dim]`` with its candidate rows ``[q, c]``
        (``-1``: none), read from the shards; the best ``k`` of them, best first."""
        safe = np.where(candidates < 0, 0, candidates)
        vecs = _normalize(self.vectors(safe.ravel())).reshape(*safe.shape, self.dim)
        sim = np.einsum("qd,qcd->qc", q, vecs)
        sim[candidates < 0] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        return np.take_along_axis(sim, order, axis=1).astype(np.float32), rows

    def ann_index(self):
        """The approximate index: the saved one, extended in memory with the rows added
        since it was saved (written back by :meth:`save_index`), or built afresh (and
        saved) when there is none or the store has grown 4x past the size it was
        trained on."""
        faiss = _faiss()
        if faiss is None:
            raise StoreError("approximate search needs faiss (pip install faiss-cpu)")
        path = self.folder / "ann.faiss"
        n = len(self)
        trained_on = int(self._meta("index_trained_on") or 0)
        grown = n > 4 * max(trained_on, 1)
        if self._ann is None and path.exists() and not grown:
            try:
                ann = faiss.read_index(str(path))
            except RuntimeError as err:
                raise StoreError(f"{path}: the saved index cannot be read ({err}); delete it to rebuild it") from err
            if ann.ntotal <= n and ann.d == self.dim:  # else a foreign or damaged file: rebuilt below
                self._ann = ann
                self._ann.nprobe = int(self._meta("index_nprobe") or 1)
        if self._ann is None or grown:
            self._ann, trained_on = self._train_ann(faiss), n
            self._extend(n)
            self._ann.nprobe = self._calibrate_nprobe(self._ann)
            self._set_meta(index_trained_on=trained_on, index_nprobe=int(self._ann.nprobe))
            self.save_index()
        elif self._ann.ntotal < n:
            self._extend(n)
        return self._ann

    def _extend(self, n: int) -> None:
        """Add rows ``ntotal .. n - 1`` to the index in memory (in shard-sized blocks)."""
        for start in range(int(self._ann.ntotal), n, self.shard_rows):
            self._ann.add(_normalize(self.vectors(np.arange(start, min(n, start + self.shard_rows)))))
            self._ann_dirty = True

    def save_index(self) -> bool:
        """Write the approximate index if it holds rows the saved file lacks (atomic);
        True when it was written."""
        if self._ann is None or not self._ann_dirty:
            return False
        faiss = _faiss()
        index = self._ann
        atomic_write(self.folder / "ann.faiss", lambda tmp: faiss.write_index(index, str(tmp)))
        self._set_meta(index_rows=int(index.ntotal))
        self._ann_dirty = False
        self.index_saves += 1
        return True

    def _train_ann(self, faiss):
        """An empty IVF index of 8-bit scalar-quantized rows (inner product; a quarter of
        the memory traffic of float rows, the exact re-scoring restores the order) with
        ``nlist ~ 4 sqrt(n)`` lists (at most one per 39 rows, faiss' minimum for
        k-means), trained on a sample of the rows."""
        n = len(self)
        nlist = int(max(1, min(65536, 4 * np.sqrt(n), n // 39)))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(self.dim), self.dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
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
        qn = _normalize(queries)

        def recall(nprobe: int) -> float:
            index.nprobe = nprobe
            _, approx = self._rerank(qn, index.search(qn, min(n, RERANK * k))[1], k)
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


