"""GF dataset: loading npz files and the pair batches."""
import numpy as np
import pytest
import torch

from config.GF_config import GFConfig
from dataset.archive import GF_DIR
from dataset.dxf_process_GF import gf_encode, save_gf
from dataset.loaders.gf import GFDataError, GFPairLoader, load_gf_graphs, pair_indices
from dataset.loaders.views import GFViewRates
from tests.synthetic import save_gf_npz, synthetic_gf_graphs


@pytest.mark.parametrize("n,bs", [(90, 45), (100, 45), (7, 2), (61, 45), (2, 45), (13, 3), (11, 3)])
def test_pairs_cover_every_graph_once_with_distinct_graphs_per_batch(n, bs):
    batches = pair_indices(n, bs, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([torch.cat(b) for b in batches]).tolist()
    assert set(seen) == set(range(n))
    # every graph once; with odd n exactly one graph (the leftover's partner) twice
    assert len(seen) == n + (n % 2)
    for first, second in batches:
        ids = torch.cat([first, second]).tolist()
        assert len(first) == len(second)
        if len(batches) > 1:
            assert len(set(ids)) == len(ids), "a batch must hold distinct graphs"
    # all batches but the last are full; the last holds the odd leftover
    assert all(len(f) == bs for f, _ in batches[:-1])
    assert 1 <= len(batches[-1][0]) <= bs + 1


def test_odd_leftover_meets_a_graph_of_another_batch():
    batches = pair_indices(11, 3, generator=torch.Generator().manual_seed(1))
    first, second = batches[-1]
    earlier = torch.cat([torch.cat(b) for b in batches[:-1]]).tolist()
    assert len(first) == 3  # 2 regular pairs + the leftover
    assert second[-1].item() in earlier


def test_pairing_is_seeded_and_changes_per_epoch():
    graphs = synthetic_gf_graphs(40, seed=0)
    rates = GFViewRates.of(GFConfig())
    loader = GFPairLoader(graphs, batch_size=5, rates=rates, shuffle=True, seed=3)
    e0 = [b[0].tolist() for b in loader.batches()]
    assert e0 == [b[0].tolist() for b in GFPairLoader(graphs, 5, rates, shuffle=True, seed=3).batches()]
    loader.set_epoch(1)
    assert [b[0].tolist() for b in loader.batches()] != e0
    fixed = GFPairLoader(graphs, 5, rates, shuffle=False, seed=3)
    fixed.set_epoch(7)
    assert [b[0].tolist() for b in fixed.batches()] == e0
    assert len(loader) == 4
    views = next(iter(loader))  # two views of both graphs of 5 pairs
    assert views.x.shape == (4, 5, 10, 11) and views.adj.shape == (4, 5, 10, 10) and views.mask1.dtype == torch.bool
    assert views.n_pairs == 5


def test_evaluation_pairs_and_views_are_the_same_at_every_pass():
    graphs = synthetic_gf_graphs(20, seed=1)
    loader = GFPairLoader(graphs, 4, GFViewRates.of(GFConfig()), shuffle=False, seed=3, view_seed=9)
    first = [v.x for v in loader]
    loader.set_epoch(5)
    assert all(torch.equal(a, b) for a, b in zip(first, [v.x for v in loader]))
    train = GFPairLoader(graphs, 4, GFViewRates.of(GFConfig()), shuffle=True, seed=3, view_seed=9)
    assert not all(torch.equal(a, b) for a, b in zip([v.x for v in train], [v.x for v in train]))


def test_load_npz_roundtrip(tmp_path):
    graphs = synthetic_gf_graphs(6, seed=1)
    save_gf_npz(graphs, tmp_path)
    loaded = load_gf_graphs(tmp_path)
    assert loaded.names == sorted(graphs.names)
    torch.testing.assert_close(loaded.features, graphs.features)
    assert torch.equal(loaded.adjacency, graphs.adjacency)
    assert torch.equal(loaded.mask, graphs.mask)
    sub = loaded.subset([4, 1])
    assert sub.names == [loaded.names[4], loaded.names[1]]


def test_missing_folder_says_how_to_create_it(tmp_path):
    with pytest.raises(GFDataError, match="dxf_process.py"):
        load_gf_graphs(tmp_path / "nothing")


def test_wrong_shape_names_the_file(tmp_path):
    (tmp_path / "GF").mkdir()
    np.savez(tmp_path / "GF" / "bad one.npz", features=np.zeros((9, 11), np.float32), adjacency=np.zeros((10, 10), np.float32))
    with pytest.raises(GFDataError, match="bad one.npz"):
        load_gf_graphs(tmp_path)


def test_preprocessing_output_loads_through_its_format_owner(tmp_path):
    boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [10, 10, 11, 11]], dtype=np.float64)
    enc = gf_encode(["LINE", "CIRCLE", "ARC"], boxes)
    (tmp_path / GF_DIR).mkdir()
    save_gf((tmp_path / GF_DIR) / "a drawing.npz", enc)
    loaded = load_gf_graphs(tmp_path)
    assert loaded.names == ["a drawing"]
    np.testing.assert_array_equal(loaded.features[0].numpy(), enc["features"])
    np.testing.assert_array_equal(loaded.adjacency[0].numpy(), enc["adjacency"])
    assert loaded.mask[0].sum() == 3


def test_a_file_without_adjacency_names_the_file(tmp_path):
    (tmp_path / GF_DIR).mkdir()
    save_gf((tmp_path / GF_DIR) / "half.npz", {"features": np.zeros((10, 11), np.float32)})
    with pytest.raises(GFDataError, match=r"half\.npz.*adjacency"):
        load_gf_graphs(tmp_path)


def test_synthetic_graphs_are_normalized_and_distinct():
    g = synthetic_gf_graphs(50, seed=0)
    col0 = g.features[:, :, 0].sum(1)
    torch.testing.assert_close(col0, torch.ones(50))
    rows = g.features[:, :, 1:].sum(-1)
    assert torch.all(((rows - 1).abs() < 1e-5) | (rows == 0))
    assert torch.equal(g.adjacency, g.adjacency.transpose(1, 2))
    assert len({tuple(f.flatten().tolist()) for f in g.features}) == 50
