"""Similarity of CAD drawings with a trained model (SPEC §7, §8).

    # two drawings (.dxf parsed on the fly, or preprocessed .h5)
    python SimDeepDXF.py --model_path checkpoints/best_model.pth \\
        --file1 "QFN21LA(Cu) -508 Rev1_5.dxf" --file2 "QFN21LA(Cu) -508 Rev1_3.dxf" --method cosine
    # top-k retrieval over an archive (several folders form one gallery; embeddings cached)
    python SimDeepDXF.py --gallery archive/ more/ --query new.dxf --topk 5 --render top5.png
    # every gallery embedding to a file, or retrieval metrics against groups of similar drawings
    python SimDeepDXF.py --gallery archive/ --export emb.npz
    python SimDeepDXF.py --gallery archive/ --groups groups.json
    # no checkpoint: the non-learned features (standardized histogram + raw GF matrices)
    python SimDeepDXF.py --embedding features --gallery data/DXF --query data/DXF/QFN-a_rev0.dxf

Without any of --file1/--file2/--gallery it runs a demo query: the first sample
drawing of data/DXF against data/DXF. The model's configuration is read from the
checkpoint; ``--embedding auto`` uses what the checkpoint holds (a joint checkpoint:
both learned embeddings, each L2-normalized, concatenated).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from config.cli import parse_config  # noqa: E402
from utils.embedders import (  # noqa: E402
    EMBEDDING_CHOICES,
    SUPPORTED_SUFFIXES,
    DrawingEncoding,
    DrawingError,
    Embedder,
    EmbedderError,
    load_drawing,
    raw_features,
    standardize_features,
)
from utils.embedding_cache import EmbeddingCache  # noqa: E402
from utils.retrieval import (  # noqa: E402
    METRIC_KEYS,
    bootstrap_interval,
    histogram_embedding,
    normalize_name,
    rank_topk,
    random_embedding,
    raw_gf_embedding,
    retrieval_metrics,
    similarity_matrix,
    standardize_blocks,
)

DEMO_FOLDER = "data/DXF"
SAVE_EVERY = 1000  # new cache rows between intermediate saves


@dataclass
class SimConfig:
    """Similarity of two drawings, top-k retrieval, export and evaluation."""

    model_path: str = field(default="checkpoints/best_model.pth", metadata={
        "help": "checkpoint of a GF, DeepDXF or joint model (not needed for --embedding features)"})
    file1: Optional[str] = field(default=None, metadata={"help": "first drawing (.dxf or .h5) of pair mode"})
    file2: Optional[str] = field(default=None, metadata={"help": "second drawing (.dxf or .h5) of pair mode"})
    method: Literal["cosine", "euclidean"] = field(default="cosine", metadata={
        "help": "cosine similarity, or euclidean distance (ranked as its negative)"})
    embedding: str = field(default="auto", metadata={
        "help": "auto: what the checkpoint holds; gf/deepdxf: one part of a joint model; joint: both, "
                "concatenated; features: non-learned standardized histogram + raw GF (no checkpoint)",
        "choices": list(EMBEDDING_CHOICES)})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    gallery: list[str] = field(default_factory=list, metadata={
        "help": "folders (searched recursively) and/or files of .dxf/.h5 drawings forming one gallery"})
    query: Optional[str] = field(default=None, metadata={"help": "drawing to look up in --gallery"})
    topk: int = field(default=5, metadata={"help": "how many matches --query prints"})
    export: Optional[str] = field(default=None, metadata={
        "help": "write the gallery's embeddings to this .npz (arrays names, embeddings, paths)"})
    groups: Optional[str] = field(default=None, metadata={
        "help": "JSON list of groups of similar drawing names: print retrieval metrics of the model "
                "and of the non-learned floors over the gallery"})
    render: Optional[str] = field(default=None, metadata={
        "help": "with --query: draw the query and its top-k matches into this PNG"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "embedding cache folder (default: <first gallery folder>/.embedding_cache)"})
    cache: bool = field(default=True, metadata={"help": "use and update the embedding cache"})
    workers: int = field(default=0, metadata={
        "help": "processes parsing new DXF files of a gallery (0 = all cores, at most 8)"})
    max_len: int = field(default=50_000, metadata={"help": "entities kept per drawing parsed on the fly"})
    timeout: int = field(default=300, metadata={"help": "seconds allowed to parse one gallery DXF before it is skipped"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of the mAP interval (--groups)"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the random floor"})
    append_features: bool = field(default=False, metadata={
        "help": "append the standardized non-learned features (histogram and raw GF blocks, z-scored with "
                "the gallery) to a learned embedding; --groups shows both so you can see whether it helps"})


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ----------------------------------------------------------------- gallery
def collect_files(entries: Sequence[str]) -> list[tuple[Path, str]]:
    """The drawings (.dxf/.h5/.hdf5) under ``entries`` (folders searched recursively,
    hidden folders such as the cache skipped; files taken as they are), with names.

    A name is the file name without extension; where two files share one, the path
    below its folder is used (``sub__stem``), then the folder's name as a prefix.
    """
    found: list[tuple[Path, Path]] = []
    for entry in entries:
        root = Path(entry)
        if root.is_file():
            found.append((root, root.parent))
            continue
        if not root.is_dir():
            raise UsageError(f"gallery folder not found: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if Path(fn).suffix.lower() in SUPPORTED_SUFFIXES and not fn.startswith("."):
                    found.append((Path(dirpath) / fn, root))
    stems: dict[str, int] = {}
    for path, _ in found:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for path, root in found:
        name = path.stem
        if stems[name] > 1:
            rel = path.relative_to(root).with_suffix("") if path.is_relative_to(root) else Path(path.stem)
            name = "__".join(rel.parts)
            if name in seen:
                name = f"{root.resolve().name}__{name}"
            k = 2
            base = name
            while name in seen:
                name, k = f"{base}#{k}", k + 1
        seen.add(name)
        out.append((path, name))
    dup = sorted(s for s, n in stems.items() if n > 1)
    if dup:
        warn(f"{len(dup)} file names occur more than once in the gallery (e.g. {dup[0]!r}); "
             "they are told apart by their folders (sub__name)")
    return out


@dataclass
class Gallery:
    """Embedded drawings. ``emb: float32 [n, D]`` (before ``Embedder.finalize``);
    ``enc``: cached encodings (``type_counts [n,12]``, ``gf_features``, ``gf_adjacency``,
    ``has_gf [n]``, ``source [n]``)."""

    names: list[str]
    paths: list[Path]
    emb: np.ndarray
    enc: dict[str, np.ndarray]
    n_new: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _FileTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` on the way swallows it."""


def _on_alarm(signum, frame):
    raise _FileTimeout()


def _load_one(args: tuple[str, int, int]) -> tuple[Optional[DrawingEncoding], str, bool]:
    """Worker: ``(encoding, "", True)`` or ``(None, reason, permanent)``; gives a file up after
    ``timeout`` s (not permanent: tried again next time)."""
    path, max_len, timeout = args
    use_alarm = (timeout > 0 and hasattr(signal, "SIGALRM")
                 and threading.current_thread() is threading.main_thread())
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(timeout)
    try:
        return load_drawing(path, max_len), "", True
    except DrawingError as err:
        return None, err.reason, True
    except _FileTimeout:
        return None, f"timed out after {timeout} s (raise --timeout)", False
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def _memory_cache() -> EmbeddingCache:
    """A cache that lives in memory only (``--no-cache``): a folder that is never written."""
    cache = EmbeddingCache(Path(os.devnull) / "none")
    cache.save = lambda: None  # type: ignore[method-assign]
    return cache


def build_gallery(files: Sequence[tuple[Path, str]], embedder: Embedder, cache: EmbeddingCache,
                  workers: int = 1, max_len: int = 50_000, quiet: bool = False, timeout: int = 300) -> Gallery:
    """Encode and embed the drawings that the cache does not hold yet; gather all.

    Files that cannot be used are skipped with a warning naming them and why.
    """
    learned = embedder.kind != "features"
    keys: list[Optional[str]] = []
    skipped: list[tuple[str, str]] = []
    todo: list[int] = []
    for i, (path, _name) in enumerate(files):
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
            keys.append(None)
            continue
        keys.append(key)
        if not cache.has_encoding(key) or (learned and not cache.has_embedding(embedder.identity, key)):
            todo.append(i)

    n_new = 0
    if todo:
        n_workers = workers if workers > 0 else min(os.cpu_count() or 1, 8)
        n_dxf = sum(1 for i in todo if files[i][0].suffix.lower() == ".dxf")
        pool = None
        if n_workers > 1 and n_dxf > 1:
            pool = multiprocessing.get_context("fork").Pool(min(n_workers, n_dxf))
        progress = None
        if not quiet and len(todo) > 1:
            from tqdm import tqdm
            progress = tqdm(total=len(todo), desc="embedding gallery", unit="drawing", file=sys.stderr,
                            dynamic_ncols=True, leave=False)
        since_save = 0
        try:
            block = 64
            for s in range(0, len(todo), block):
                idx = todo[s:s + block]
                jobs = [(str(files[i][0]), max_len, timeout) for i in idx]
                results = pool.map(_load_one, jobs, chunksize=1) if pool else [_load_one(j) for j in jobs]
                ready: list[tuple[int, DrawingEncoding]] = []
                for i, (enc, reason, permanent) in zip(idx, results):
                    key = keys[i]
                    if enc is None:
                        if permanent:
                            cache.put_failure(key, reason)
                        skipped.append((str(files[i][0]), reason))
                        keys[i] = None
                        continue
                    cache.put_encoding(key, enc)
                    try:
                        embedder.check(enc)
                    except DrawingError as err:
                        skipped.append((str(files[i][0]), err.reason))
                        keys[i] = None
                        continue
                    ready.append((i, enc))
                if learned and ready:
                    emb = embedder.embed([e for _, e in ready])
                    cache.put_embeddings(embedder.identity, [keys[i] for i, _ in ready], emb)
                n_new += len(ready)
                since_save += len(ready)
                if progress is not None:
                    progress.update(len(idx))
                if since_save >= SAVE_EVERY:
                    cache.save()
                    since_save = 0
        finally:
            if progress is not None:
                progress.close()
            if pool is not None:
                pool.close()
                pool.join()
            cache.save()
    else:
        cache.save()  # content keys of renamed/touched files

    kept = [i for i, k in enumerate(keys) if k is not None]
    kept_keys = [keys[i] for i in kept]
    enc = cache.encodings(kept_keys) if kept else {}
    if kept and not learned:  # the features need the GF matrices: drop drawings without them
        has = enc["has_gf"].astype(bool)
        for j in np.flatnonzero(~has):
            skipped.append((str(files[kept[j]][0]), "no GF twin: the features embedding needs the GF matrices"))
        kept = [i for i, h in zip(kept, has) if h]
        kept_keys = [keys[i] for i in kept]
        enc = {k: v[has] for k, v in enc.items()}
    if not kept:
        emb = np.zeros((0, 0), dtype=np.float32)
    elif learned:
        emb = cache.embeddings(embedder.identity, kept_keys)
    else:
        emb = encoded_features(enc)
    if not quiet:
        for path, reason in skipped:
            warn(f"skipped {path}: {reason}")
    return Gallery([files[i][1] for i in kept], [files[i][0] for i in kept], np.asarray(emb, np.float32),
                   enc, n_new, skipped)


def encoded_features(enc: dict[str, np.ndarray]) -> np.ndarray:
    """The non-learned features ``[n, 12 + 210]`` from cached encodings (``Gallery.enc``)."""
    return np.concatenate([histogram_embedding(enc["type_counts"]),
                           raw_gf_embedding(enc["gf_features"], enc["gf_adjacency"])], axis=1)


def append_features(learned: np.ndarray, raw: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
    """``[L2(learned) | standardized histogram block | standardized GF block]``: three unit
    blocks of equal weight. ``raw: [n, 222]``; ``reference: [m, 222]`` gives the z-scores."""
    learned = np.asarray(learned, dtype=np.float64)
    unit = learned / np.maximum(np.linalg.norm(learned, axis=1, keepdims=True), 1e-12)
    return np.concatenate([unit, standardize_features(raw, reference)], axis=1).astype(np.float32)


# ------------------------------------------------------------------ search
def search(query: np.ndarray, gallery: np.ndarray, k: int, method: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``query: [d]`` among ``gallery: [n, d]``: faiss (exact inner product on
    normalized rows, or L2) when installed, numpy otherwise. Returns ``(idx [k], score [k])``;
    euclidean scores are minus the distance."""
    try:
        import faiss  # type: ignore
    except ImportError:
        faiss = None
    if faiss is None or len(gallery) == 0:
        return rank_topk(query, gallery, k, method=method)
    q = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    k = min(k, len(g))
    if method == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        scores, idx = index.search(q, k)
        return idx[0].astype(np.int64), scores[0].astype(np.float64)
    index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    sq, idx = index.search(q, k)
    return idx[0].astype(np.int64), -np.sqrt(np.maximum(sq[0], 0.0)).astype(np.float64)


# ------------------------------------------------------------------ output
def metrics_table(rows: Sequence[tuple[str, Optional[dict]]], n_boot: int = 1000, seed: int = 0) -> str:
    """Markdown table: embedding | mAP | 95% CI | P@1 | P@5 | R@10 | nDCG@10 | MRR (None: n/a)."""
    lines = ["| embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR |",
             "|---|---|---|---|---|---|---|---|"]
    for label, m in rows:
        if m is None:
            lines.append(f"| {label} | n/a |  |  |  |  |  |  |")
            continue
        lo, hi = bootstrap_interval(m.get("per_query_ap", []), n_boot=n_boot, seed=seed)
        ci = "–" if np.isnan(lo) else f"{lo:.3f}–{hi:.3f}"
        vals = " | ".join(f"{m[k]:.3f}" for k in METRIC_KEYS if k != "mAP")
        lines.append(f"| {label} | {m['mAP']:.3f} | {ci} | {vals} |")
    return "\n".join(lines)


def read_groups(path: str) -> list[list[str]]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no groups file at {p}: give a JSON list of groups of drawing names")
    try:
        groups = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{p} is not valid JSON ({err}): expected a list of groups of drawing names") from err
    if not isinstance(groups, list) or not all(isinstance(g, list) and all(isinstance(n, str) for n in g)
                                               for g in groups):
        raise UsageError(f"{p} must hold a JSON list of lists of drawing names, e.g. [[\"a\", \"b\"], [\"c\", \"d\"]]")
    return groups


def evaluate(gallery: Gallery, models: Sequence[tuple[str, Optional[np.ndarray]]], groups: list[list[str]],
             method: str, n_boot: int, seed: int) -> str:
    """The metrics of the model's embedding(s) ``(label, [n, D] or None for n/a)`` and of
    the floors, as a markdown table."""
    names = gallery.names
    labelled = {normalize_name(n) for g in groups for n in g}
    fit = [i for i, n in enumerate(names) if normalize_name(n) not in labelled]
    fit_rows = fit if len(fit) >= 2 else None
    rows: list[tuple[str, Optional[dict]]] = []
    for label, emb in models:
        rows.append((label, None if emb is None else retrieval_metrics(emb, names, groups, method)))
    runs = [retrieval_metrics(random_embedding(len(names), 64, seed + i), names, groups, method) for i in range(10)]
    rand = dict(runs[0])
    for k in METRIC_KEYS:
        rand[k] = float(np.mean([r[k] for r in runs]))
    rand["per_query_ap"] = np.mean([r["per_query_ap"] for r in runs], axis=0).tolist()
    rows.append(("random vectors (chance, mean of 10)", rand))
    hist = histogram_embedding(gallery.enc["type_counts"])
    rows.append(("floor: entity-type histogram log(1+count)", retrieval_metrics(hist, names, groups, method)))
    has_gf = gallery.enc["has_gf"].astype(bool)
    if has_gf.all():
        raw = raw_gf_embedding(gallery.enc["gf_features"], gallery.enc["gf_adjacency"])
        rows.append(("floor: raw GF matrices", retrieval_metrics(raw, names, groups, method)))
        std = standardize_blocks([hist, raw], fit_rows)
        rows.append(("floor: standardized histogram + raw GF", retrieval_metrics(std, names, groups, method)))
    else:
        why = f"n/a: {int((~has_gf).sum())} .h5 drawings without GF twin"
        rows.append((f"floor: raw GF matrices ({why})", None))
        rows.append((f"floor: standardized histogram + raw GF ({why})", None))
    first = next(m for _, m in rows if m is not None)
    head = (f"gallery: {len(names)} drawings; queries: {first['n_queries']} (every member of a group of >= 2); "
            f"similarity: {method}; 95% CI: bootstrap over queries ({n_boot} resamples)")
    if first["missing"]:
        warn(f"{len(first['missing'])} group members are not in the gallery: "
             + ", ".join(first["missing"][:10]) + (" ..." if len(first["missing"]) > 10 else ""))
    if first["n_queries"] == 0:
        raise UsageError("no group has two members in the gallery: nothing to evaluate "
                         "(are the names in the groups file the gallery's file names?)")
    return head + "\n" + metrics_table(rows, n_boot, seed)


def render_result(out: str, query: tuple[str, Optional[str]], matches: list[tuple[str, Optional[str], float]],
                  method: str, embedding: str) -> Path:
    from utils.render import Panel, render_panels

    score = "similarity" if method == "cosine" else "-distance"
    panels = [Panel(query[1], query[0], "query")]
    panels += [Panel(src, name, f"#{r}  {score} {s:.3f}") for r, (name, src, s) in enumerate(matches, 1)]
    return render_panels(panels, out, suptitle=f"top-{len(matches)} by {embedding} embedding ({method})")


def _resolve_source(source: str, path: Path) -> Optional[str]:
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


# -------------------------------------------------------------------- main
def _validate(cfg: SimConfig) -> None:
    pair = cfg.file1 is not None or cfg.file2 is not None
    if pair and (cfg.file1 is None or cfg.file2 is None):
        raise UsageError("pair mode needs both --file1 and --file2")
    if not cfg.gallery:
        for flag in ("query", "export", "groups"):
            if getattr(cfg, flag) is not None:
                raise UsageError(f"--{flag} needs --gallery DIR [DIR ...] (the drawings to search)")
    if cfg.render is not None and cfg.query is None:
        raise UsageError("--render draws a query's matches: give --query FILE and --gallery DIR")
    if cfg.topk < 1:
        raise UsageError(f"--topk must be at least 1, got {cfg.topk}")
    if cfg.gallery and not (cfg.query or cfg.export or cfg.groups) and not pair:
        raise UsageError("--gallery needs --query FILE, --export FILE.npz or --groups FILE.json")
    if cfg.groups is not None:
        read_groups(cfg.groups)


def run(cfg: SimConfig) -> dict:
    """Run the command described by ``cfg``; returns what it printed, as values (for tests)."""
    from utils.embedders import make_embedder

    no_mode = all(v is None for v in (cfg.file1, cfg.file2, cfg.query, cfg.export, cfg.groups, cfg.render))
    if no_mode and not cfg.gallery:
        demo = sorted(Path(DEMO_FOLDER).glob("*.dxf"))
        if not demo:
            raise UsageError("nothing to do: give --file1 A --file2 B, or --gallery DIR with --query/--export/"
                             f"--groups (and {DEMO_FOLDER} holds no sample drawings for a demo: "
                             "run python dataset/dxf_process.py first)")
        print(f"no --file1/--file2 or --gallery given: demo query of {demo[0]} over {DEMO_FOLDER}/")
        cfg.gallery, cfg.query = [DEMO_FOLDER], str(demo[0])
    _validate(cfg)
    result: dict = {}
    embedder = make_embedder(cfg.model_path, cfg.embedding, cfg.device)
    result["embedding"] = embedder.kind
    use_appended = cfg.append_features and embedder.kind != "features"
    if cfg.append_features and not use_appended:
        warn("--append_features ignored: --embedding features is the features block already")
    timings: dict[str, float] = {}

    gallery: Optional[Gallery] = None
    if cfg.gallery:
        files = collect_files(cfg.gallery)
        if not files:
            raise UsageError(f"empty gallery: no .dxf/.h5 files under {', '.join(cfg.gallery)}")
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else _default_cache_dir(cfg.gallery[0])
        cache = EmbeddingCache(cache_dir) if cfg.cache else _memory_cache()
        t0 = time.perf_counter()
        gallery = build_gallery(files, embedder, cache, cfg.workers, cfg.max_len, timeout=cfg.timeout)
        timings["gallery_s"] = time.perf_counter() - t0
        if not gallery.names:
            raise UsageError(f"empty gallery: none of the {len(files)} files under {', '.join(cfg.gallery)} "
                             "could be used (see the warnings above)")
        where = f"cache {cache_dir}" if cfg.cache else "no cache"
        print(f"gallery: {len(gallery.names)} drawings ({gallery.n_new} embedded now, "
              f"{len(gallery.names) - gallery.n_new} from the {where}"
              + (f"; {len(gallery.skipped)} skipped" if gallery.skipped else "") + ")")
        result.update(gallery_names=gallery.names, n_new=gallery.n_new, skipped=gallery.skipped)
        reference = gallery.emb
        g_emb = embedder.finalize(gallery.emb, reference)
        g_plain = g_emb
        g_raw = encoded_features(gallery.enc) if bool(gallery.enc["has_gf"].all()) else None
        if use_appended:
            if g_raw is None:
                raise UsageError("--append_features needs the GF matrices of every gallery drawing: "
                                 f"{int((~gallery.enc['has_gf'].astype(bool)).sum())} .h5 files have no GF twin")
            g_emb = append_features(g_emb, g_raw, g_raw)
    else:
        cache, reference, g_emb, g_raw = None, None, None, None

    if cfg.file1 is not None:
        encs = [load_drawing(cfg.file1, cfg.max_len), load_drawing(cfg.file2, cfg.max_len)]
        emb = embedder.finalize(embedder.embed(encs), reference)
        if use_appended:
            emb = append_features(emb, raw_features(encs), g_raw)
        sim = float(similarity_matrix(emb[:1], emb[1:], cfg.method)[0, 0])
        if cfg.method == "cosine":
            print(f"cosine similarity: {sim:.6f}")
        else:
            print(f"euclidean distance: {-sim:.6f}")
        print(f"  ({embedder.label}, {emb.shape[1]}-dim; file1 {cfg.file1}; file2 {cfg.file2})")
        if embedder.kind == "features" and reference is None:
            print("  note: without --gallery the features are not z-scored (no corpus statistics); "
                  "each block is only L2-normalized")
        result["similarity"] = sim

    if gallery is not None and cfg.query is not None:
        qpath = Path(cfg.query)
        qg = build_gallery([(qpath, normalize_name(qpath.name))], embedder, cache, 1, cfg.max_len, quiet=True)
        if not qg.names:
            raise DrawingError(qpath, qg.skipped[0][1] if qg.skipped else "cannot be used")
        t0 = time.perf_counter()
        q_emb = embedder.finalize(qg.emb, reference)
        if use_appended:
            q_emb = append_features(q_emb, encoded_features(qg.enc), g_raw)
        q_emb = q_emb[0]
        same = {i for i, p in enumerate(gallery.paths) if p.name == qpath.name and p.samefile(qpath)}
        k = min(cfg.topk + len(same), len(gallery.names))
        idx, scores = search(q_emb, g_emb, k, cfg.method)
        pairs = [(int(i), float(s)) for i, s in zip(idx, scores) if int(i) not in same][: cfg.topk]
        timings["search_s"] = time.perf_counter() - t0
        what = "similarity" if cfg.method == "cosine" else "distance"
        print(f"top {len(pairs)} of {len(gallery.names) - len(same)} drawings for {qg.names[0]} "
              f"({embedder.label}, {cfg.method}{'; the query itself left out' if same else ''}):")
        print(f"{'rank':>4}  {what:>10}  name")
        for r, (i, s) in enumerate(pairs, 1):
            print(f"{r:>4}  {s if cfg.method == 'cosine' else -s:>10.4f}  {gallery.names[i]}")
        result["topk"] = [(gallery.names[i], s) for i, s in pairs]
        if cfg.render:
            matches = [(gallery.names[i], _resolve_source(str(gallery.enc["source"][i]), gallery.paths[i]), s)
                       for i, s in pairs]
            qsrc = _resolve_source(str(qg.enc["source"][0]), qpath)
            out = render_result(cfg.render, (qg.names[0], qsrc), matches, cfg.method, embedder.kind)
            print(f"wrote {out}")

    if gallery is not None and cfg.export is not None:
        out = Path(cfg.export)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh:
            np.savez(fh, names=np.array(gallery.names), embeddings=g_emb.astype(np.float32),
                     paths=np.array([str(p) for p in gallery.paths]))
        print(f"wrote {out}: {len(gallery.names)} embeddings of dimension {g_emb.shape[1]}")

    if gallery is not None and cfg.groups is not None:
        groups = read_groups(cfg.groups)
        models: list[tuple[str, Optional[np.ndarray]]] = []
        if embedder.kind != "features":
            models.append((embedder.label, g_plain))
            plus = f"{embedder.label} + standardized features blocks"
            models.append((plus, None if g_raw is None else append_features(g_plain, g_raw, g_raw)))
        table = evaluate(gallery, models, groups, cfg.method, cfg.n_boot, cfg.seed)
        print(table)
        result["table"] = table
    result["timings"] = timings
    return result


def _default_cache_dir(first: str) -> Path:
    """``<first gallery folder>/.embedding_cache``; for a read-only folder (a shared
    archive) ``$XDG_CACHE_HOME/dxf-similarity/<hash of the folder's path>`` instead."""
    p = Path(first)
    folder = p.parent if p.is_file() else p
    cache = folder / ".embedding_cache"
    def writable(d: Path) -> bool:  # the mode bits too: root may write into a folder marked read-only
        return os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)

    if (cache.is_dir() and writable(cache)) or (not cache.exists() and writable(folder)):
        return cache
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dxf-similarity"
    tag = hashlib.sha1(str(folder.resolve()).encode("utf-8")).hexdigest()[:12]
    alt = base / f"{folder.resolve().name}-{tag}"
    print(f"note: {folder} is not writable: caching embeddings in {alt} (choose with --cache_dir)")
    return alt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a drawing cannot be used, 2 usage/model errors)."""
    cfg = parse_config(SimConfig, argv, description=__doc__.split("\n\n")[0])
    try:
        run(cfg)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except EmbedderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DrawingError as err:
        print(f"error: cannot use {err.path}: {err.reason}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. an --export/--render path that cannot be written
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
