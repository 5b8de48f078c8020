"""utils/ranking.py and utils/retrieval/evaluate.py: metrics against hand-computed values,
top-k, floors, bench CLI."""
import json
import math

import h5py
import numpy as np
import pytest

from model.floors import histogram_embedding, raw_gf_embedding, standardize
from tests.reference import average_precision, standardized_blocks
from utils.ranking import bootstrap_interval, metrics_from_relevance, paired_interval, retrieval_metrics
from utils.ranking import topk as rank_topk
from utils.retrieval.evaluate import floor_table, load_encodings


def test_metrics_from_relevance_by_hand():
    rel = np.array([[1, 0, 1, 0, 0, 0]], dtype=bool)  # 2 positives at ranks 1 and 3
    m = metrics_from_relevance(rel)
    assert m["AP"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["nDCG@10"][0] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["P@1"][0] == 1 and m["P@5"][0] == pytest.approx(0.4)
    assert m["R@10"][0] == 1 and m["RR"][0] == 1


def test_retrieval_metrics_on_a_tiny_ranking():
    # Points on a line, euclidean: a=0, b=3, c=1, d=10, e=2.5; groups {a,b}, {c,d}.
    x = np.array([[0.0], [3.0], [1.0], [10.0], [2.5]])
    names = ["a.dxf", "b", "c", "d", "e"]
    groups = [["a", "b.h5"], ["c", "d.dxf"], ["e", "not-there"]]
    m = retrieval_metrics(x, names, groups, method="euclidean")
    # a: c e b d -> b at 3; b: e c a d -> a at 3; c: a e b d -> d at 4; d: b e c a -> c at 3
    assert m["n_queries"] == 4 and m["n_gallery"] == 5
    assert m["queries"] == ["a.dxf", "b", "c", "d"]
    assert m["per_query_ap"] == pytest.approx([1 / 3, 1 / 3, 1 / 4, 1 / 3])
    assert m["mAP"] == pytest.approx((1 / 3 * 3 + 1 / 4) / 4)
    assert m["MRR"] == pytest.approx(m["mAP"])
    assert m["P@1"] == 0 and m["P@5"] == pytest.approx(0.2) and m["R@10"] == 1
    assert m["nDCG@10"] == pytest.approx((3 * 0.5 + 1 / math.log2(5)) / 4)
    assert m["missing"] == ["not-there"]


def test_perfect_embedding_and_cosine():
    x = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [-1.0, -1.0]])
    m = retrieval_metrics(x, ["a", "b", "c", "d", "e"], [["a", "b"], ["c", "d"]], method="cosine")
    for key in ("mAP", "P@1", "R@10", "nDCG@10", "MRR"):
        assert m[key] == pytest.approx(1.0)


def test_overlapping_groups_union_positives():
    x = np.array([[0.0], [1.0], [2.0], [50.0]])
    m = retrieval_metrics(x, ["a", "b", "c", "z"], [["a", "b"], ["b", "c"]], method="euclidean")
    # b is in both groups: its positives are a and c, its two nearest neighbours (AP 1)
    assert m["per_query_ap"][1] == pytest.approx(1.0)
    assert m["n_queries"] == 3


def test_rank_topk_matches_full_sort():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    for method in ("cosine", "euclidean"):
        idx, scores = rank_topk(q, g, 7, method)
        assert idx.shape == (3, 7) and np.all(np.diff(scores, axis=1) <= 1e-6)
        if method == "cosine":
            full = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
        else:
            full = -np.linalg.norm(q[:, None] - g[None], axis=2)
        assert np.array_equal(idx, np.argsort(-full, axis=1)[:, :7])
    one_idx, one_scores = rank_topk(q[0], g, 3)
    assert one_idx.shape == (3,) and one_idx[0] == rank_topk(q, g, 1)[0][0, 0]
    assert rank_topk(q[0], g[:2], 10)[0].shape == (2,)


def test_bootstrap_interval():
    assert bootstrap_interval([0.5] * 10) == pytest.approx((0.5, 0.5))
    vals = np.random.default_rng(1).uniform(size=30)
    lo, hi = bootstrap_interval(vals, seed=3)
    assert lo < vals.mean() < hi and (lo, hi) == bootstrap_interval(vals, seed=3)
    assert hi - lo < 0.35


def test_floor_embeddings():
    counts = np.array([[0, 1, 3] + [0] * 9, [2, 0, 0] + [0] * 9])
    assert np.allclose(histogram_embedding(counts)[0, :3], np.log([1, 2, 4]))
    f = np.arange(2 * 110, dtype=np.float32).reshape(2, 10, 11)
    a = np.ones((2, 10, 10), dtype=np.float32)
    raw = raw_gf_embedding(f, a)
    assert raw.shape == (2, 210) and raw[1, 0] == 110 and raw[0, 110:].sum() == 100
    rng = np.random.default_rng(0)
    b1, b2 = rng.normal(5, 3, (20, 4)), np.column_stack([rng.normal(size=20), np.ones(20)])
    both = np.concatenate([b1, b2], axis=1)
    z = standardize(both, both, [4, 2])
    assert z.shape == (20, 6) and np.isfinite(z).all()
    assert np.allclose(np.linalg.norm(z[:, :4], axis=1), 1) and np.allclose(np.linalg.norm(z[:, 4:], axis=1), 1)
    assert np.allclose(z[:, 5], 0)  # constant column: std 1, centred to 0
    np.testing.assert_allclose(z, standardized_blocks([b1, b2]), atol=1e-12)
    zf = standardize(b1, b1[:3], [4])
    np.testing.assert_allclose(zf, standardized_blocks([b1], fit_rows=[0, 1, 2]), atol=1e-12)
    unscaled = standardize(b1, None, [4])  # no reference: only unit rows
    np.testing.assert_allclose(unscaled, b1 / np.linalg.norm(b1, axis=1, keepdims=True), atol=1e-12)


def _write_data(root, names, seed=0):
    rng = np.random.default_rng(seed)
    (root / "GF").mkdir(parents=True)
    (root / "DeepDXF").mkdir(parents=True)
    for i, name in enumerate(names):
        base = rng.uniform(size=(10, 11)).astype(np.float32) + i // 2  # pairs look alike
        np.savez(root / "GF" / f"{name}.npz", features=base, adjacency=np.eye(10, dtype=np.float32)[::-1],
                 counts=np.arange(10, dtype=np.int64))
        with h5py.File(root / "DeepDXF" / f"{name}.h5", "w") as h:
            h.create_dataset("entities", data=np.zeros((3, 14), dtype=np.int32))
            h.attrs["type_counts"] = np.full(12, i // 2 + 1, dtype=np.int64)
    return names


def test_load_encodings_and_floor_table(tmp_path):
    names = _write_data(tmp_path, ["p Rev1_1", "p Rev1_2", "q（中）_1", "q（中）_2", "r_1", "r_2"])
    (tmp_path / "GF" / "only-gf.npz").write_bytes((tmp_path / "GF" / "r_1.npz").read_bytes())
    enc = load_encodings(tmp_path)
    assert enc["names"] == sorted(names)
    assert enc["gf_features"].shape == (6, 10, 11) and enc["type_counts"].shape == (6, 12)
    groups = [["p Rev1_1", "p Rev1_2"], ["q（中）_1.dxf", "q（中）_2"]]
    table = floor_table(enc, groups, n_random=3)
    assert [label for label, _ in table][1:] == [
        "entity-type histogram log(1+count)", "standardized entity-type histogram", "raw GF matrices",
        "standardized raw GF matrices", "standardized histogram + raw GF", "layout: entity types on an 8x8 grid",
        "layout, rotation-robust (grid pooled over 90° turns and flips)"]
    assert all(m["n_queries"] == 4 for _, m in table)
    assert enc["layout"].shape == (6, 12, 8, 8) and enc["layout"][:, 0].sum() == 6 * 3  # 3 LINE rows each
    with pytest.raises(FileNotFoundError, match="dxf_process.py"):
        load_encodings(tmp_path / "empty")


def test_bench_cli_prints_table(tmp_path, capsys):
    from bench.eval_leadframe_dev import main

    names = _write_data(tmp_path / "data", ["a_1", "a_2", "b_1", "b_2", "c"])
    (tmp_path / "groups.json").write_text(json.dumps([["a_1", "a_2"], ["b_1", "b_2"]]))
    emb = np.eye(5, dtype=np.float32)
    emb[1] = emb[0]
    np.savez(tmp_path / "model.npz", names=np.array([n + ".dxf" for n in names]), embeddings=emb)
    rc = main(["--data_dir", str(tmp_path / "data"), "--groups", str(tmp_path / "groups.json"),
               "--embeddings", str(tmp_path / "model.npz"), "--n_boot", "50"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| embedding | mAP | 95% CI (mAP) | P@1 | P@5 | R@10 | nDCG@10 | MRR |" in out
    model_line = [l for l in out.splitlines() if l.startswith("| model")][0]
    table_rows = [l for l in out.splitlines() if l.startswith("| ")]
    assert "queries: 4" in out and len(table_rows) == 1 + 1 + 1 + 7  # header, model, random, 7 floors
    assert "the floor to beat:" in out and "model:" in out
    # a_1/a_2 find each other at rank 1 (AP 1); b_1/b_2 are orthogonal to everything:
    # ties are broken by gallery index, the partner comes third (AP 1/3)
    assert float(model_line.split("|")[2]) == pytest.approx((1 + 1 + 1 / 3 + 1 / 3) / 4, abs=1e-3)


def test_nan_embedding_is_refused_by_name():
    x = np.array([[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="'b'"):
        retrieval_metrics(x, ["a", "b"], [["a", "b"]])


def test_metrics_score_only_the_query_rows(monkeypatch):
    """Ten drawings, one group of two: the similarity computed is [2, 10], not [10, 10]."""
    import utils.ranking as retrieval

    shapes = []
    original = retrieval.similarity_matrix

    def recording(a, b, method="cosine"):
        shapes.append((len(a), len(b)))
        return original(a, b, method)

    monkeypatch.setattr(retrieval, "similarity_matrix", recording)
    x = np.random.default_rng(0).normal(size=(10, 3))
    m = retrieval.retrieval_metrics(x, [f"d{i}" for i in range(10)], [["d3", "d7"]])
    assert shapes == [(2, 10)]
    full = original(x, x)
    # the same ranking as from the full matrix: d3's partner rank
    order = [j for j in np.argsort(-full[3], kind="stable") if j != 3]
    assert m["per_query"]["MRR"][0] == pytest.approx(1.0 / (order.index(7) + 1))


def test_average_precision_counts_positives_below_rank_ten():
    """AP runs over the whole ranking: a positive at rank 14 counts (an AP over the top 10
    only would give 1/2 here)."""
    rel = np.zeros((1, 20), dtype=bool)
    rel[0, [0, 13]] = True  # positives at ranks 1 and 14
    ap = metrics_from_relevance(rel)["AP"][0]
    assert ap == pytest.approx(average_precision(rel[0]))
    assert ap == pytest.approx((1 / 1 + 2 / 14) / 2)
    x = np.array([[0.0]] + [[float(i)] for i in range(1, 20)])  # euclidean: d0 ranks d1, d2, ... in order
    names = [f"d{i}" for i in range(20)]
    m = retrieval_metrics(x, names, [["d0", "d1", "d14"]], method="euclidean")
    assert m["per_query_ap"][0] == pytest.approx((1 / 1 + 2 / 14) / 2)


def test_paired_interval_resamples_the_per_query_differences():
    a = np.array([0.9, 0.8, 0.7, 0.6])
    assert paired_interval(a, a - 0.1) == pytest.approx((0.1, 0.1))
    lo, hi = paired_interval(a, a[::-1], n_boot=200, seed=1)
    assert lo < 0 < hi
    assert all(np.isnan(paired_interval(a, a[:3])))


def test_the_standardized_single_floors_are_each_block_zscored_with_the_set():
    from model.floors import FLOOR_KINDS, floor_embeddings, zscore_l2

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 9, (15, 12))
    feats = rng.random((15, 10, 11)).astype(np.float32)
    adj = (rng.random((15, 10, 10)) > 0.5).astype(np.float32)
    emb = floor_embeddings({"type_counts": counts, "gf_features": feats, "gf_adjacency": adj})
    hist, gf = histogram_embedding(counts), raw_gf_embedding(feats, adj)
    np.testing.assert_allclose(emb["hist_std"], zscore_l2(hist, hist), atol=1e-12)
    np.testing.assert_allclose(emb["gf_std"], zscore_l2(gf, gf), atol=1e-12)
    np.testing.assert_allclose(emb["features"], np.concatenate([emb["hist_std"], emb["gf_std"]], axis=1), atol=1e-12)
    assert FLOOR_KINDS["hist_std"] == ("hist",) and FLOOR_KINDS["gf_std"] == ("gf_raw",)
    # without GF matrices the GF floors are n/a, the histogram ones are not
    no_gf = floor_embeddings({"type_counts": counts, "has_gf": np.zeros(15, bool)})
    assert no_gf["gf_std"] is None and no_gf["hist_std"] is not None


def test_cluster_bootstrap_matches_a_slow_reference_and_singletons_equal_the_plain_bootstrap():
    from utils.ranking import bootstrap_interval

    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, 12)
    clusters = np.array([5, 5, 5, 2, 2, 9, 9, 9, 9, 1, 7, 7])
    lo, hi = bootstrap_interval(values, n_boot=300, seed=4, clusters=clusters)
    # slow reference: draw whole clusters (ids in sorted order) and average the values they hold
    ids = np.unique(clusters)
    draws = np.random.default_rng(4).integers(0, len(ids), size=(300, len(ids)))
    means = [np.concatenate([values[clusters == ids[k]] for k in row]).mean() for row in draws]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    # one query per cluster: exactly the query-level bootstrap
    assert bootstrap_interval(values, 300, 4, clusters=np.arange(12)) == pytest.approx(bootstrap_interval(values, 300, 4))
    # a cluster's values move together: the interval is wider than resampling queries one by one
    tied = np.repeat(rng.uniform(0, 1, 6), 10)
    groups = np.repeat(np.arange(6), 10)
    q_lo, q_hi = bootstrap_interval(tied, 2000, 0)
    c_lo, c_hi = bootstrap_interval(tied, 2000, 0, clusters=groups)
    assert c_hi - c_lo > 2 * (q_hi - q_lo)
