"""Similarity of CAD drawings with a trained model.

    # two drawings (.dxf parsed on the fly, or preprocessed .h5), with a reference for the number
    python SimDeepDXF.py --model_path checkpoints/best_model.pth \\
        --file1 "QFN21LA(Cu) -508 Rev1_5.dxf" --file2 "QFN21LA(Cu) -508 Rev1_3.dxf" --method cosine
    # top-k retrieval over an archive (several folders form one gallery; embeddings cached)
    python SimDeepDXF.py --gallery archive/ more/ --query new.dxf --topk 5 --render top5.png
    # every gallery embedding to a file, or retrieval metrics against groups of similar drawings
    python SimDeepDXF.py --gallery archive/ --export emb.npz
    python SimDeepDXF.py --gallery archive/ --groups groups.json
    # choose the search embedding for this archive on its groups; search with the checkpoint written
    python SimDeepDXF.py --gallery archive/ --groups groups.json --choose checkpoints/archive.pth
    # no checkpoint: a non-learned embedding (features, layout or layout_rot)
    python SimDeepDXF.py --embedding features --gallery data/DXF --query data/DXF/QFN-a_rev0.dxf
    # a search page and JSON API in the browser (http://127.0.0.1:8000/; also: dxf-serve --gallery ...)
    python SimDeepDXF.py --serve --gallery archive/ [--host 127.0.0.1] [--port 8000]

Without any of --file1/--file2/--gallery it runs a demo query: the first sample
drawing of data/DXF against data/DXF. The model's configuration is read from the
checkpoint; ``--embedding auto`` uses what the checkpoint holds (a joint checkpoint:
both learned embeddings, each L2-normalized, concatenated).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from config.cli import parse_config
from config.sim_config import DEMO_FOLDER, SimConfig
from dataset.dxf_read import DrawingError, drawing_name
from model.floors import FLOOR_KINDS, floor_raw
from utils.ranking import GroupsError, percentile_among, read_groups, similarity_matrix
from utils.retrieval.cache import EmbeddingCache, default_cache_dir
from utils.retrieval.choice import ChoiceError
from utils.retrieval.embedders import (Embedder, EmbedderError, floor_embedder, make_embedder, parts_embedder,
                                       with_features)
from utils.retrieval.encodings import SUPPORTED_SUFFIXES, DrawingEncoding, PreprocessedIndex, load_drawing
from utils.retrieval.gallery import (Gallery, GalleryError, build_gallery, collect_files, evaluate_gallery,
                                     export_gallery, pick_reference, resolve_source, spread, training_data_folder,
                                     warn)


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""


def _check_drawing_arg(flag: str, value: str) -> None:
    """A --file1/--file2/--query argument must be a drawing file (checked before any work)."""
    p = Path(value)
    if p.is_dir():
        raise UsageError(f"--{flag} {p} is a folder, not a drawing: give a .dxf or .h5 file "
                         "(to search a folder of drawings, use --gallery FOLDER --query FILE)")
    if not p.is_file():
        raise UsageError(f"--{flag} {p}: file not found")
    if p.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UsageError(f"--{flag} {p}: unsupported file type {p.suffix or '(none)'!r}: give a .dxf or .h5 file")


def output_path(flag: str, value: str, default_name: str) -> Path:
    """Where ``--render``/``--export`` write: the file given, or ``default_name`` inside a
    folder given; checked before any work (a folder that cannot hold it is a usage error)."""
    p = Path(value)
    if p.is_dir():
        p = p / default_name
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--{flag} {value}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--{flag} {value}: cannot write into {parent}")
    if p.is_dir():
        raise UsageError(f"--{flag} {value}: {p} is a folder")
    return p


def validate(cfg: SimConfig) -> None:
    """Every usage error, before a model is loaded or a gallery embedded; ``--render`` and
    ``--export`` folders are turned into the files written there."""
    pair = cfg.file1 is not None or cfg.file2 is not None
    if pair and (cfg.file1 is None or cfg.file2 is None):
        raise UsageError("pair mode needs both --file1 and --file2")
    for flag in ("file1", "file2"):
        if getattr(cfg, flag) is not None and Path(getattr(cfg, flag)).is_dir():
            _check_drawing_arg(flag, getattr(cfg, flag))
    if not cfg.gallery:
        for flag in ("query", "export", "groups"):
            if getattr(cfg, flag) is not None:
                raise UsageError(f"--{flag} needs --gallery DIR [DIR ...] (the drawings to search)")
    if cfg.choose is not None and (cfg.groups is None or not cfg.gallery):
        raise UsageError("--choose needs --gallery DIR and --groups FILE.json (the groups it chooses on)")
    if cfg.choose is not None and (cfg.query or cfg.export or cfg.serve or pair):
        raise UsageError("--choose writes a checkpoint and stops: search with it in a second command "
                         "(--model_path FILE --query ...)")
    if cfg.render is not None and cfg.query is None:
        raise UsageError("--render draws a query's matches: give --query FILE and --gallery DIR")
    if cfg.topk < 1:
        raise UsageError(f"--topk must be at least 1, got {cfg.topk}")
    if cfg.serve and not cfg.gallery:
        raise UsageError(f"--serve needs --gallery DIR [DIR ...] (the drawings to search), "
                         f"e.g. --gallery {DEMO_FOLDER}")
    if cfg.serve and not (1 <= cfg.port <= 65535 and cfg.max_upload_mb > 0):
        raise UsageError(f"--port must be 1..65535 and --max_upload_mb above 0, got {cfg.port} and {cfg.max_upload_mb}")
    if cfg.gallery and not (cfg.query or cfg.export or cfg.groups or cfg.serve) and not pair:
        raise UsageError("--gallery needs --query FILE, --export FILE.npz, --groups FILE.json or --serve")
    if cfg.query is not None:
        _check_drawing_arg("query", cfg.query)
    if cfg.groups is not None:
        read_groups(cfg.groups)
    if cfg.render is not None:
        cfg.render = str(output_path("render", cfg.render, f"{drawing_name(cfg.query)}-top{cfg.topk}.png"))
    if cfg.export is not None:
        cfg.export = str(output_path("export", cfg.export, "embeddings.npz"))
    if cfg.choose is not None:
        cfg.choose = str(output_path("choose", cfg.choose, "best_model.pth"))


def preprocessed_index(cfg: SimConfig, embedder: Embedder) -> Optional[PreprocessedIndex]:
    """The preprocessed folders whose encodings a gallery reuses (``--encodings``)."""
    folders: list[Path] = []
    for entry in cfg.encodings:
        if entry == "none":
            return None
        if entry == "auto":
            folders.append(Path(DEMO_FOLDER).parent)
            trained = training_data_folder(embedder.config, cfg.model_path)
            if trained is not None:
                folders.append(trained)
        else:
            folders.append(Path(entry))
    index = PreprocessedIndex(list(dict.fromkeys(folders)))
    return index if len(index) else None


def open_gallery(cfg: SimConfig, entries: list[str], embedder: Embedder, at_most: int = 0,
                 quiet: bool = False, on_progress: Optional[Callable[[int, int], None]] = None,
                 subset: Optional[Callable[[list], list]] = None) -> Gallery:
    """Collect, encode, embed (cached) and report the drawings of ``entries``
    (``on_progress(done, total)``: see :func:`build_gallery`; ``subset``: files -> the files
    to use, e.g. ``--choose``'s sample)."""
    files = collect_files(entries)
    if not files:
        raise UsageError(f"empty gallery: no .dxf/.h5 files under {', '.join(entries)}")
    files = spread(files, at_most) if at_most else files
    sample = bool(at_most) or subset is not None  # a sample: the cache keeps its bookkeeping of the rest
    if subset is not None:
        files = subset(files)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(entries[0])
    cache = EmbeddingCache(cache_dir if cfg.cache else None)
    gallery = build_gallery(files, embedder, cache, cfg.workers, cfg.max_len, quiet=quiet, timeout=cfg.timeout,
                            progress_bar=True, forget_missing=not sample,
                            preprocessed=preprocessed_index(cfg, embedder), on_progress=on_progress)
    if not gallery.names:
        raise UsageError(f"empty gallery: none of the {len(files)} files under {', '.join(entries)} "
                         "could be used (see the warnings above)")
    if not quiet:
        kept = len(gallery.names) - gallery.n_new
        where = f"{kept} from the cache {cache_dir}" if cfg.cache else "--no-cache: nothing is kept after this run"
        reused = f", {gallery.n_reused} of them from preprocessed encodings" if gallery.n_reused else ""
        print(f"gallery: {len(gallery.names)} drawings ({gallery.n_new} embedded now{reused}; {where}"
              + (f"; {len(gallery.skipped)} skipped" if gallery.skipped else "") + ")")
    return gallery


def _percentile_line(what: str, method: str, pct: float, sim: Optional[float] = None) -> str:
    value = "" if sim is None else (f"cosine similarity {sim:.3f}; " if method == "cosine"
                                    else f"euclidean distance {-sim:.3f}; ")
    closer = "more similar to file1" if method == "cosine" else "closer to file1"
    return f"  {what}: {value}file2 is {closer} than {pct:.0f}% of them"


def pair_mode(cfg: SimConfig, embedder: Embedder) -> dict:
    """Similarity of --file1 and --file2, placed among file1's similarities to a reference set."""
    encs = [load_drawing(cfg.file1, cfg.max_len), load_drawing(cfg.file2, cfg.max_len)]
    folder, why = pick_reference(cfg.reference, cfg.gallery, embedder.config, cfg.model_path, DEMO_FOLDER)
    ref: Optional[Gallery] = None
    try:
        ref = open_gallery(cfg, [folder], embedder, cfg.reference_max, quiet=True) if folder else None
    except (UsageError, GalleryError) as err:  # a reference that cannot be used does not stop pair mode
        ref, folder, why = None, None, f"{folder} cannot be used: {err}"
    rows = embedder.embed(encs)
    emb = ref.final(rows) if ref is not None else embedder.finalize(rows, None)
    sim = float(similarity_matrix(emb[:1], emb[1:], cfg.method)[0, 0])
    print(f"cosine similarity: {sim:.6f}" if cfg.method == "cosine" else f"euclidean distance: {-sim:.6f}")
    print(f"  ({embedder.label}, {emb.shape[1]}-dim; file1 {cfg.file1}; file2 {cfg.file2})")
    result = {"similarity": sim, "reference": folder}
    if ref is None:
        print(f"  reference: none ({why}): the number alone says little; give --reference DIR to compare it "
              "with file1's similarity to other drawings")
        if not embedder.row_wise:
            print("  note: without a reference the non-learned embedding is not z-scored (no corpus "
                  "statistics); each block is only L2-normalized")
        return result
    others = np.array(sorted(set(range(len(ref))) - ref.members_like(cfg.file1) - ref.members_like(cfg.file2)),
                      dtype=np.int64)
    print(f"  reference: {len(others)} drawings of {folder} ({why})")
    result["percentile"] = percentile_among(sim, emb[0], ref.vectors[others], cfg.method)
    print(_percentile_line("this embedding", cfg.method, result["percentile"]))
    if embedder.kind != "features" and all(e.has_gf for e in encs) and bool(ref.enc["has_gf"].all()):
        feats = floor_embedder("features")
        r_raw = floor_raw("features", ref.enc)
        f_emb = feats.finalize(feats.embed(encs), r_raw)
        f_sim = float(similarity_matrix(f_emb[:1], f_emb[1:], cfg.method)[0, 0])
        f_pct = percentile_among(f_sim, f_emb[0], feats.finalize(r_raw, r_raw)[others], cfg.method)
        print(_percentile_line("non-learned features", cfg.method, f_pct, f_sim))
        result.update(features_similarity=f_sim, features_percentile=f_pct)
    return result


def query_mode(cfg: SimConfig, enc: DrawingEncoding, gallery: Gallery) -> list[tuple[str, float]]:
    """The --topk most similar gallery drawings of the query ``enc``; gallery drawings with
    the query's content (the query itself, or a copy of it) are left out."""
    qpath = Path(cfg.query)
    same = gallery.members_like(qpath)
    pairs = gallery.query(enc, cfg.topk, cfg.method, same)
    what = "similarity" if cfg.method == "cosine" else "distance"
    copies = len(same) - int(any(gallery.paths[i].resolve() == qpath.resolve() for i in same))
    left_out = "" if not same else "; the query itself left out" + (
        f" (with {copies} cop{'y' if copies == 1 else 'ies'} of it in the gallery)" if copies else "")
    print(f"top {len(pairs)} of {len(gallery.names) - len(same)} drawings for {drawing_name(qpath)} "
          f"({gallery.embedder.label}, {cfg.method}{left_out}):")
    print(f"{'rank':>4}  {what:>10}  name")
    for r, (i, s) in enumerate(pairs, 1):
        print(f"{r:>4}  {s if cfg.method == 'cosine' else -s:>10.4f}  {gallery.names[i]}")
    if cfg.render:
        render_mode(cfg, gallery, (drawing_name(qpath), resolve_source(enc.source or "", qpath)), pairs)
    return [(gallery.names[i], s) for i, s in pairs]


def render_mode(cfg: SimConfig, gallery: Gallery, query: tuple[str, Optional[str]],
                pairs: list[tuple[int, float]]) -> None:
    from utils.retrieval.render import Panel, render_panels

    score = "similarity" if cfg.method == "cosine" else "-distance"
    panels = [Panel(query[1], query[0], "query")] + [
        Panel(gallery.source(i), gallery.names[i], f"#{r}  {score} {s:.3f}") for r, (i, s) in enumerate(pairs, 1)]
    out = render_panels(panels, cfg.render,
                        suptitle=f"top-{len(pairs)} by {gallery.embedder.kind} embedding ({cfg.method})")
    print(f"wrote {out}")


def groups_mode(cfg: SimConfig, gallery: Gallery) -> str:
    """The retrieval table of ``--groups``: the embedding (and, for a learned one, the same
    with the standardized features appended) beside every floor."""
    embedder = gallery.embedder
    models: list[tuple[str, Optional[np.ndarray]]] = []
    if embedder.kind not in FLOOR_KINDS:
        models.append((embedder.label, gallery.vectors))
    if embedder.learned:
        appended = None
        if bool(gallery.enc["has_gf"].all()):  # from the raw rows: with_features finalizes them itself
            rows = np.concatenate([gallery.rows, floor_raw("features", gallery.enc)], axis=1)
            appended = with_features(embedder).finalize(rows, rows)
        models.append((f"{embedder.label} + standardized features blocks", appended))
    table = evaluate_gallery(gallery, models, read_groups(cfg.groups), cfg.method, cfg.n_boot, cfg.seed)
    print(table)
    if embedder.learned:
        print("to search this gallery with the best embedding for it on these groups (a joint checkpoint): "
              "add --choose OUT.pth, then search with --model_path OUT.pth")
    return table


def choose_mode(cfg: SimConfig) -> dict:
    """--choose: score every candidate search embedding on the gallery's groups and write the
    checkpoint copy holding the best (``utils/retrieval/choice.py``)."""
    from utils.retrieval.choice import choice_files, choose_for_gallery, write_choice
    from utils.train.embedding_choice import choice_table

    embedder = parts_embedder(cfg.model_path, cfg.device)
    groups = read_groups(cfg.groups)
    gallery = open_gallery(cfg, cfg.gallery, embedder,
                           subset=lambda files: choice_files(files, groups, cfg.choose_max_drawings, cfg.seed))
    choice = choose_for_gallery(gallery, groups, cfg.groups)
    out = write_choice(cfg.model_path, cfg.choose, choice)
    print(f"chosen for this gallery: {choice['name']} [{choice['description']}]: {choice['why']}\n"
          + choice_table(choice))
    print(f"wrote {out}: search this gallery with --model_path {out} (--embedding auto uses the choice)")
    return {"embedding": choice["name"], "choice": choice, "checkpoint": str(out)}


def describe_embedding(embedder: Embedder) -> str:
    """One line: which embedding a run uses and why."""
    blocks = " + ".join(b.describe() for b in embedder.blocks)
    return f"embedding: {embedder.kind}" + (f" [{blocks}]" if blocks and len(embedder.blocks) > 1 else "") + \
        (f" ({embedder.why})" if embedder.why else "")


def serve_mode(cfg: SimConfig, embedder: Embedder) -> None:
    """--serve: the search page and JSON API over the gallery (``utils/retrieval/web``),
    opened with :func:`open_gallery` in the background; returns when the server stops."""
    try:
        from utils.retrieval.web.server import serve
    except ImportError as err:
        raise UsageError(f"--serve needs the web extra ({err.name} is not installed): pip install -e '.[web]'") \
            from None
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.gallery[0])
    serve(lambda emb, progress: open_gallery(cfg, cfg.gallery, emb, quiet=emb is not embedder, on_progress=progress),
          embedder, cache_dir / "thumbnails" if cfg.cache else None, describe_embedding(embedder), cfg.host, cfg.port,
          method=cfg.method, max_len=cfg.max_len, max_upload_mb=cfg.max_upload_mb, topk=cfg.topk)


def run(cfg: SimConfig) -> dict:
    """Run the command described by ``cfg``; returns what it printed, as values (for tests)."""
    if all(v is None for v in (cfg.file1, cfg.file2, cfg.query, cfg.export, cfg.groups, cfg.render)) \
            and not cfg.gallery and not cfg.serve:
        demo = sorted(Path(DEMO_FOLDER).glob("*.dxf"))
        if not demo:
            raise UsageError("nothing to do: give --file1 A --file2 B, or --gallery DIR with --query/--export/"
                             f"--groups (and {DEMO_FOLDER} holds no sample drawings for a demo: "
                             "run python dataset/dxf_process.py first)")
        print(f"no --file1/--file2 or --gallery given: demo query of {demo[0]} over {DEMO_FOLDER}/")
        cfg.gallery, cfg.query = [DEMO_FOLDER], str(demo[0])
    validate(cfg)
    if cfg.choose is not None:
        return choose_mode(cfg)
    embedder = make_embedder(cfg.model_path, cfg.embedding, cfg.device)
    if cfg.append_features and embedder.kind in FLOOR_KINDS:
        warn(f"--append_features ignored: --embedding {embedder.kind} is a non-learned embedding already")
    elif cfg.append_features:
        embedder = with_features(embedder)
    print(describe_embedding(embedder))
    result: dict = {"embedding": embedder.kind}
    if cfg.serve:
        serve_mode(cfg, embedder)
        return result
    if cfg.file1 is not None:
        result.update(pair_mode(cfg, embedder))
    if cfg.gallery and (cfg.query or cfg.export or cfg.groups):
        q_enc = load_drawing(cfg.query, cfg.max_len) if cfg.query is not None else None
        if q_enc is not None:  # an unusable query stops before the gallery is embedded
            embedder.check(q_enc)
        gallery = open_gallery(cfg, cfg.gallery, embedder)
        result.update(gallery_names=gallery.names, n_new=gallery.n_new, skipped=gallery.skipped)
        if q_enc is not None:
            result["topk"] = query_mode(cfg, q_enc, gallery)
        if cfg.export is not None:
            out = export_gallery(cfg.export, gallery)
            print(f"wrote {out}: {len(gallery.names)} embeddings of dimension {gallery.vectors.shape[1]}")
        if cfg.groups is not None:
            result["table"] = groups_mode(cfg, gallery)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a drawing cannot be used, 2 usage/model errors, 130 Ctrl-C)."""
    cfg = parse_config(SimConfig, argv, description=__doc__.split("\n\n")[0])
    try:
        run(cfg)
    except (UsageError, GalleryError, GroupsError, EmbedderError, ChoiceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DrawingError as err:
        print(f"error: cannot use {err.path}: {err.reason}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. an --export/--render path that cannot be written
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)", file=sys.stderr)
        return 130
    return 0


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``dxf-serve``: ``SimDeepDXF.py --serve`` (the same flags)."""
    return main(["--serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
