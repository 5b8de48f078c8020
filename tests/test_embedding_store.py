"""The retrieval store: append without rewriting, exact search equals numpy, the
approximate index agrees with it, and a reopened store continues where it stopped."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from utils.retrieval.store import EmbeddingStore, StoreError


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 50), dim))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def _numpy_topk(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return np.argsort(-(qn @ gn.T), axis=1, kind="stable")[:, :k]


def test_exact_search_equals_numpy_across_shards(tmp_path):
    emb = _clustered(250, 16, 0)
    store = EmbeddingStore(tmp_path / "s", dim=16, shard_rows=64)
    rows = store.add([f"h{i}" for i in range(250)], [f"/a/{i}.dxf" for i in range(250)], emb)
    assert rows.tolist() == list(range(250))
    assert len(list(tmp_path.joinpath("s").glob("shard-*.npy"))) == 4
    q = _clustered(7, 16, 1)
    scores, found = store.search(q, k=5, exact=True, block_rows=50)
    assert np.array_equal(found, _numpy_topk(q, emb, 5))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(store.vectors(np.array([3, 200, 65])), emb[[3, 200, 65]])


def test_add_is_append_only_and_known_hashes_keep_their_row(tmp_path):
    store = EmbeddingStore(tmp_path / "s", dim=4, shard_rows=8)
    first = np.eye(4, dtype=np.float32)
    store.add(["a", "b", "c", "d"], ["A", "B", "C", "D"], first)
    shard = tmp_path / "s" / "shard-00000.npy"
    before = shard.stat().st_ino
    rows = store.add(["c", "e"], ["C2", "E"], np.ones((2, 4), np.float32))
    assert rows.tolist() == [2, 4]
    assert len(store) == 5
    assert shard.stat().st_ino == before  # written in place, not replaced
    np.testing.assert_allclose(store.vectors(np.array([2])), first[[2]])  # a known hash is not re-stored
    assert store.paths(np.array([2, 4])) == ["C2", "E"]


def test_failures_are_remembered_and_reopened_store_continues(tmp_path):
    with EmbeddingStore(tmp_path / "s", dim=3) as store:
        store.add(["x"], ["X"], np.ones((1, 3), np.float32))
        store.add_failures(["bad"], ["B.dxf"], ["not a DXF file"])
    with EmbeddingStore(tmp_path / "s") as again:
        assert len(again) == 1
        assert again.lookup(["bad", "x", "nope"]) == {"bad": (None, "not a DXF file"), "x": (0, None)}
        with pytest.raises(StoreError, match="holds 3-wide"):
            EmbeddingStore(tmp_path / "s", dim=5)


def test_new_store_needs_dim_and_shapes_are_checked(tmp_path):
    with pytest.raises(StoreError, match="needs the embedding width"):
        EmbeddingStore(tmp_path / "s")
    store = EmbeddingStore(tmp_path / "t", dim=3)
    with pytest.raises(StoreError, match="expected"):
        store.add(["a"], ["A"], np.ones((1, 4), np.float32))


def test_approximate_index_recall_and_incremental_add(tmp_path):
    pytest.importorskip("faiss")
    emb = _clustered(6000, 32, 2)
    store = EmbeddingStore(tmp_path / "s", dim=32, exact_below=1000)
    store.add([f"h{i}" for i in range(5000)], [""] * 5000, emb[:5000])
    q = emb[:200] + 0.05 * np.random.default_rng(3).normal(size=(200, 32)).astype(np.float32)
    _, approx = store.search(q, k=10)
    _, exact = store.search(q, k=10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95
    assert (tmp_path / "s" / "ann.faiss").exists()
    # rows added later are found without rebuilding the index from scratch
    store.add([f"h{i}" for i in range(5000, 6000)], [""] * 1000, emb[5000:])
    _, approx = store.search(emb[5500:5510], k=1)
    assert approx[:, 0].tolist() == list(range(5500, 5510))
    assert store.index_saves == 1  # extended in memory: the file is written once, at the end
    assert store.save_index() and not store.save_index()
    assert store._meta("index_rows") == 6000 and store._meta("index_trained_on") == 5000


def test_adding_rows_extends_the_index_in_memory_and_saves_it_once(tmp_path):
    pytest.importorskip("faiss")
    emb = _clustered(1600, 16, 4)
    store = EmbeddingStore(tmp_path / "s", dim=16, exact_below=0)
    store.add([f"h{i}" for i in range(1000)], [""] * 1000, emb[:1000])
    store.search(emb[:1], k=1)  # builds and saves the index
    index_file = tmp_path / "s" / "ann.faiss"
    stamp = (index_file.stat().st_ino, index_file.stat().st_mtime_ns)
    for s in range(1000, 1600, 200):  # three adds, each followed by a query
        store.add([f"h{i}" for i in range(s, s + 200)], [""] * 200, emb[s:s + 200])
        _, rows = store.search(emb[s + 7:s + 8], k=1)
        assert rows[0, 0] == s + 7
    assert (index_file.stat().st_ino, index_file.stat().st_mtime_ns) == stamp and store.index_saves == 1
    store.close()  # saved once, with every row
    again = EmbeddingStore(tmp_path / "s", exact_below=0)
    assert again.ann_index().ntotal == 1600 and again.index_saves == 0


def test_a_store_reopened_after_a_crash_adds_only_the_missing_tail_to_its_index(tmp_path):
    pytest.importorskip("faiss")
    emb = _clustered(1300, 16, 5)
    store = EmbeddingStore(tmp_path / "s", dim=16, exact_below=0)
    store.add([f"h{i}" for i in range(1000)], [""] * 1000, emb[:1000])
    store.ann_index()
    store.add([f"h{i}" for i in range(1000, 1300)], [""] * 300, emb[1000:])
    store.search(emb[:1], k=1)  # extended in memory, then the process dies: nothing saved
    store.db.close()
    again = EmbeddingStore(tmp_path / "s", exact_below=0)
    assert again.ann_index().ntotal == 1300  # 1000 from the file + the 300 missing, no duplicates
    _, rows = again.search(emb[1200:1210], k=1)
    assert rows[:, 0].tolist() == list(range(1200, 1210))


def test_a_tiny_store_can_be_searched_approximately(tmp_path):
    pytest.importorskip("faiss")
    emb = _clustered(10, 8, 6)
    store = EmbeddingStore(tmp_path / "s", dim=8, exact_below=0)
    store.add([f"h{i}" for i in range(10)], [""] * 10, emb)
    scores, rows = store.search(emb[:3], k=4)  # fewer rows than the default number of lists
    assert np.array_equal(rows, _numpy_topk(emb[:3], emb, 4))
    assert (rows >= 0).all()


def test_the_same_hash_twice_in_one_add_gets_one_row(tmp_path):
    store = EmbeddingStore(tmp_path / "s", dim=2)
    rows = store.add(["a", "b", "a"], ["A", "B", "A copy"], np.array([[1, 0], [0, 1], [1, 0]], np.float32))
    assert rows.tolist() == [0, 1, 0] and len(store) == 2
    assert store.lookup(["a"]) == {"a": (0, None)}


def _append_batches(folder: str, tag: str, dim: int) -> None:
    store = EmbeddingStore(folder, dim=dim)
    for b in range(25):
        hashes = [f"{tag}{b}-{i}" for i in range(8)]
        store.add(hashes, hashes, np.array([[zlib.crc32(h.encode()) % 1000] * dim for h in hashes], np.float32))
    store.close()


def test_two_processes_appending_to_one_store_keep_every_row_their_own(tmp_path):
    import multiprocessing as mp

    EmbeddingStore(tmp_path / "s", dim=4, shard_rows=64).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_batches, args=(str(tmp_path / "s"), tag, 4)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = EmbeddingStore(tmp_path / "s")
    assert len(store) == 400
    found = store.lookup([f"{t}{b}-{i}" for t in "ab" for b in range(25) for i in range(8)])
    rows = np.array([r for r, _ in found.values()])
    assert sorted(rows.tolist()) == list(range(400))
    want = np.array([[zlib.crc32(h.encode()) % 1000] * 4 for h in found], np.float32)
    np.testing.assert_array_equal(store.vectors(rows), want)
