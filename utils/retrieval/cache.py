"""On-disk cache of gallery encodings and embeddings (SimDeepDXF.py retrieval).

Every drawing file gets a *content key*: the SHA-1 of its bytes (for an ``.h5`` also
of its GF twin's bytes). Hashing a 2 MB file costs milliseconds; the key is remembered
per path with the file's size and modification time, so an unchanged archive is
only ``stat``-ed. A changed file gets a new key and is encoded and embedded again;
a renamed or copied file keeps its key and is not.

Folder layout (the folder is chosen by ``SimDeepDXF.py``: ``--cache_dir``, else
under the user's cache folder, see :func:`default_cache_dir`)::

    cache.sqlite       table files: absolute path -> size, mtime_ns, twin size, twin
                       mtime_ns, content key; table encodings: content key -> row in
                       the enc shards, or why the file cannot be used, and its DXF source
    enc-00000.npy      per row (append-only, memory-mapped, ``ENCODING_DTYPE``):
                       type_counts [12], raw GF features [10,11] and adjacency [10,10]
                       (has_gf), layout counts [12,8,8] (uint16, clipped at 65535):
                       enough for every floor
    models/<id>/       one :class:`utils.retrieval.store.EmbeddingStore` per model identity
                       (checkpoint hash, embedding kind, encoding format; ``identity.txt``):
                       embeddings as memory-mapped shards, an sqlite index, and the saved
                       approximate index; a drawing a model cannot embed is remembered there

Nothing is rewritten as a whole: new rows are appended, new entries inserted (one
transaction per :meth:`EmbeddingCache.save`). Rows of files that changed stay behind as
unused rows (a gallery only looks up its own files' keys). A cache of an older format
or a damaged one is replaced (with a warning), never fatal. ``EmbeddingCache(None)``
keeps everything in a temporary folder removed when the cache is closed (``--no-cache``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from dataset.formats import GF_CLASSES, N_TYPES
from model.floors import GRID
from dataset.archive import gf_twin_path
from utils.retrieval.encodings import H5_SUFFIXES, DrawingEncoding, sha1_files
from utils.retrieval.store import (EXACT_BELOW, EmbeddingStore, ShardedRows, StoreError, connect, open_store,
                                   select_keys)

log = logging.getLogger(__name__)
CACHE_VERSION = 4  # a cache of another version is replaced (its history: docs/architecture.md)
_C = len(GF_CLASSES)
APP_NAME = "dxf-similarity"
ENC_SHARD_ROWS = 1 << 13  # 20 MB per shard (allocated whole, sparse where the file system allows)
#: one cached encoding: what the floors (and --groups, --render) need of a drawing
ENCODING_DTYPE = np.dtype([("type_counts", np.int64, (N_TYPES,)), ("gf_features", np.float32, (_C, _C + 1)),
                           ("gf_adjacency", np.float32, (_C, _C)), ("has_gf", np.bool_),
                           ("layout", np.uint16, (N_TYPES, GRID, GRID))])
_LEGACY = ("files.json", "failures.json", "encodings.npz")


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/dxf-similarity`` (default ``~/.cache/dxf-similarity``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / APP_NAME


def default_cache_dir(first: str | Path) -> Path:
    """Where a gallery's cache lives when no ``--cache_dir`` is given: under the user's
    cache folder, one sub-folder per gallery folder (its name and a hash of its absolute
    path), never inside the archive itself."""
    p = Path(first)
    folder = (p.parent if p.is_file() else p).resolve()
    tag = hashlib.sha1(str(folder).encode("utf-8")).hexdigest()[:12]
    return user_cache_root() / f"{folder.name or 'root'}-{tag}"


def encoding_record(enc: DrawingEncoding) -> np.ndarray:
    """One :data:`ENCODING_DTYPE` record of ``enc`` (zeros where it has no GF matrices)."""
    rec = np.zeros((), dtype=ENCODING_DTYPE)
    rec["type_counts"] = np.asarray(enc.type_counts, dtype=np.int64).reshape(N_TYPES)
    if enc.has_gf:
        rec["gf_features"], rec["gf_adjacency"], rec["has_gf"] = enc.gf_features, enc.gf_adjacency, True
    rec["layout"] = np.minimum(np.asarray(enc.layout), np.iinfo(np.uint16).max)
    return rec


class EmbeddingCache:
    """Content keys, encodings and embeddings of gallery files, kept in ``folder``.

    Args:
        folder: the cache folder (created when missing); None: a temporary folder for this
            run only, removed by :meth:`close` or at exit.
        exact_below: model stores with fewer rows are searched exactly, larger ones
            through their approximate index (tests force it with a small value).
    """

    def __init__(self, folder: str | Path | None, exact_below: int = EXACT_BELOW):
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dxf-similarity-")
            weakref.finalize(self, self._tmp.cleanup)
            folder = self._tmp.name
        self.folder = Path(folder)
        self.persistent = self._tmp is None
        self.exact_below = exact_below
        self.hashed = 0  # files whose bytes were hashed in this session
        self._stores: dict[str, EmbeddingStore] = {}
        self._new_files: dict[str, tuple[int, int, int, int, str]] = {}
        self._new_enc: dict[str, tuple[np.ndarray, str]] = {}  # key -> (record, source)
        self._new_failures: dict[str, str] = {}
        self._broken = False
        self.db: Optional[sqlite3.Connection] = None
        try:
            self._open()
        except (OSError, sqlite3.Error) as err:
            self._give_up(err)

    # ------------------------------------------------------------------ disk
    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "cache.sqlite"
        try:
            self.db = self._connect(path)
        except sqlite3.DatabaseError as err:
            print(f"warning: the embedding cache index {path} is damaged ({err}): starting a new cache",
                  file=sys.stderr)
            self._wipe()
            self.db = self._connect(path)
        self._rows = ShardedRows(self.folder, "enc", ENCODING_DTYPE, (), ENC_SHARD_ROWS)

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = connect(path)
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if version is not None and int(version[0]) != CACHE_VERSION:
            db.close()
            print(f"note: the embedding cache in {self.folder} was written by another version of the toolkit "
                  f"(cache version {int(version[0])}, now {CACHE_VERSION}): starting a new one", file=sys.stderr)
            self._wipe()
            return self._connect(path)
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                       "twin_size INTEGER, twin_mtime_ns INTEGER, key TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS encodings (key TEXT PRIMARY KEY, row INTEGER, failure TEXT, "
                       "source TEXT)")
            db.execute("CREATE INDEX IF NOT EXISTS encodings_row ON encodings(row)")
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('version', ?), ('enc_rows', 0)",
                       (CACHE_VERSION,))
        for name in _LEGACY:  # the cache of the older format (whole files rewritten on each save)
            (self.folder / name).unlink(missing_ok=True)
        for old in self.folder.glob("emb_*.npz"):
            old.unlink()
        return db

    def _wipe(self) -> None:
        """Remove this cache's own files (a damaged or older-format cache)."""
        for p in self.folder.glob("cache.sqlite*"):
            p.unlink()
        for p in self.folder.glob("enc-*.npy"):
            p.unlink()
        shutil.rmtree(self.folder / "models", ignore_errors=True)

    def _give_up(self, err: Exception) -> None:
        """A cache folder that cannot be used: one warning, then a temporary cache."""
        where = self.folder
        self._broken = True
        print(f"warning: cannot use the embedding cache in {where} ({getattr(err, 'strerror', None) or err}): "
              "going on without it (choose another folder with --cache_dir)", file=sys.stderr)
        self._tmp = tempfile.TemporaryDirectory(prefix="dxf-similarity-")
        weakref.finalize(self, self._tmp.cleanup)
        self.folder, self.persistent = Path(self._tmp.name), False
        self._stores.clear()
        self._open()

    def _meta(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def close(self) -> None:
        """Write what is pending, save the model stores' indexes, close (a temporary cache is removed)."""
        self.save()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------- content keys
    def content_keys(self, paths: Sequence[str | Path],
                     on_error: Optional[Callable[[Path, OSError], None]] = None) -> list[Optional[str]]:
        """The content key of every file (None where it cannot be read; ``on_error`` hears why).

        Every file is ``stat``-ed; only files whose size or modification time (or their GF
        twin's) differ from the remembered ones are hashed. One batched lookup per call.
        """
        stamps: list[Optional[tuple[str, list[str], tuple[int, int, int, int]]]] = []
        for path in paths:
            p = os.fspath(path)  # (no Path objects: parsing 10^5 paths costs more than stat-ing them)
            try:
                st = os.stat(p)
                files, twin_size, twin_mtime = [p], -1, -1
                if p.lower().endswith(H5_SUFFIXES):
                    twin = gf_twin_path(p)
                    try:
                        tst = twin.stat()
                        twin_size, twin_mtime = tst.st_size, tst.st_mtime_ns
                        files.append(str(twin))
                    except FileNotFoundError:
                        pass
                ident = p if os.path.isabs(p) else os.path.abspath(p)
                stamps.append((ident, files, (st.st_size, st.st_mtime_ns, twin_size, twin_mtime)))
            except OSError as err:
                if on_error is None:
                    raise
                on_error(Path(p), err)
                stamps.append(None)
        idents = [s[0] for s in stamps if s is not None]
        known = {p: (tuple(r[:4]), r[4]) for p, r in select_keys(
            self.db, "files", "path", ("size", "mtime_ns", "twin_size", "twin_mtime_ns", "key"), idents).items()}
        keys: list[Optional[str]] = []
        for path, stamp in zip(paths, stamps):
            if stamp is None:
                keys.append(None)
                continue
            ident, files, st = stamp
            hit = known.get(ident) or self._new_files.get(ident)
            if hit is not None and tuple(hit[0]) == st:
                keys.append(hit[1])
                continue
            try:
                key = sha1_files(files)
            except OSError as err:
                if on_error is None:
                    raise
                on_error(Path(path), err)
                keys.append(None)
                continue
            self.hashed += 1
            self._new_files[ident] = (st, key)
            keys.append(key)
        return keys

    def content_key(self, path: str | Path) -> str:
        """The content key of one file (hashing it only when size/mtime changed)."""
        return self.content_keys([path])[0]

    def forget_missing(self, seen: Sequence[str | Path]) -> int:
        """Drop the bookkeeping of files that no longer exist (only files not in ``seen``
        are checked, and only when the cache knows more files than ``seen``); returns how many."""
        total = int(self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        if total <= len(seen):
            return 0
        live = {os.path.abspath(p) for p in seen}
        gone = [p for (p,) in self.db.execute("SELECT path FROM files") if p not in live and not os.path.exists(p)]
        with self.db:
            self.db.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone))
        return len(gone)

    # -------------------------------------------------------------- encodings
    def encoding_rows(self, keys: Sequence[str]) -> dict[str, tuple[Optional[int], Optional[str]]]:
        """``key -> (row, failure)`` for the keys the cache knows: a row of the encoding
        shards, or why the drawing cannot be used (remembered until its content changes)."""
        found = select_keys(self.db, "encodings", "key", ("row", "failure"), list(dict.fromkeys(keys)))
        for k in keys:
            if k in self._new_failures:
                found[k] = (None, self._new_failures[k])
        return found

    def put_encoding(self, key: str, enc: DrawingEncoding) -> None:
        """Remember what the floors need of one drawing (written by :meth:`save`)."""
        self._new_enc[key] = (encoding_record(enc), enc.source or "")

    def put_failure(self, key: str, reason: str) -> None:
        """Remember that the drawing of ``key`` cannot be used, and why."""
        self._new_failures[key] = reason

    def encodings_at(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``type_counts [n,12]``, ``gf_features [n,10,11]``, ``gf_adjacency [n,10,10]``,
        ``has_gf [n]``, ``layout [n,12,8,8]``, ``source [n]`` of encoding rows (:meth:`encoding_rows`),
        gathered from the memory-mapped shards."""
        rows = np.asarray(rows, dtype=np.int64)
        rec = self._rows.take(rows, self._meta("enc_rows"))
        by_row = select_keys(self.db, "encodings", "row", ("source",), [int(r) for r in np.unique(rows)])
        out = {name: rec[name] for name in ENCODING_DTYPE.names}
        out["source"] = np.array([by_row.get(int(r), ("",))[0] or "" for r in rows], dtype=str)
        return out

    # -------------------------------------------------------------- embeddings
    def model_store(self, identity: str, dim: Optional[int] = None) -> Optional[EmbeddingStore]:
        """The store of one model identity; None while it holds nothing and ``dim`` is not given."""
        if identity in self._stores:
            return self._stores[identity]
        folder = self.folder / "models" / hashlib.sha1(identity.encode("utf-8")).hexdigest()[:16]
        tag = folder / "identity.txt"
        if not folder.is_dir() and dim is None:
            return None
        try:
            if folder.is_dir() and (not tag.is_file() or tag.read_text(encoding="utf-8") != identity):
                shutil.rmtree(folder)  # an unfinished or foreign store: rebuilt
            if not folder.is_dir() and dim is None:
                return None
            store = open_store(folder, dim, exact_below=self.exact_below)
        except StoreError as err:
            print(f"warning: {err}: starting it again", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
            if dim is None:
                return None
            store = open_store(folder, dim, exact_below=self.exact_below)
        if not tag.is_file():
            tag.write_text(identity, encoding="utf-8")
        self._stores[identity] = store
        return store

    def embedding_rows(self, identity: str, keys: Sequence[str]) -> dict[str, tuple[Optional[int], Optional[str]]]:
        """``key -> (row, failure)`` in the model's store (keys it does not know are absent)."""
        store = self.model_store(identity)
        return {} if store is None else store.lookup(list(dict.fromkeys(keys)))

    def put_embeddings(self, identity: str, keys: list[str], emb: np.ndarray, paths: Sequence[str] = ()) -> None:
        """Append ``emb: [n, D]`` for ``keys`` to the model's store (written now)."""
        emb = np.asarray(emb, dtype=np.float32)
        store = self.model_store(identity, emb.shape[1])
        store.add(keys, list(paths) or [""] * len(keys), emb)

    def put_embedding_failures(self, identity: str, keys: list[str], reasons: list[str], dim: int,
                               paths: Sequence[str] = ()) -> None:
        """Remember drawings this model cannot embed (e.g. no GF matrices), until they change."""
        store = self.model_store(identity, dim)
        store.add_failures(keys, list(paths) or [""] * len(keys), reasons)

    # -------------------------------------------------------------------- save
    def save(self) -> None:
        """Write what is pending (file stamps, encodings, failures) in one transaction;
        the encoding rows are appended to the shards before they are committed."""
        if self.db is None or not (self._new_files or self._new_enc or self._new_failures):
            return
        try:
            self._save()
        except (OSError, sqlite3.OperationalError) as err:
            if self._broken:
                raise
            pending = (self._new_files, self._new_enc, self._new_failures)
            self._give_up(err)
            self._new_files, self._new_enc, self._new_failures = pending
            self._save()

    def _save(self) -> None:
        with self.db:  # one writer at a time: another process appending to this cache waits
            self.db.execute("BEGIN IMMEDIATE")
            known = self.encoding_rows(list(self._new_enc))
            fresh = [k for k in self._new_enc if known.get(k, (None, None))[0] is None]
            start = self._meta("enc_rows")
            if fresh:  # the rows first, then the commit that counts them
                self._rows.write(start, np.stack([self._new_enc[k][0] for k in fresh]))
            self.db.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, twin_size, twin_mtime_ns, key) "
                "VALUES (?, ?, ?, ?, ?, ?)", ((p, *st, key) for p, (st, key) in self._new_files.items()))
            self.db.executemany("INSERT OR REPLACE INTO encodings (key, row, failure, source) VALUES (?, ?, NULL, ?)",
                                ((k, start + j, self._new_enc[k][1]) for j, k in enumerate(fresh)))
            self.db.executemany("INSERT OR REPLACE INTO encodings (key, row, failure, source) VALUES (?, NULL, ?, '')",
                                self._new_failures.items())
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'enc_rows'", (start + len(fresh),))
        self._new_files, self._new_enc, self._new_failures = {}, {}, {}


__all__ = ["CACHE_VERSION", "ENCODING_DTYPE", "EmbeddingCache", "default_cache_dir", "encoding_record",
           "user_cache_root"]
