"""A gallery: the drawings of one or more folders, named, encoded, embedded and cached.

:func:`collect_files` finds the drawings and names them with the project's one naming
rule (``dataset.dxf_read.drawing_name``: the path below the gallery folder without its
extension, ``/`` replaced by ``__``; a preprocessed ``.h5`` keeps the name
preprocessing gave it, its file stem). :func:`build_gallery` encodes what the cache
does not hold yet in worker processes (``dataset.parallel.run_tasks``: a file that
fails, hangs past ``timeout`` or kills its worker is skipped with a reason), embeds
it, and looks every drawing up in the cache (its rows, not its data). Ctrl-C stops it;
what was done is kept in the cache. A :class:`Gallery` reads embeddings and encodings
only when asked; a top-k query of a learned embedding searches the model's
:class:`~utils.embedding_store.EmbeddingStore` instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from dataset.dxf_read import DrawingError, find_drawings
from dataset.console import progress_bar
from dataset.parallel import run_tasks
from utils.embedders import (
    FLOOR_KINDS,
    H5_SUFFIXES,
    SUPPORTED_SUFFIXES,
    DrawingEncoding,
    Embedder,
    append_features,
    floor_raw,
    load_drawing,
    raw_features,
)
from utils.embedding_cache import EmbeddingCache
from utils.embedding_store import EmbeddingStore
from utils.retrieval import compare_table
from utils.search import search

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


# ------------------------------------------------------------------- build
class Gallery:
    """Embedded drawings, read from the cache when asked.

    Attributes:
        names: drawing names ``[n]``; ``paths``: their files; ``keys``: their content keys.
        n_new: drawings encoded or embedded in this run.
        skipped: ``(path, reason)`` of files that could not be used.
        emb: float32 ``[n, D]``, before ``Embedder.finalize`` (raw for the non-learned kinds);
            read from the model's store (memory-mapped) on first use.
        enc: cached encodings (``type_counts [n,12]``, ``gf_features``, ``gf_adjacency``,
            ``has_gf [n]``, ``layout [n,12,8,8]``, ``source [n]``), read on first use.

    A top-k query (:meth:`topk`) of a learned embedding reads neither: it searches the
    model's :class:`~utils.embedding_store.EmbeddingStore` and maps its rows to drawings.
    """

    def __init__(self, names: list[str], paths: list[Path], emb: Optional[np.ndarray] = None,
                 enc: Optional[dict[str, np.ndarray]] = None, n_new: int = 0,
                 skipped: Optional[list[tuple[str, str]]] = None, *, keys: Optional[list[str]] = None,
                 cache: Optional[EmbeddingCache] = None, enc_rows: Optional[np.ndarray] = None,
                 store: Optional[EmbeddingStore] = None, emb_rows: Optional[np.ndarray] = None,
                 floor_kind: Optional[str] = None) -> None:
        self.names, self.paths, self.keys = list(names), list(paths), keys
        self.n_new, self.skipped = n_new, list(skipped or [])
        self._emb, self._enc = emb, enc
        self._cache, self._enc_rows = cache, enc_rows
        self._store, self._emb_rows = store, emb_rows
        self._floor_kind = floor_kind
        self._row_index: Optional[tuple[np.ndarray, np.ndarray, int]] = None  # order, rows, distinct

    def __len__(self) -> int:
        return len(self.names)

    @property
    def enc(self) -> dict[str, np.ndarray]:
        if self._enc is None:
            self._enc = self._cache.encodings_at(self._enc_rows) if len(self.names) else {}
        return self._enc

    @property
    def emb(self) -> np.ndarray:
        if self._emb is None:
            if not len(self.names):
                self._emb = np.zeros((0, 0), dtype=np.float32)
            elif self._store is not None:
                self._emb = self._store.vectors(self._emb_rows)
            else:
                self._emb = np.asarray(floor_raw(self._floor_kind, self.enc), dtype=np.float32)
        return self._emb

    def source(self, i: int) -> Optional[str]:
        """The DXF source of drawing ``i`` (one cache lookup, not the whole gallery)."""
        if self._enc is None and self._cache is not None:
            src = str(self._cache.encodings_at(self._enc_rows[i:i + 1])["source"][0])
        else:
            src = str(self.enc["source"][i])
        return resolve_source(src, self.paths[i])

    def topk(self, query: np.ndarray, k: int, method: str = "cosine", exclude: Iterable[int] = (),
             embeddings: Optional[np.ndarray] = None) -> list[tuple[int, float]]:
        """The ``k`` drawings most similar to ``query: [D]``, best first, as ``(index, score)``
        (euclidean scores are minus the distance), leaving out the indices in ``exclude``.

        Cosine similarity of a learned embedding (``embeddings`` None) searches the model's
        store (exact below its ``exact_below`` rows, approximate above), asking for more
        rows while some belong to no drawing of this gallery (content that changed, other
        galleries sharing the cache). Otherwise: exact search over ``embeddings`` (default
        :attr:`emb`).
        """
        exclude = set(exclude)
        want = min(k + len(exclude), len(self.names))
        if want <= 0:
            return []
        store = self._store if embeddings is None and method == "cosine" else None
        if store is not None and self._row_index is None:  # gallery indices sorted by store row
            order = np.argsort(self._emb_rows, kind="stable")
            rows = self._emb_rows[order]
            self._row_index = (order, rows, int(len(rows) and 1 + np.count_nonzero(np.diff(rows))))
        if store is not None and 2 * self._row_index[2] >= len(store):  # most store rows are this gallery's
            order, sorted_rows, _ = self._row_index
            ask = want
            while True:
                scores, rows = store.search(np.asarray(query, np.float32)[None], ask)
                lo = np.searchsorted(sorted_rows, rows[0], "left")
                hi = np.searchsorted(sorted_rows, rows[0], "right")
                hits = [(int(i), float(s)) for a, b, s in zip(lo, hi, scores[0]) for i in order[a:b]
                        if int(i) not in exclude]
                if len(hits) >= k or ask >= len(store):
                    return hits[:k]
                ask = min(len(store), 2 * ask + k)
        g = embeddings if embeddings is not None else self.emb
        idx, scores = search(np.asarray(query), g, want, method)
        return [(int(i), float(s)) for i, s in zip(idx, scores) if int(i) not in exclude][:k]


def _encode_task(task: tuple[int, str, int]) -> tuple[Optional[DrawingEncoding], str]:
    """Worker: ``(index, path, max_len)`` -> ``(encoding, "")`` or ``(None, why)``."""
    _i, path, max_len = task
    try:
        return load_drawing(path, max_len), ""
    except DrawingError as err:
        return None, err.reason


def _content_keys(files: Sequence[tuple[Path, str]], cache: EmbeddingCache,
                  skipped: list[tuple[str, str]]) -> list[Optional[str]]:
    """The cache key of every file (None: skipped, with why appended to ``skipped``)."""
    def on_error(path: Path, err: OSError) -> None:
        why = "file not found" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror or err})"
        skipped.append((str(path), why))

    return cache.content_keys([p for p, _ in files], on_error)


def _drop_failures(files: Sequence[tuple[Path, str]], keys: list[Optional[str]],
                   found: dict[str, tuple[Optional[int], Optional[str]]], skipped: list[tuple[str, str]]) -> None:
    """Set ``keys[i]`` to None (and say why in ``skipped``) where ``found`` remembers a failure."""
    for i, k in enumerate(keys):
        if k is not None and found.get(k, (None, None))[1] is not None:
            skipped.append((str(files[i][0]), found[k][1]))
            keys[i] = None


def build_gallery(files: Sequence[tuple[Path, str]], embedder: Embedder, cache: EmbeddingCache,
                  workers: int = 1, max_len: int = 50_000, quiet: bool = False, timeout: int = 300,
                  progress_bar: Optional[bool] = None, forget_missing: bool = True) -> Gallery:
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
    Returns:
        the :class:`Gallery`; files that cannot be used are skipped with a warning
        naming them and why.
    Raises:
        KeyboardInterrupt: after saving what was done (Ctrl-C).
    """
    learned = embedder.kind not in FLOOR_KINDS
    skipped: list[tuple[str, str]] = []
    keys = _content_keys(files, cache, skipped)
    live = [k for k in keys if k is not None]
    enc_found = cache.encoding_rows(live)
    _drop_failures(files, keys, enc_found, skipped)
    emb_found = cache.embedding_rows(embedder.identity, live) if learned else {}
    _drop_failures(files, keys, emb_found, skipped)
    todo, seen = [], set()
    for i, k in enumerate(keys):
        if k is not None and k not in seen and (enc_found.get(k, (None, None))[0] is None
                                                or (learned and emb_found.get(k, (None, None))[0] is None)):
            todo.append(i)
            seen.add(k)
    n_new, failed = 0, {}
    if todo:
        try:
            n_new = _encode_and_embed(files, keys, todo, embedder, cache, workers, max_len, timeout, failed,
                                      progress_bar if progress_bar is not None else not quiet)
        finally:
            for i, k in enumerate(keys):  # every copy of a failed drawing
                if k in failed:
                    skipped.append((str(files[i][0]), failed[k]))
                    keys[i] = None
    cache.save()
    if forget_missing:
        cache.forget_missing([p for p, _ in files])
    if todo:  # look up the rows of what was just added
        enc_found = cache.encoding_rows([k for k in keys if k is not None])
    kept = [i for i, k in enumerate(keys) if k is not None and enc_found.get(k, (None, None))[0] is not None]
    kept_keys = [keys[i] for i in kept]
    store, emb_rows = None, None
    if learned:
        store = cache.model_store(embedder.identity)
        if todo:
            emb_found = cache.embedding_rows(embedder.identity, kept_keys)
        ok = [j for j, k in enumerate(kept_keys) if emb_found.get(k, (None, None))[0] is not None]
        kept, kept_keys = [kept[j] for j in ok], [kept_keys[j] for j in ok]
        emb_rows = np.array([emb_found[k][0] for k in kept_keys], dtype=np.int64)
        if store is not None and len(store) >= store.exact_below:
            store.ann_index()  # built or extended once per build, saved with it
            store.save_index()
    enc_rows = np.array([enc_found[k][0] for k in kept_keys], dtype=np.int64)
    gallery = Gallery([files[i][1] for i in kept], [files[i][0] for i in kept], n_new=n_new, skipped=skipped,
                      keys=kept_keys, cache=cache, enc_rows=enc_rows, store=store, emb_rows=emb_rows,
                      floor_kind=None if learned else embedder.kind)
    if kept and embedder.needs_gf and not learned:  # the features need the GF matrices
        has = gallery.enc["has_gf"].astype(bool)
        for j in np.flatnonzero(~has):
            skipped.append((str(files[kept[j]][0]), "no GF twin: the features embedding needs the GF matrices"))
        if not has.all():
            sel = np.flatnonzero(has)
            gallery = Gallery([gallery.names[j] for j in sel], [gallery.paths[j] for j in sel], n_new=n_new,
                              skipped=skipped, keys=[kept_keys[j] for j in sel], cache=cache,
                              enc_rows=enc_rows[sel], floor_kind=embedder.kind)
    if not quiet:
        for path, reason in skipped:
            warn(f"skipped {path}: {reason}")
    return gallery


def _encode_and_embed(files: Sequence[tuple[Path, str]], keys: list[Optional[str]], todo: list[int],
                      embedder: Embedder, cache: EmbeddingCache, workers: int, max_len: int, timeout: int,
                      failed: dict[str, str], show_progress: bool) -> int:
    """Encode ``files[todo]`` in worker processes, embed them in batches, and put both in the
    cache (saved after every batch); the content key of a file that fails gets its reason in
    ``failed``. Returns how many drawings were done. Ctrl-C keeps what was done."""
    learned = embedder.kind not in FLOOR_KINDS
    n_dxf = sum(1 for i in todo if files[i][0].suffix.lower() == ".dxf")
    n_workers = workers if workers > 0 else min(os.cpu_count() or 1, 8)
    n_workers = max(1, min(n_workers, n_dxf))
    progress = None
    if show_progress and len(todo) > 1:
        progress = progress_bar(total=len(todo), desc="embedding gallery", unit="drawing", leave=False)
    ready: list[tuple[int, DrawingEncoding]] = []
    n_new = 0

    def flush() -> None:
        nonlocal n_new
        if learned and ready:
            emb = embedder.embed([e for _, e in ready])
            cache.put_embeddings(embedder.identity, [keys[i] for i, _ in ready], emb,
                                 [str(files[i][0]) for i, _ in ready])
        n_new += len(ready)
        ready.clear()
        cache.save()

    tasks = [(i, str(files[i][0]), max_len) for i in todo]
    unusable: list[tuple[int, str]] = []  # encoded, but this model cannot embed them
    try:
        for res in run_tasks(_encode_task, tasks, workers=n_workers, timeout=timeout):
            i = res.task[0]
            enc, reason = res.value if res.value is not None else (None, "")
            if progress is not None:
                progress.update(1)
            if enc is None:
                if res.timed_out:  # not remembered: tried again next time
                    reason = f"timed out after {timeout} s (raise --timeout)"
                elif res.error is not None:  # the worker died or failed unexpectedly: tried again
                    reason = res.error
                else:
                    cache.put_failure(keys[i], reason)
                failed[keys[i]] = reason
                continue
            cache.put_encoding(keys[i], enc)
            try:
                embedder.check(enc)
            except DrawingError as err:
                failed[keys[i]] = err.reason
                unusable.append((i, err.reason))
                continue
            ready.append((i, enc))
            if len(ready) >= EMBED_BATCH:
                flush()
        flush()
        store = cache.model_store(embedder.identity) if learned else None
        if unusable and store is not None:  # remembered per model until the file changes
            cache.put_embedding_failures(embedder.identity, [keys[i] for i, _ in unusable],
                                         [r for _, r in unusable], store.dim, [str(files[i][0]) for i, _ in unusable])
    except KeyboardInterrupt:
        if not learned:
            flush()  # nothing to compute: the encodings are the embedding
        print(f"\ninterrupted: the {n_new} drawings embedded so far are kept in the cache; "
              "run the command again to go on", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
        cache.save()
    return n_new


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
    ``<data_dir>/DeepDXF`` of its config, relative to the working folder or to the
    project folder above ``checkpoints/<run>/``; None when unknown or gone."""
    data_dir = (config or {}).get("data_dir")
    if not data_dir:
        return None
    bases = [Path(".")]
    if model_path is not None:
        bases += list(Path(model_path).resolve().parents[:3])
    for base in bases:
        cand = base / data_dir / "DeepDXF"
        if cand.is_dir() and any(cand.glob("*.h5")):
            return cand
    return None


def spread(files: Sequence[tuple[Path, str]], at_most: int) -> list[tuple[Path, str]]:
    """At most ``at_most`` of ``files``, evenly spaced in name order (deterministic)."""
    files = sorted(files, key=lambda f: f[1])
    if at_most <= 0 or len(files) <= at_most:
        return list(files)
    pick = np.linspace(0, len(files) - 1, at_most).round().astype(int)
    return [files[i] for i in np.unique(pick)]


def gallery_embeddings(gallery: Gallery, embedder: Embedder, appended: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """What the gallery is compared with: ``(embeddings [n, D] after ``Embedder.finalize`` (z-scored
    with the gallery for the non-learned kinds), with the standardized features blocks appended
    when ``appended``; the raw features [n, 222], or None when some drawing lacks GF matrices)``.

    Raises:
        GalleryError: ``appended`` asked for drawings without GF matrices.
    """
    g_raw = floor_raw("features", gallery.enc) if bool(gallery.enc["has_gf"].all()) else None
    g_emb = embedder.finalize(gallery.emb, gallery.emb)
    if appended:
        if g_raw is None:
            raise GalleryError("--append_features needs the GF matrices of every gallery drawing: "
                               f"{int((~gallery.enc['has_gf'].astype(bool)).sum())} .h5 files have no GF twin")
        g_emb = append_features(g_emb, g_raw, g_raw)
    return g_emb, g_raw


def query_topk(gallery: Gallery, embedder: Embedder, enc: DrawingEncoding, k: int, method: str = "cosine",
               appended: bool = False, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
    """The ``k`` gallery drawings most similar to the drawing ``enc``, as ``(index, score)``.

    A learned embedding compared by cosine searches the model's store (no gallery
    embedding or encoding is loaded); the non-learned kinds (z-scored with the gallery),
    ``appended`` features and euclidean distances compare with every gallery row.
    """
    q = embedder.embed([enc])
    if embedder.kind not in FLOOR_KINDS and not appended and method == "cosine":
        return gallery.topk(q[0], k, method, exclude)
    g_emb, g_raw = gallery_embeddings(gallery, embedder, appended)
    q = embedder.finalize(q, gallery.emb)
    if appended:
        q = append_features(q, raw_features([enc]), g_raw)
    return gallery.topk(q[0], k, method, exclude, embeddings=g_emb)


def export_gallery(path: str | Path, gallery: Gallery, g_emb: np.ndarray) -> Path:
    """Write ``names``, ``embeddings`` (float32 ``[n, D]``) and ``paths`` to the ``.npz`` at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:
        np.savez(fh, names=np.array(gallery.names), embeddings=np.asarray(g_emb, dtype=np.float32),
                 paths=np.array([str(p) for p in gallery.paths]))
    return out


def evaluate_gallery(gallery: Gallery, models: Sequence[tuple[str, Optional[np.ndarray]]], groups: list[list[str]],
                     method: str, n_boot: int, seed: int) -> str:
    """The --groups table: the model(s) ``(label, [n, D] or None for n/a)`` beside every floor.

    Metrics score only the query rows (``[q, n]`` similarities, never ``[n, n]``).

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
        return str(trained), "the model's training data"
    if Path(sample_folder).is_dir() and any(Path(sample_folder).glob("*.dxf")):
        return sample_folder, "the bundled sample corpus"
    return None, f"no --reference, no training data of the model found and no sample corpus in {sample_folder}"

__all__ = ["GalleryError", "Gallery", "collect_files", "build_gallery", "resolve_source", "EMBED_BATCH",
           "training_data_folder", "spread", "gallery_embeddings", "query_topk", "pick_reference",
           "export_gallery", "evaluate_gallery"]
