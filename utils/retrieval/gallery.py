"""A gallery: the drawings of one or more folders, named, encoded, embedded, cached and searched.

:func:`collect_files` finds the drawings and names them with the project's one naming
rule (``dataset.dxf_read.drawing_name``). :func:`build_gallery` encodes what the cache
does not hold yet in worker processes (``dataset.parallel.run_tasks``: a file that
fails, hangs past ``timeout`` or kills its worker is skipped with a reason), reusing
the encodings of a preprocessed folder where it holds the very same file
(:class:`~utils.retrieval.encodings.PreprocessedIndex`), embeds them, and looks every
drawing up in the cache. One process at a time builds a gallery in one cache folder
(a lock; the next one waits and then finds the work done). Ctrl-C stops it and keeps
what was encoded and embedded.

A :class:`Gallery` answers every mode from one place: :meth:`Gallery.final` turns an
embedder's rows into the vectors that are compared (for a query, the groups table, the
export and pair mode alike), and :meth:`Gallery.topk` ranks those vectors (through the
model's :class:`~utils.retrieval.store.EmbeddingStore`, which holds exactly them, when
the embedding needs no gallery statistics; exactly otherwise).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from dataset.console import progress_bar
from dataset.dxf_read import DrawingError, find_drawings
from dataset.parallel import run_tasks
from utils.ranking import Method, topk
from utils.retrieval.cache import EmbeddingCache
from utils.retrieval.embedders import Embedder
from utils.retrieval.encodings import (H5_SUFFIXES, SUPPORTED_SUFFIXES, DrawingEncoding, PreprocessedIndex,
                                       read_encoding)
from utils.retrieval.evaluate import compare_table
from utils.retrieval.store import EmbeddingStore

EMBED_BATCH = 64  # drawings embedded together (the cache is saved after each batch)


class GalleryError(Exception):
    """The gallery cannot be built as asked (a folder that does not exist, ...)."""


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ----------------------------------------------------------------- collect
def collect_files(entries: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """The drawings (.dxf/.h5/.hdf5) under ``entries`` with their names.

    Folders are searched recursively (hidden folders and files skipped); files are
    taken as they are. A ``.dxf`` is named ``drawing_name(path, folder)``; an ``.h5``
    (already named by preprocessing) and a file given directly by its stem. A name seen
    twice gets its gallery folder's name as a prefix (as preprocessing does), then
    ``#2``, ``#3``, ... if it still clashes.

    Raises:
        GalleryError: an entry that is neither a file nor a folder.
    """
    try:
        out, clashes = find_drawings(entries, SUPPORTED_SUFFIXES, stem_named=H5_SUFFIXES)
    except FileNotFoundError as e:
        raise GalleryError(f"gallery folder not found: {e.filename}") from None
    if clashes:
        warn(f"{len(clashes)} drawing names occur more than once in the gallery (e.g. {clashes[0]!r}); "
             "the later ones are prefixed with their gallery folder's name")
    return out


# ----------------------------------------------------------------- gallery
class Gallery:
    """Embedded drawings, read from the cache when asked.

    Attributes:
        names: drawing names ``[n]``; ``paths``: their files; ``keys``: their content keys.
        embedder: the embedding the gallery was built with.
        n_new: drawings encoded or embedded in this run; ``n_reused``: of those, read from
            a preprocessed folder instead of parsed.
        skipped: ``(path, reason)`` of files that could not be used.
        rows: float32 ``[n, D]``, the embedder's rows (:meth:`Embedder.embed`), read from the
            model's store (memory-mapped) or computed from the cached encodings.
        enc: cached encodings (``type_counts [n,12]``, ``gf_features``, ``gf_adjacency``,
            ``has_gf [n]``, ``layout [n,12,8,8]``, ``source [n]``), read on first use.
    """

    def __init__(self, names: list[str], paths: list[Path], embedder: Embedder, cache: Optional[EmbeddingCache],
                 keys: list[str], enc_rows: np.ndarray, *, store: Optional[EmbeddingStore] = None,
                 emb_rows: Optional[np.ndarray] = None, n_new: int = 0, n_reused: int = 0,
                 skipped: Optional[list[tuple[str, str]]] = None) -> None:
        self.names, self.paths, self.keys = list(names), list(paths), list(keys)
        self.embedder, self.n_new, self.n_reused = embedder, n_new, n_reused
        self.skipped = list(skipped or [])
        self._cache, self._enc_rows = cache, np.asarray(enc_rows, dtype=np.int64)
        self._store, self._emb_rows = store, emb_rows
        self._enc: Optional[dict[str, np.ndarray]] = None
        self._rows: Optional[np.ndarray] = None
        self._vectors: Optional[np.ndarray] = None
        self._row_index: Optional[tuple[np.ndarray, np.ndarray, int]] = None  # order, rows, distinct

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_arrays(cls, names: list[str], paths: list[Path], embedder: Embedder, rows: np.ndarray,
                    enc: dict[str, np.ndarray], keys: Optional[list[str]] = None) -> "Gallery":
        """A gallery held in memory: embedder ``rows [n, D]`` and stacked encodings ``enc``
        (``utils.retrieval.encodings.stack_encodings``), no cache."""
        g = cls(names, paths, embedder, None, keys or [""] * len(names), np.zeros(len(names), dtype=np.int64))
        g._rows, g._enc = np.asarray(rows, dtype=np.float32), enc
        return g

    def subset(self, keep: np.ndarray, skipped: Sequence[tuple[str, str]] = ()) -> "Gallery":
        """The drawings at indices ``keep`` (others dropped, with ``skipped`` reasons added)."""
        keep = np.asarray(keep, dtype=np.int64)
        return Gallery([self.names[j] for j in keep], [self.paths[j] for j in keep], self.embedder, self._cache,
                       [self.keys[j] for j in keep], self._enc_rows[keep], store=self._store,
                       emb_rows=None if self._emb_rows is None else self._emb_rows[keep], n_new=self.n_new,
                       n_reused=self.n_reused, skipped=self.skipped + list(skipped))

    @property
    def enc(self) -> dict[str, np.ndarray]:
        if self._enc is None:
            self._enc = self._cache.encodings_at(self._enc_rows) if len(self.names) else {}
        return self._enc

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            if not len(self.names):
                self._rows = np.zeros((0, 0), dtype=np.float32)
            elif self._store is not None:
                self._rows = self._store.vectors(self._emb_rows)
            else:
                self._rows = np.asarray(self.embedder.from_arrays(self.enc), dtype=np.float32)
        return self._rows

    def final(self, rows: np.ndarray) -> np.ndarray:
        """The compared vectors of embedder ``rows: [m, D]`` (a query, pair mode's two
        drawings, or the gallery itself): ``Embedder.finalize`` with this gallery as the
        reference set. The one function behind every mode."""
        return self.embedder.finalize(rows, None if self.embedder.row_wise else self.rows)

    @property
    def vectors(self) -> np.ndarray:
        """float32 ``[n, D]``: :meth:`final` of the gallery's own rows (what ``--export`` writes)."""
        if self._vectors is None:
            self._vectors = self.final(self.rows) if len(self.names) else np.zeros((0, 0), np.float32)
        return self._vectors

    def source(self, i: int) -> Optional[str]:
        """The DXF source of drawing ``i`` (one cache lookup, not the whole gallery)."""
        if self._enc is None and self._cache is not None:
            src = str(self._cache.encodings_at(self._enc_rows[i:i + 1])["source"][0])
        else:
            src = str(self.enc["source"][i])
        return resolve_source(src, self.paths[i])

    def members_like(self, path: str | Path) -> set[int]:
        """Indices of the gallery drawings with the content of the file at ``path`` (the
        file itself, or a copy of it anywhere): a query leaves them out."""
        if self._cache is None:
            return set()
        try:
            key = self._cache.content_key(path)
        except OSError:
            return set()
        return {i for i, k in enumerate(self.keys) if k == key}

    def topk(self, query: np.ndarray, k: int, method: Method = "cosine", exclude: Iterable[int] = ()
             ) -> list[tuple[int, float]]:
        """The ``k`` drawings whose :attr:`vectors` are most similar to ``query: [D]`` (a
        :meth:`final` vector), best first, as ``(index, score)`` (euclidean scores are minus
        the distance), leaving out the indices in ``exclude``.

        When the rows are the vectors (a ``row_wise`` embedder) and the model's store holds
        them, cosine search goes through the store (exact below its ``exact_below`` rows,
        approximate with exact re-scoring above), asking for more rows while some belong to
        no drawing of this gallery (other galleries sharing the cache); otherwise the exact
        top-k over :attr:`vectors`.
        """
        exclude = set(exclude)
        want = min(k + len(exclude), len(self.names))
        if want <= 0:
            return []
        if self._store is not None and self.embedder.row_wise and method == "cosine":
            hits = self._store_topk(np.asarray(query, np.float32), k, want, exclude)
            if hits is not None:
                return hits
        idx, scores = topk(np.asarray(query), self.vectors, want, method)
        return [(int(i), float(s)) for i, s in zip(idx, scores) if int(i) not in exclude][:k]

    def _store_topk(self, query: np.ndarray, k: int, want: int, exclude: set[int]
                    ) -> Optional[list[tuple[int, float]]]:
        """:meth:`topk` through the store; None when most store rows belong to other galleries."""
        if self._row_index is None:  # gallery indices sorted by store row
            order = np.argsort(self._emb_rows, kind="stable")
            rows = self._emb_rows[order]
            self._row_index = (order, rows, int(len(rows) and 1 + np.count_nonzero(np.diff(rows))))
        order, sorted_rows, distinct = self._row_index
        if 2 * distinct < len(self._store):
            return None
        ask = want
        while True:
            scores, rows = self._store.search(query[None], ask)
            lo = np.searchsorted(sorted_rows, rows[0], "left")
            hi = np.searchsorted(sorted_rows, rows[0], "right")
            hits = [(int(i), float(s)) for a, b, s in zip(lo, hi, scores[0]) for i in order[a:b]
                    if int(i) not in exclude]
            if len(hits) >= k or ask >= len(self._store):
                return hits[:k]
            ask = min(len(self._store), 2 * ask + k)

    def query(self, enc: DrawingEncoding, k: int, method: Method = "cosine", exclude: Iterable[int] = ()
              ) -> list[tuple[int, float]]:
        """The ``k`` gallery drawings most similar to the drawing ``enc``, as ``(index, score)``."""
        return self.topk(self.final(self.embedder.embed([enc]))[0], k, method, exclude)


# ------------------------------------------------------------------- build
def _encode_task(task: tuple[int, str, int, Optional[Path]]) -> tuple[Optional[DrawingEncoding], str, bool]:
    """Worker: ``(index, path, max_len, preprocessed .h5 or None)`` -> ``(encoding, "", reused)``
    or ``(None, why, False)``."""
    _i, path, max_len, encoded = task
    try:
        enc, reused = read_encoding(path, max_len, encoded)
    except DrawingError as err:
        return None, err.reason, False
    return enc, "", reused


@contextmanager
def gallery_lock(cache: EmbeddingCache) -> Iterator[None]:
    """Hold the cache folder's lock while a gallery is built: a second process building a
    gallery in the same cache waits (and says so), then finds the work done."""
    if not cache.persistent:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no advisory locks here (Windows): the cache's sqlite keeps it consistent
        yield
        return
    fh = open(cache.folder / "build.lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is embedding drawings into the cache {cache.folder} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # releases the lock


def _known(keys: list[Optional[str]], found: dict[str, tuple[Optional[int], Optional[str]]]) -> list[bool]:
    return [k is not None and found.get(k, (None, None))[0] is not None for k in keys]


def _drop_failures(files: Sequence[tuple[Path, str]], keys: list[Optional[str]],
                   found: dict[str, tuple[Optional[int], Optional[str]]], skipped: list[tuple[str, str]]) -> None:
    """Set ``keys[i]`` to None (and say why in ``skipped``) where ``found`` remembers a failure."""
    for i, k in enumerate(keys):
        if k is not None and found.get(k, (None, None))[1] is not None:
            skipped.append((str(files[i][0]), found[k][1]))
            keys[i] = None


def _content_keys(files: Sequence[tuple[Path, str]], cache: EmbeddingCache,
                  skipped: list[tuple[str, str]]) -> list[Optional[str]]:
    """The cache key of every file (None: skipped, with why appended to ``skipped``)."""
    def on_error(path: Path, err: OSError) -> None:
        why = "file not found" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror or err})"
        skipped.append((str(path), why))

    return cache.content_keys([p for p, _ in files], on_error)


def _to_do(keys: list[Optional[str]], has_enc: list[bool], has_emb: list[bool]) -> list[int]:
    """Indices of files to encode (and embed), one per content key."""
    todo, seen = [], set()
    for i, k in enumerate(keys):
        if k is not None and k not in seen and not (has_enc[i] and has_emb[i]):
            todo.append(i)
            seen.add(k)
    return todo


def build_gallery(files: Sequence[tuple[Path, str]], embedder: Embedder, cache: EmbeddingCache,
                  workers: int = 1, max_len: int = 50_000, quiet: bool = False, timeout: int = 300,
                  progress_bar: Optional[bool] = None, forget_missing: bool = True,
                  preprocessed: Optional[PreprocessedIndex] = None,
                  on_progress: Optional[Callable[[int, int], None]] = None) -> Gallery:
    """Encode and embed the drawings that the cache does not hold yet; look up all.

    An unchanged file is only ``stat``-ed; nothing is read for it but its rows in the
    cache's indexes (its encoding and embedding stay on disk until :class:`Gallery` needs them).

    Args:
        files: ``(path, name)`` pairs (:func:`collect_files`).
        workers: processes parsing DXF files (0: all cores, at most 8).
        timeout: seconds one file may take before it is skipped (tried again next run).
        quiet: no warnings about skipped files.
        progress_bar: show a progress bar (default: when not ``quiet``).
        forget_missing: drop the cache's bookkeeping of files that no longer exist (off for
            a sample of a folder, e.g. pair mode's reference set, where it would stat the rest).
        preprocessed: encodings written by ``dataset/dxf_process.py`` to reuse for the same files.
        on_progress: called as ``on_progress(done, total)`` with the drawings encoded so far
            of those the cache did not hold (``(0, 0)`` when it held all); an exception it
            raises stops the build (the cache keeps what was embedded before).
    Returns:
        the :class:`Gallery`; files that cannot be used are skipped with a warning naming them and why.
    Raises:
        KeyboardInterrupt: after saving what was done (Ctrl-C).
    """
    with gallery_lock(cache):
        skipped: list[tuple[str, str]] = []
        keys = _content_keys(files, cache, skipped)
        enc_found, emb_found = _lookup(files, keys, embedder, cache, skipped)
        todo = _to_do(keys, _known(keys, enc_found),
                      _known(keys, emb_found) if embedder.learned else [True] * len(keys))
        counts = {"new": 0, "reused": 0}
        if on_progress is not None:
            on_progress(0, len(todo))
        if todo:
            failed: dict[str, str] = {}
            try:
                counts = _encode_and_embed(files, keys, todo, embedder, cache, workers, max_len, timeout, failed,
                                           progress_bar if progress_bar is not None else not quiet, preprocessed,
                                           on_progress)
            finally:
                for i, k in enumerate(keys):  # every copy of a failed drawing
                    if k in failed:
                        skipped.append((str(files[i][0]), failed[k]))
                        keys[i] = None
            enc_found, emb_found = _lookup(files, keys, embedder, cache, skipped)
        cache.save()
        if forget_missing:
            cache.forget_missing([p for p, _ in files])
        gallery = _assemble(files, keys, embedder, cache, enc_found, emb_found, skipped, counts)
    if not quiet:
        for path, reason in gallery.skipped:
            warn(f"skipped {path}: {reason}")
    return gallery


def _lookup(files: Sequence[tuple[Path, str]], keys: list[Optional[str]], embedder: Embedder,
            cache: EmbeddingCache, skipped: list[tuple[str, str]]
            ) -> tuple[dict[str, tuple[Optional[int], Optional[str]]], dict[str, tuple[Optional[int], Optional[str]]]]:
    """The cache's encoding and embedding rows of ``keys``; keys remembered as failures are
    dropped (set to None, the reason in ``skipped``)."""
    live = [k for k in keys if k is not None]
    enc_found = cache.encoding_rows(live)
    _drop_failures(files, keys, enc_found, skipped)
    emb_found = cache.embedding_rows(embedder.identity, [k for k in keys if k is not None]) if embedder.learned else {}
    _drop_failures(files, keys, emb_found, skipped)
    return enc_found, emb_found


def _assemble(files: Sequence[tuple[Path, str]], keys: list[Optional[str]], embedder: Embedder,
              cache: EmbeddingCache, enc_found: dict, emb_found: dict, skipped: list[tuple[str, str]],
              counts: dict[str, int]) -> Gallery:
    """The :class:`Gallery` of the files whose encoding (and, for a learned embedding, its
    rows in the model's store) the cache holds."""
    kept = [i for i, ok in enumerate(_known(keys, enc_found)) if ok]
    store, emb_rows = None, None
    if embedder.learned:
        kept = [i for i in kept if emb_found.get(keys[i], (None, None))[0] is not None]
        store = cache.model_store(embedder.identity)
        emb_rows = np.array([emb_found[keys[i]][0] for i in kept], dtype=np.int64)
        if store is not None and len(store) >= store.exact_below:
            store.ann_index()  # built or extended once per build, saved with it
            store.save_index()
    gallery = Gallery([files[i][1] for i in kept], [files[i][0] for i in kept], embedder, cache,
                      [keys[i] for i in kept], np.array([enc_found[keys[i]][0] for i in kept], dtype=np.int64),
                      store=store, emb_rows=emb_rows, n_new=counts["new"], n_reused=counts["reused"], skipped=skipped)
    if kept and embedder.needs_gf and not embedder.learned:  # the floor needs the GF matrices
        has = gallery.enc["has_gf"].astype(bool)
        if not has.all():
            why = "no GF twin: the features embedding needs the GF matrices"
            gallery = gallery.subset(np.flatnonzero(has), [(str(gallery.paths[j]), why) for j in np.flatnonzero(~has)])
    return gallery


def _encode_and_embed(files: Sequence[tuple[Path, str]], keys: list[Optional[str]], todo: list[int],
                      embedder: Embedder, cache: EmbeddingCache, workers: int, max_len: int, timeout: int,
                      failed: dict[str, str], show_progress: bool, preprocessed: Optional[PreprocessedIndex],
                      on_progress: Optional[Callable[[int, int], None]] = None) -> dict[str, int]:
    """Encode ``files[todo]`` in worker processes, embed them in batches, and put both in the
    cache (saved after every batch); the content key of a file that fails gets its reason in
    ``failed``. Ctrl-C embeds and keeps what was encoded, then re-raises.

    Returns:
        ``{"new": drawings done, "reused": of those, read from a preprocessed folder}``.
    """
    n_dxf = sum(1 for i in todo if files[i][0].suffix.lower() == ".dxf")
    n_workers = workers if workers > 0 else min(os.cpu_count() or 1, 8)
    n_workers = max(1, min(n_workers, n_dxf))
    progress = progress_bar(total=len(todo), desc="embedding gallery", unit="drawing", leave=False) \
        if show_progress and len(todo) > 1 else None
    batch = _EmbedBatch(embedder, cache, keys, files)
    counts = {"new": 0, "reused": 0}
    n_done = 0
    tasks = [(i, str(files[i][0]), max_len, preprocessed.lookup(files[i][0]) if preprocessed else None)
             for i in todo]
    try:
        for res in run_tasks(_encode_task, tasks, workers=n_workers, timeout=timeout):
            i = res.task[0]
            enc, reason, reused = res.value if res.value is not None else (None, "", False)
            if progress is not None:
                progress.update(1)
            n_done += 1
            if on_progress is not None:
                on_progress(n_done, len(todo))
            if enc is None:
                if res.timed_out:  # not remembered: tried again next time
                    reason = f"timed out after {timeout} s (raise --timeout)"
                elif res.error is not None:  # the worker died or failed unexpectedly: tried again
                    reason = res.error
                else:
                    cache.put_failure(keys[i], reason)
                failed[keys[i]] = reason
                continue
            counts["reused"] += int(reused)
            batch.add(i, enc, failed)
            if len(batch) >= EMBED_BATCH:
                counts["new"] += batch.flush()
        counts["new"] += batch.flush()
        batch.remember_unusable()
    except KeyboardInterrupt:
        counts["new"] += batch.flush()  # what was encoded is embedded and kept (a few seconds at most)
        print(f"\ninterrupted: the {counts['new']} drawings embedded in this run are kept in the cache; "
              "run the command again to go on", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
        cache.save()
    return counts


class _EmbedBatch:
    """Encoded drawings waiting to be embedded and written to the cache together."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, keys: list[Optional[str]],
                 files: Sequence[tuple[Path, str]]) -> None:
        self.embedder, self.cache, self.keys, self.files = embedder, cache, keys, files
        self.ready: list[tuple[int, DrawingEncoding]] = []
        self.unusable: list[tuple[int, str]] = []  # encoded, but this embedding cannot use them

    def __len__(self) -> int:
        return len(self.ready)

    def add(self, i: int, enc: DrawingEncoding, failed: dict[str, str]) -> None:
        self.cache.put_encoding(self.keys[i], enc)
        try:
            self.embedder.check(enc)
        except DrawingError as err:
            failed[self.keys[i]] = err.reason
            self.unusable.append((i, err.reason))
            return
        self.ready.append((i, enc))

    def flush(self) -> int:
        """Embed what is ready (a learned embedding) and save; returns how many drawings."""
        done = len(self.ready)
        if self.embedder.learned and self.ready:
            emb = self.embedder.embed([e for _, e in self.ready])
            self.cache.put_embeddings(self.embedder.identity, [self.keys[i] for i, _ in self.ready], emb,
                                      [str(self.files[i][0]) for i, _ in self.ready])
        self.ready.clear()
        self.cache.save()
        return done

    def remember_unusable(self) -> None:
        """Drawings this model cannot embed, remembered per model until the file changes."""
        store = self.cache.model_store(self.embedder.identity) if self.embedder.learned else None
        if self.unusable and store is not None:
            self.cache.put_embedding_failures(self.embedder.identity, [self.keys[i] for i, _ in self.unusable],
                                              [r for _, r in self.unusable], store.dim,
                                              [str(self.files[i][0]) for i, _ in self.unusable])


# ---------------------------------------------------------------- helpers
def resolve_source(source: str, path: Path) -> Optional[str]:
    """The DXF source of a gallery entry (an ``.h5``'s ``source`` may be relative to
    where preprocessing ran)."""
    if not source:
        return None
    cand = Path(source)
    if cand.is_file() or cand.is_absolute():
        return str(cand)
    for base in (path.parent, path.parent.parent, path.parent.parent.parent):
        if (base / source).is_file():
            return str(base / source)
    return source


def training_data_folder(config: Optional[dict], model_path: Optional[str | Path]) -> Optional[Path]:
    """The preprocessed drawings a checkpoint was trained on, when they are still there:
    ``<data_dir>`` of its config (holding ``DeepDXF/*.h5``), relative to the working
    folder or to the project folder above ``checkpoints/<run>/``; None when unknown or gone."""
    data_dir = (config or {}).get("data_dir")
    if not data_dir:
        return None
    bases = [Path(".")]
    if model_path is not None:
        bases += list(Path(model_path).resolve().parents[:3])
    for base in bases:
        cand = base / data_dir
        if (cand / "DeepDXF").is_dir() and any((cand / "DeepDXF").glob("*.h5")):
            return cand
    return None


def spread(files: Sequence[tuple[Path, str]], at_most: int) -> list[tuple[Path, str]]:
    """At most ``at_most`` of ``files``, evenly spaced in name order (deterministic)."""
    files = sorted(files, key=lambda f: f[1])
    if at_most <= 0 or len(files) <= at_most:
        return list(files)
    pick = np.linspace(0, len(files) - 1, at_most).round().astype(int)
    return [files[i] for i in np.unique(pick)]


def export_gallery(path: str | Path, gallery: Gallery) -> Path:
    """Write ``names``, ``embeddings`` (float32 ``[n, D]``: :attr:`Gallery.vectors`, the
    compared vectors) and ``paths`` to the ``.npz`` at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:
        np.savez(fh, names=np.array(gallery.names), embeddings=np.asarray(gallery.vectors, dtype=np.float32),
                 paths=np.array([str(p) for p in gallery.paths]))
    return out


def evaluate_gallery(gallery: Gallery, models: Sequence[tuple[str, Optional[np.ndarray]]], groups: list[list[str]],
                     method: Method, n_boot: int, seed: int) -> str:
    """The --groups table: the model(s) ``(label, [n, D] or None for n/a)`` beside every floor.

    Raises:
        GalleryError: no group has two members in the gallery.
    """
    try:
        text, rows = compare_table(models, {"names": gallery.names, **gallery.enc}, groups, method, n_boot, seed)
    except ValueError as err:
        raise GalleryError(str(err)) from err
    missing = next((m["missing"] for _, m in rows if m is not None), [])
    if missing:
        warn(f"{len(missing)} group members are not in the gallery: " + ", ".join(missing[:10])
             + (" ..." if len(missing) > 10 else ""))
    return text


def pick_reference(reference: str, gallery: Sequence[str], config: Optional[dict], model_path: Optional[str],
                   sample_folder: str) -> tuple[Optional[str], str]:
    """Pair mode's reference set and how it was chosen: an explicit folder (``reference``;
    ``none``: none), else the gallery, else the model's training data, else the sample corpus.

    Returns:
        ``(folder or None, why)``.
    """
    if reference == "none":
        return None, "--reference none"
    if reference != "auto":
        return reference, "--reference"
    if gallery:
        return gallery[0], "the gallery"
    trained = training_data_folder(config, model_path)
    if trained is not None:
        return str(trained / "DeepDXF"), "the model's training data"
    if Path(sample_folder).is_dir() and any(Path(sample_folder).glob("*.dxf")):
        return sample_folder, "the bundled sample corpus"
    return None, f"no --reference, no training data of the model found and no sample corpus in {sample_folder}"


__all__ = ["GalleryError", "Gallery", "collect_files", "build_gallery", "gallery_lock", "resolve_source",
           "EMBED_BATCH", "training_data_folder", "spread", "pick_reference", "export_gallery", "evaluate_gallery"]
