"""A gallery: the drawings of one or more folders, named, encoded, embedded and cached.

:func:`collect_files` finds the drawings and names them with the project's one naming
rule (``dataset.dxf_read.drawing_name``: the path below the gallery folder without its
extension, ``/`` replaced by ``__``; a preprocessed ``.h5`` keeps the name
preprocessing gave it, its file stem). :func:`build_gallery` encodes what the cache
does not hold yet in worker processes (``dataset.parallel.run_tasks``: a file that
fails, hangs past ``timeout`` or kills its worker is skipped with a reason), embeds
it, and gathers every embedding. Ctrl-C stops it; what was done is kept in the cache.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataset.dxf_read import DrawingError, drawing_name
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
)
from utils.embedding_cache import EmbeddingCache

SAVE_EVERY = 1000  # new cache rows between intermediate saves
EMBED_BATCH = 64  # drawings embedded together


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
    found: list[tuple[Path, Optional[Path]]] = []
    for entry in entries:
        root = Path(entry)
        if root.is_file():
            found.append((root, None))
            continue
        if not root.is_dir():
            raise GalleryError(f"gallery folder not found: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if Path(fn).suffix.lower() in SUPPORTED_SUFFIXES and not fn.startswith("."):
                    found.append((Path(dirpath) / fn, root))
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    clashes: list[str] = []
    for path, root in found:
        is_h5 = path.suffix.lower() in H5_SUFFIXES
        name = drawing_name(path) if root is None or is_h5 else drawing_name(path, root)
        if name in seen:
            clashes.append(name)
            if root is not None:
                name = f"{root.resolve().name}__{name}"
            base, k = name, 2
            while name in seen:
                name, k = f"{base}#{k}", k + 1
        seen.add(name)
        out.append((path, name))
    if clashes:
        warn(f"{len(clashes)} drawing names occur more than once in the gallery (e.g. {clashes[0]!r}); "
             "the later ones are prefixed with their gallery folder's name")
    return out


# ------------------------------------------------------------------- build
@dataclass
class Gallery:
    """Embedded drawings.

    Attributes:
        names: drawing names ``[n]``; ``paths``: their files.
        emb: float32 ``[n, D]``, before ``Embedder.finalize`` (raw for the non-learned kinds).
        enc: cached encodings (``type_counts [n,12]``, ``gf_features``, ``gf_adjacency``,
            ``has_gf [n]``, ``layout [n,12,8,8]``, ``source [n]``).
        n_new: drawings encoded or embedded in this run.
        skipped: ``(path, reason)`` of files that could not be used.
    """

    names: list[str]
    paths: list[Path]
    emb: np.ndarray
    enc: dict[str, np.ndarray]
    n_new: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


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
    keys: list[Optional[str]] = []
    for path, _name in files:
        try:
            key = cache.content_key(path)
        except FileNotFoundError:
            skipped.append((str(path), "file not found"))
            keys.append(None)
            continue
        except OSError as err:
            skipped.append((str(path), f"cannot be read ({err.strerror or err})"))
            keys.append(None)
            continue
        failure = cache.failure(key)
        if failure is not None:
            skipped.append((str(path), failure))
            key = None
        keys.append(key)
    return keys


def build_gallery(files: Sequence[tuple[Path, str]], embedder: Embedder, cache: EmbeddingCache,
                  workers: int = 1, max_len: int = 50_000, quiet: bool = False, timeout: int = 300,
                  progress_bar: Optional[bool] = None) -> Gallery:
    """Encode and embed the drawings that the cache does not hold yet; gather all.

    Args:
        files: ``(path, name)`` pairs (:func:`collect_files`).
        workers: processes parsing DXF files (0: all cores, at most 8).
        timeout: seconds one file may take before it is skipped (tried again next run).
        quiet: no warnings about skipped files.
        progress_bar: show a progress bar (default: when not ``quiet``).
    Returns:
        the :class:`Gallery`; files that cannot be used are skipped with a warning
        naming them and why.
    Raises:
        KeyboardInterrupt: after saving what was done (Ctrl-C).
    """
    learned = embedder.kind not in FLOOR_KINDS
    skipped: list[tuple[str, str]] = []
    keys = _content_keys(files, cache, skipped)
    todo = [i for i, k in enumerate(keys) if k is not None and (
        not cache.has_encoding(k) or (learned and not cache.has_embedding(embedder.identity, k)))]
    n_new = 0
    if todo:
        n_dxf = sum(1 for i in todo if files[i][0].suffix.lower() == ".dxf")
        n_workers = workers if workers > 0 else min(os.cpu_count() or 1, 8)
        n_workers = max(1, min(n_workers, n_dxf))
        progress = None
        if (not quiet if progress_bar is None else progress_bar) and len(todo) > 1:
            from tqdm import tqdm
            progress = tqdm(total=len(todo), desc="embedding gallery", unit="drawing", file=sys.stderr,
                            dynamic_ncols=True, leave=False)
        ready: list[tuple[int, DrawingEncoding]] = []
        since_save = 0

        def flush() -> None:
            nonlocal n_new, since_save
            if learned and ready:
                emb = embedder.embed([e for _, e in ready])
                cache.put_embeddings(embedder.identity, [keys[i] for i, _ in ready], emb)
            n_new += len(ready)
            since_save += len(ready)
            ready.clear()
            if since_save >= SAVE_EVERY:
                cache.save()
                since_save = 0

        tasks = [(i, str(files[i][0]), max_len) for i in todo]
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
                    skipped.append((str(files[i][0]), reason))
                    keys[i] = None
                    continue
                cache.put_encoding(keys[i], enc)
                try:
                    embedder.check(enc)
                except DrawingError as err:
                    skipped.append((str(files[i][0]), err.reason))
                    keys[i] = None
                    continue
                ready.append((i, enc))
                if len(ready) >= EMBED_BATCH:
                    flush()
            flush()
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
    else:
        cache.save()  # content keys of renamed/touched files

    kept = [i for i, k in enumerate(keys) if k is not None]
    enc_arrays = cache.encodings([keys[i] for i in kept]) if kept else {}
    if kept and embedder.needs_gf and not learned:  # the features need the GF matrices
        has = enc_arrays["has_gf"].astype(bool)
        for j in np.flatnonzero(~has):
            skipped.append((str(files[kept[j]][0]), "no GF twin: the features embedding needs the GF matrices"))
        kept = [i for i, h in zip(kept, has) if h]
        enc_arrays = {k: v[has] for k, v in enc_arrays.items()}
    if not kept:
        emb = np.zeros((0, 0), dtype=np.float32)
    elif learned:
        emb = cache.embeddings(embedder.identity, [keys[i] for i in kept])
    else:
        emb = floor_raw(embedder.kind, enc_arrays)
    if not quiet:
        for path, reason in skipped:
            warn(f"skipped {path}: {reason}")
    return Gallery([files[i][1] for i in kept], [files[i][0] for i in kept], np.asarray(emb, np.float32),
                   enc_arrays, n_new, skipped)


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

__all__ = ["GalleryError", "Gallery", "collect_files", "build_gallery", "resolve_source", "SAVE_EVERY",
           "training_data_folder", "spread", "gallery_embeddings", "pick_reference"]
