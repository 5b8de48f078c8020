"""The gallery cache on the embedding store: the store-backed top-k and --groups equal the
exact numpy answer (also through the approximate index), a second query hashes, embeds
and loads nothing, changed files are re-embedded, deleted ones leave the results, and
the cache is appended to, never rewritten."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_similarity_cli import ODD_NAMES, corpus, write_drawing  # noqa: F401 (fixture)
from utils.retrieval import cache as embedding_cache
from utils.retrieval.embedders import Embedder, make_embedder
from utils.retrieval.encodings import DrawingEncoding, load_drawing, stack_encodings
from utils.retrieval.cache import EmbeddingCache
from utils.retrieval.store import EmbeddingStore
from utils.retrieval.gallery import Gallery, build_gallery, collect_files, evaluate_gallery

EXACT, APPROX = 1_000_000, 1  # exact_below: always exact / approximate from the first row


@pytest.fixture
def gallery_dir(corpus, tmp_path) -> Path:  # noqa: F811
    """Eight small DXF drawings in two folders (a copy: tests change files)."""
    g = tmp_path / "gallery"
    for k, name in enumerate(ODD_NAMES):
        write_drawing(g / "a" / f"{name}.dxf", n_lines=2 + 4 * k, n_circles=1 + 2 * k, shift=k)
    for k in range(5):
        write_drawing(g / "b" / f"图 {k}.dxf", n_lines=1 + 3 * k, n_circles=k % 3, shift=0.3 * k)
    return g


def _numpy_topk(q: np.ndarray, g: np.ndarray, k: int) -> list[int]:
    qn = q / np.linalg.norm(q)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return np.argsort(-(gn @ qn), kind="stable")[:k].tolist()


def _direct(files: list[tuple[Path, str]], embedder: Embedder) -> tuple[list, np.ndarray]:
    encs = [load_drawing(p) for p, _ in files]
    return encs, embedder.embed(encs)


@pytest.mark.parametrize("exact_below", [EXACT, APPROX])
def test_store_topk_and_groups_equal_the_exact_numpy_answer(corpus, gallery_dir, tmp_path, exact_below):  # noqa: F811
    embedder = make_embedder(corpus["deepdxf"])
    files = collect_files([gallery_dir])
    cache = EmbeddingCache(tmp_path / "cache", exact_below=exact_below)
    gallery = build_gallery(files, embedder, cache, quiet=True)
    assert len(gallery) == 8 and gallery.n_new == 8
    assert (tmp_path / "cache" / "models").is_dir()
    ann = list((tmp_path / "cache" / "models").glob("*/ann.faiss"))
    assert len(ann) == (1 if exact_below == APPROX else 0)  # built and saved once, at the end of the build
    encs, direct = _direct(files, embedder)
    order = [gallery.names.index(n) for _, n in files]
    np.testing.assert_allclose(gallery.rows[order], direct, atol=1e-5)
    for qi in range(len(files)):
        want = [files[j][1] for j in _numpy_topk(direct[qi], direct, 4)]
        got = [gallery.names[i] for i, _ in gallery.topk(direct[qi], 4)]
        assert got == want
    groups = [[f"a__{ODD_NAMES[0]}", "b__图 1", "b__图 3"], [f"a__{ODD_NAMES[1]}", "b__图 0"]]
    models = [("deepdxf", gallery.rows)]
    table = evaluate_gallery(gallery, models, groups, "cosine", n_boot=30, seed=0)
    reference = Gallery.from_arrays([n for _, n in files], [p for p, _ in files], embedder, direct,
                                    stack_encodings(encs))
    want_table = evaluate_gallery(reference, [("deepdxf", direct)], groups, "cosine", n_boot=30, seed=0)
    assert table.splitlines()[2:] == want_table.splitlines()[2:]  # same metrics, model and floors


def test_second_query_hashes_embeds_and_loads_nothing(corpus, gallery_dir, tmp_path, monkeypatch):  # noqa: F811
    hashed: list[str] = []
    original = embedding_cache.sha1_files
    monkeypatch.setattr(embedding_cache, "sha1_files", lambda paths, *a: hashed.append(paths) or original(paths, *a))
    embedder = make_embedder(corpus["gf"])
    files = collect_files([gallery_dir])
    build_gallery(files, embedder, EmbeddingCache(tmp_path / "cache"), quiet=True)
    assert len(hashed) == 8 and embedder.calls == 8
    loaded: list[int] = []
    monkeypatch.setattr(EmbeddingCache, "encodings_at", lambda self, rows: loaded.append(len(rows)))
    monkeypatch.setattr(EmbeddingStore, "vectors", lambda self, rows=None: loaded.append(-1))
    hashed.clear()
    gallery = build_gallery(files, embedder, EmbeddingCache(tmp_path / "cache"), quiet=True)
    q = load_drawing(gallery_dir / "a" / f"{ODD_NAMES[1]}.dxf")
    top = gallery.query(q, 3)
    assert hashed == [] and gallery.n_new == 0
    assert embedder.calls == 9  # the query only
    assert loaded == []  # neither the encodings nor the embeddings were read whole
    assert gallery.names[top[0][0]] == f"a__{ODD_NAMES[1]}" and top[0][1] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("exact_below", [EXACT, APPROX])
def test_changed_file_is_re_embedded_and_deleted_file_leaves_the_results(corpus, gallery_dir, tmp_path,  # noqa: F811
                                                                        exact_below):
    embedder = make_embedder(corpus["deepdxf"])
    cache_dir = tmp_path / "cache"
    first = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir, exact_below), quiet=True)
    old = dict(zip(first.names, first.rows))
    changed, deleted = gallery_dir / "b" / "图 2.dxf", gallery_dir / "b" / "图 4.dxf"
    write_drawing(changed, n_lines=20, n_circles=6)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10_000_000_000))
    deleted.unlink()
    files = collect_files([gallery_dir])
    cache = EmbeddingCache(cache_dir, exact_below)
    gallery = build_gallery(files, embedder, cache, quiet=True)
    assert gallery.n_new == 1 and len(gallery) == 7 and "b__图 4" not in gallery.names
    assert len(cache.model_store(embedder.identity)) == 9  # appended: the old rows stay, unused
    assert cache.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 7  # the deleted file is forgotten
    new = dict(zip(gallery.names, gallery.rows))
    assert not np.allclose(new["b__图 2"], old["b__图 2"])
    np.testing.assert_allclose(new["b__图 2"], embedder.embed([load_drawing(changed)])[0], atol=1e-5)
    for stale in ("b__图 4", "b__图 2"):  # the stale rows are the best match of their old vectors
        top = gallery.topk(old[stale], 7)
        assert len(top) == 7 and len({i for i, _ in top}) == 7
        names = [gallery.names[i] for i, _ in top]
        assert "b__图 4" not in names
        cur = np.stack([new[n] for n in names])
        want = old[stale] @ cur.T / np.linalg.norm(old[stale]) / np.linalg.norm(cur, axis=1)
        np.testing.assert_allclose([s for _, s in top], want, atol=1e-5)


def test_copies_of_one_drawing_are_embedded_once_and_both_found(corpus, gallery_dir, tmp_path):  # noqa: F811
    src = gallery_dir / "a" / f"{ODD_NAMES[2]}.dxf"
    (gallery_dir / "c").mkdir()
    (gallery_dir / "c" / "copy.dxf").write_bytes(src.read_bytes())
    embedder = make_embedder(corpus["deepdxf"])
    gallery = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(tmp_path / "cache"), quiet=True)
    assert len(gallery) == 9 and embedder.calls == 8
    top = gallery.query(load_drawing(src), 2)
    assert {gallery.names[i] for i, _ in top} == {f"a__{ODD_NAMES[2]}", "c__copy"}


def _synthetic_cache(folder: Path, archive: Path, n: int, dim: int, exact_below: int) -> tuple[list[Path], np.ndarray]:
    """A cache of ``n`` tiny stand-in files with clustered embeddings (as a first run leaves it)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n // 20, dim))
    emb = (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    archive.mkdir(parents=True)
    paths = [archive / f"d{i:05d}.dxf" for i in range(n)]
    for i, p in enumerate(paths):
        p.write_bytes(str(i).encode())
    cache = EmbeddingCache(folder, exact_below)
    keys = cache.content_keys(paths)
    for p, k in zip(paths, keys):
        cache.put_encoding(k, DrawingEncoding(str(p), str(p), np.zeros((1, 14), np.int32), np.ones(12, np.int64)))
    cache.put_embeddings("synthetic", keys, emb, [str(p) for p in paths])
    cache.close()
    return paths, emb


def test_approximate_gallery_search_agrees_with_exact_on_a_larger_gallery(tmp_path):
    pytest.importorskip("faiss")
    paths, emb = _synthetic_cache(tmp_path / "cache", tmp_path / "archive", 2000, 16, exact_below=100)
    embedder = Embedder("deepdxf", "synthetic", "synthetic", lambda encs: None, needs_gf=False, learned=True)
    gallery = build_gallery(collect_files([tmp_path / "archive"]), embedder,
                            EmbeddingCache(tmp_path / "cache", exact_below=100), quiet=True)
    assert gallery.n_new == 0 and len(gallery) == 2000
    store = gallery._store
    assert store.ann_index().nlist > 1  # a real inverted-file index, not one exhaustive list
    by_name = {n: i for i, n in enumerate(gallery.names)}
    row_of = np.array([by_name[p.stem] for p in paths])
    recall = []
    for qi in range(0, 2000, 40):
        top = gallery.topk(emb[qi], 10)
        assert gallery.names[top[0][0]] == paths[qi].stem  # a stored drawing finds itself first
        recall.append(len({i for i, _ in top} & set(row_of[_numpy_topk(emb[qi], emb, 10)].tolist())) / 10)
    assert np.mean(recall) >= 0.95


def test_cache_files_are_appended_not_rewritten(corpus, gallery_dir, tmp_path):  # noqa: F811
    embedder = make_embedder(corpus["gf"])
    cache_dir = tmp_path / "cache"
    build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    watched = [cache_dir / "cache.sqlite", cache_dir / "enc-00000.npy",
               *(cache_dir / "models").glob("*/shard-00000.npy"), *(cache_dir / "models").glob("*/index.sqlite")]
    assert len(watched) == 4
    inodes = [p.stat().st_ino for p in watched]
    write_drawing(gallery_dir / "b" / "new one.dxf", n_lines=30)
    gallery = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    assert gallery.n_new == 1 and len(gallery) == 9
    assert [p.stat().st_ino for p in watched] == inodes  # written in place


def test_damaged_or_old_cache_is_replaced_with_a_warning(corpus, gallery_dir, tmp_path, capsys):  # noqa: F811
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    (cache_dir / "files.json").write_text("{}")  # the older format's bookkeeping
    embedder = make_embedder(corpus["gf"])
    gallery = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    assert len(gallery) == 8 and "damaged" in capsys.readouterr().err
    assert not (cache_dir / "files.json").exists()
    again = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    assert again.n_new == 0


def test_a_cache_of_another_version_is_replaced_with_a_note_not_called_damaged(corpus, gallery_dir, tmp_path,  # noqa: F811
                                                                                capsys):
    import sqlite3

    from utils.retrieval.cache import CACHE_VERSION
    cache_dir = tmp_path / "cache"
    embedder = make_embedder(corpus["gf"])
    cache = EmbeddingCache(cache_dir)
    build_gallery(collect_files([gallery_dir]), embedder, cache, quiet=True)
    cache.close()
    with sqlite3.connect(cache_dir / "cache.sqlite") as db:  # as an older toolkit left it
        db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (CACHE_VERSION - 1,))
    capsys.readouterr()
    again = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    err = capsys.readouterr().err
    assert "another version of the toolkit" in err and "damaged" not in err
    assert again.n_new == 8  # encoded and embedded again with this version
    third = build_gallery(collect_files([gallery_dir]), embedder, EmbeddingCache(cache_dir), quiet=True)
    assert third.n_new == 0 and "another version" not in capsys.readouterr().err


def test_a_drawing_the_model_cannot_embed_is_not_encoded_again(corpus, tmp_path, monkeypatch):  # noqa: F811
    h5 = tmp_path / "pre" / "DeepDXF"
    h5.mkdir(parents=True)
    for p in corpus["h5"]:
        (h5 / p.name).write_bytes(p.read_bytes())
    twin = corpus["root"] / "pre" / "GF"
    (tmp_path / "pre" / "GF").mkdir()
    for p in corpus["h5"][1:]:  # the first .h5 has no GF twin: the GF model cannot embed it
        (tmp_path / "pre" / "GF" / f"{p.stem}.npz").write_bytes((twin / f"{p.stem}.npz").read_bytes())
    embedder = make_embedder(corpus["gf"])
    files = collect_files([h5])
    first = build_gallery(files, embedder, EmbeddingCache(tmp_path / "cache"), quiet=True)
    assert len(first) == 2 and "no GF twin" in first.skipped[0][1]
    from utils.retrieval import gallery as gallery_module
    monkeypatch.setattr(gallery_module, "run_tasks", lambda *a, **k: pytest.fail("encoded again"))
    second = build_gallery(files, embedder, EmbeddingCache(tmp_path / "cache"), quiet=True)
    assert len(second) == 2 and second.n_new == 0 and "no GF twin" in second.skipped[0][1]


def test_collected_names_follow_drawing_name(tmp_path):
    from dataset.dxf_read import drawing_name

    root = tmp_path / "archive"
    rels = ["top.dxf", "sub/a.b.DXF", "sub/deeper/第二 (x).dxf", "pre/DeepDXF/named.h5", "sub/.hidden.dxf",
            ".git/x.dxf", "sub/notes.txt"]
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"0")
    files = collect_files([root])
    want = {root / r: (drawing_name(root / r) if r.endswith(".h5") else drawing_name(root / r, root))
            for r in rels[:4]}
    assert dict(files) == want
    assert want[root / "sub/deeper/第二 (x).dxf"] == "sub__deeper__第二 (x)"


def test_an_unusable_cache_folder_gives_one_warning_and_the_run_goes_on(corpus, gallery_dir, tmp_path,  # noqa: F811
                                                                       capsys):
    from tests.test_similarity_cli import run_cli

    blocker = tmp_path / "not a folder"
    blocker.write_text("a file where the cache folder should be")
    code, out, err = run_cli(capsys, "--model_path", corpus["gf"], "--gallery", gallery_dir,
                             "--query", gallery_dir / "b" / "图 1.dxf", "--cache_dir", blocker / "cache")
    assert code == 0, err
    assert err.count("cannot use the embedding cache") == 1 and "--cache_dir" in err
    assert "8 drawings (8 embedded now" in out and "b__图 1" not in out.split("left out")[-1]
