"""On-disk cache of gallery encodings and embeddings (SimDeepDXF.py retrieval).

Every drawing file gets a *content key*: the SHA-1 of its bytes (for an ``.h5`` also
of its GF twin's bytes). Hashing a 2 MB file costs milliseconds; the key is remembered
per path with the file's size and modification time, so an unchanged archive is
only ``stat``-ed. A changed file gets a new key and is encoded and embedded again;
a renamed or copied file keeps its key and is not.

Folder layout (the folder is chosen by ``SimDeepDXF.py``: ``--cache_dir``, else
under the user's cache folder, see :func:`default_cache_dir`)::

    files.json           absolute path -> [size, mtime_ns, twin_size, twin_mtime_ns, key]
    encodings.npz        per key: type_counts [12], raw GF features [10,11] and adjacency
                         [10,10] (has_gf), layout counts [12,8,8] (uint16, clipped at
                         65535), DXF source path: enough for every floor
    failures.json        key -> why the file could not be used (not retried until it changes)
    emb_<model>.npz      per key: the embedding of one model identity (checkpoint hash,
                         embedding kind, encoding format); ``identity`` stored inside

Everything is written atomically (``dataset.files.atomic_write``); a corrupt or
foreign cache file is ignored (and rebuilt), never fatal. ``EmbeddingCache(None)`` is
an in-memory cache: same interface, nothing read or written (``--no-cache``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from dataset.dxf_process_DeepDXF import N_TYPES
from dataset.dxf_process_GF import GF_CLASSES
from dataset.files import atomic_write, atomic_write_text
from utils.embedders import H5_SUFFIXES, DrawingEncoding, gf_twin_path

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: layout counts in encodings.npz
_C = len(GF_CLASSES)
APP_NAME = "dxf-similarity"


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


def _sha1_files(paths: Iterable[Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(b"\0file\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


class _Table:
    """Rows of arrays addressed by content key: what is on disk plus what was added."""

    def __init__(self, keys: list[str], arrays: dict[str, np.ndarray]):
        self.keys = keys
        self.arrays = arrays
        self.index = {k: i for i, k in enumerate(keys)}
        self.new_keys: list[str] = []
        self.new_rows: dict[str, list[np.ndarray]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def add(self, key: str, **values: np.ndarray) -> None:
        if key in self.index:
            return
        self.index[key] = len(self.keys) + len(self.new_keys)
        self.new_keys.append(key)
        for name, v in values.items():
            self.new_rows.setdefault(name, []).append(np.asarray(v))

    def materialize(self) -> None:
        """Fold the added rows into the arrays (one concatenation)."""
        if not self.new_keys:
            return
        for name, rows in self.new_rows.items():
            new = np.stack(rows)
            old = self.arrays.get(name)
            self.arrays[name] = new if old is None or len(old) == 0 else np.concatenate([old, new.astype(old.dtype)])
        self.keys = self.keys + self.new_keys
        self.new_keys, self.new_rows = [], {}

    def take(self, name: str, keys: list[str]) -> np.ndarray:
        self.materialize()
        return self.arrays[name][[self.index[k] for k in keys]]

    @property
    def dirty(self) -> bool:
        return bool(self.new_keys)

    def keep_only(self, keep: set[str]) -> bool:
        """Drop rows whose key is not in ``keep``; True when anything was dropped."""
        self.materialize()
        rows = [i for i, k in enumerate(self.keys) if k in keep]
        if len(rows) == len(self.keys):
            return False
        self.keys = [self.keys[i] for i in rows]
        self.arrays = {n: a[rows] for n, a in self.arrays.items()}
        self.index = {k: i for i, k in enumerate(self.keys)}
        return True


class EmbeddingCache:
    """Content keys, encodings and embeddings of gallery files, kept in ``folder``.

    Args:
        folder: the cache folder (created on the first save); None: keep everything in
            memory for this run only.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self._files: dict[str, list] = self._read_json("files.json")
        self._failures: dict[str, str] = self._read_json("failures.json")
        self._files_dirty = False
        self._failures_dirty = False
        self._encodings = self._read_table("encodings.npz", None)
        self._embeddings: dict[str, _Table] = {}
        self.hashed = 0  # files whose bytes were hashed in this session
        self._broken = False

    # ------------------------------------------------------------------ disk
    def _read_json(self, name: str) -> dict:
        if self.folder is None:
            return {}
        path = self.folder / name
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable cache file %s (%s)", path, err)
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        return dict(data.get("entries", {}))

    def _read_table(self, name: str, identity: Optional[str]) -> _Table:
        path = self.folder / name if self.folder is not None else None
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                ok = int(arrays.pop("version", np.array(-1))) == CACHE_VERSION
                stored_identity = str(arrays.pop("identity", np.array("")))
                if ok and (identity is None or stored_identity == identity):
                    keys = [str(k) for k in arrays.pop("keys")]
                    return _Table(keys, arrays)
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable cache file %s (%s)", path, err)
        return _Table([], {})

    @staticmethod
    def _model_file(identity: str) -> str:
        return f"emb_{hashlib.sha1(identity.encode('utf-8')).hexdigest()[:16]}.npz"

    # ------------------------------------------------------------- content keys
    def content_key(self, path: str | Path) -> str:
        """The content key of a gallery file (hashing it only when size/mtime changed)."""
        p = Path(path)
        st = os.stat(p)
        twin_size, twin_mtime = -1, -1
        files = [p]
        if p.suffix.lower() in H5_SUFFIXES:
            twin = gf_twin_path(p)
            if twin.is_file():
                tst = twin.stat()
                twin_size, twin_mtime = tst.st_size, tst.st_mtime_ns
                files.append(twin)
        ident = os.path.abspath(p)  # (resolve() costs a syscall per path component)
        stamp = [st.st_size, st.st_mtime_ns, twin_size, twin_mtime]
        known = self._files.get(ident)
        if known is not None and list(known[:4]) == stamp:
            return str(known[4])
        key = _sha1_files(files)
        self.hashed += 1
        self._files[ident] = stamp + [key]
        self._files_dirty = True
        return key

    # -------------------------------------------------------------- encodings
    def has_encoding(self, key: str) -> bool:
        return key in self._encodings

    def put_encoding(self, key: str, enc: DrawingEncoding) -> None:
        """Remember what the floors need of one drawing."""
        self._encodings.add(
            key,
            type_counts=np.asarray(enc.type_counts, dtype=np.int64).reshape(N_TYPES),
            gf_features=(enc.gf_features if enc.has_gf else np.zeros((_C, _C + 1))).astype(np.float32),
            gf_adjacency=(enc.gf_adjacency if enc.has_gf else np.zeros((_C, _C))).astype(np.float32),
            has_gf=np.bool_(enc.has_gf),
            layout=np.minimum(np.asarray(enc.layout), np.iinfo(np.uint16).max).astype(np.uint16),
            source=np.str_(enc.source or ""),
        )

    def encodings(self, keys: list[str]) -> dict[str, np.ndarray]:
        """``type_counts [n,12]``, ``gf_features [n,10,11]``, ``gf_adjacency [n,10,10]``,
        ``has_gf [n]``, ``layout [n,12,8,8]``, ``source [n]`` for keys that :meth:`has_encoding`."""
        return {name: self._encodings.take(name, keys)
                for name in ("type_counts", "gf_features", "gf_adjacency", "has_gf", "layout", "source")}

    # ---------------------------------------------------------------- failures
    def failure(self, key: str) -> Optional[str]:
        return self._failures.get(key)

    def put_failure(self, key: str, reason: str) -> None:
        self._failures[key] = reason
        self._failures_dirty = True

    # -------------------------------------------------------------- embeddings
    def _model_table(self, identity: str) -> _Table:
        if identity not in self._embeddings:
            self._embeddings[identity] = self._read_table(self._model_file(identity), identity)
        return self._embeddings[identity]

    def has_embedding(self, identity: str, key: str) -> bool:
        return key in self._model_table(identity)

    def put_embeddings(self, identity: str, keys: list[str], emb: np.ndarray) -> None:
        """Remember ``emb: [n, D]`` for ``keys`` under a model identity."""
        table = self._model_table(identity)
        for key, row in zip(keys, np.asarray(emb, dtype=np.float32)):
            table.add(key, embeddings=row)

    def embeddings(self, identity: str, keys: list[str]) -> np.ndarray:
        """``float32 [n, D]`` of keys that :meth:`has_embedding`."""
        return self._model_table(identity).take("embeddings", keys)

    # -------------------------------------------------------------------- save
    def save(self) -> None:
        """Write what changed; entries of files that no longer exist or changed are dropped.

        A cache folder that cannot be written gives one warning; the run goes on without it.
        An in-memory cache writes nothing."""
        if self._broken or self.folder is None:
            return
        try:
            self._save()
        except OSError as err:
            self._broken = True
            print(f"warning: cannot write the embedding cache in {self.folder} ({err.strerror or err}): "
                  "going on without it (choose another folder with --cache_dir)", file=sys.stderr)

    def _save(self) -> None:
        if not (self._files_dirty or self._failures_dirty or self._encodings.dirty
                or any(t.dirty for t in self._embeddings.values())):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        gone = [p for p in self._files if not Path(p).exists()]
        for p in gone:
            del self._files[p]
        live = {str(v[4]) for v in self._files.values()}
        enc_changed = self._encodings.dirty  # (keep_only folds the added rows in)
        enc_changed = self._encodings.keep_only(live) or enc_changed
        stale = [k for k in self._failures if k not in live]
        for k in stale:
            del self._failures[k]
        if gone or self._files_dirty:
            self._write_json("files.json", self._files)
        if stale or self._failures_dirty:
            self._write_json("failures.json", self._failures)
        if enc_changed:
            self._write_table("encodings.npz", self._encodings, None)
        for identity, table in self._embeddings.items():
            changed = table.dirty
            if table.keep_only(live) or changed:
                self._write_table(self._model_file(identity), table, identity)
        self._files_dirty = self._failures_dirty = False

    def _write_json(self, name: str, entries: dict) -> None:
        data = json.dumps({"version": CACHE_VERSION, "entries": entries}, ensure_ascii=False)
        atomic_write_text(self.folder / name, data)

    def _write_table(self, name: str, table: _Table, identity: Optional[str]) -> None:
        table.materialize()
        arrays = dict(table.arrays)
        arrays["keys"] = np.array(table.keys, dtype="U40")
        arrays["version"] = np.array(CACHE_VERSION)
        if identity is not None:
            arrays["identity"] = np.array(identity)
        atomic_write(self.folder / name, lambda tmp: np.savez(tmp, **arrays))


__all__ = ["CACHE_VERSION", "EmbeddingCache", "default_cache_dir", "user_cache_root"]
