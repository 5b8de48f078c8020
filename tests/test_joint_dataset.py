"""Joint batches: one split, equal batch counts, the same drawings for both models at each step."""
import numpy as np
import pytest
import torch

from config.joint_config import JointConfig
from dataset.loaders.joint import JointData, shard_parts
from tests.synthetic import fold_loaders, joint_data, write_synthetic_joint_corpus
from utils.train.loop import RunError, start_run
from utils.train.splits import make_split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint_corpus")
    write_synthetic_joint_corpus(root, 41, seed=3)
    (root / "GF" / "d0000_1.npz").unlink()  # a drawing with only its DeepDXF encoding
    return root


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=3, GF_batch_size=4, DeepDXF_d_model=16, DeepDXF_heads=2,
                GF_layout_features=False)
    base.update(kw)
    return JointConfig(**base)


def test_only_drawings_with_both_encodings_and_one_split(corpus):
    data, split = joint_data(_cfg(corpus))
    assert len(data.names) == 40 and "d0000_1" not in data.names
    assert data.only_deepdxf == ["d0000_1"]
    train, val = split.folds[0]
    assert set(train).isdisjoint(val) and set(train).isdisjoint(split.test)
    assert len(data.dataset) == 40 and data.layout == "folders"
    i = data.names.index("d0001_1")
    feats, adj = data.dataset.graph(i)
    assert feats.shape == (10, 11) and adj.shape == (10, 10)
    np.testing.assert_array_equal(feats, np.load(corpus / "GF" / "d0001_1.npz")["features"])
    assert "40 drawings with both encodings (0 with only a GF and 1 with only a DeepDXF encoding left out)" \
        in data.describe(split)


def test_a_given_split_is_used_as_is_and_must_be_of_the_joint_drawings(corpus, tmp_path):
    cfg = _cfg(corpus, logs_dir=str(tmp_path / "logs"), checkpoints_dir=str(tmp_path / "ckpt"))
    data = JointData(cfg)
    names = data.names
    other = make_split(names, 0.2, 3, seed=7)
    run = start_run(cfg, names, "joint", split=other)  # what a resumed run does with its saved split
    assert run.split is other
    assert data.test_loader(run.split).indices.tolist() == other.test
    with pytest.raises(RunError, match="other drawings"):
        start_run(cfg, names, "joint", split=make_split(names[1:], 0.2, 3, seed=7))


def test_equal_batch_counts_same_drawings_and_derived_batch_size(corpus):
    # views equal to their graphs (rates 0): the GF rows of a batch can be matched to its drawings
    cfg = _cfg(corpus, GF_feature_mask_rate=0.0, GF_edge_drop_rate=0.0, GF_edge_add_rate=0.0)
    data, split = joint_data(cfg)
    train, _ = data.fold_loaders(split, 0)
    n = len(train.indices)
    gf_batches = int(np.ceil(n / (2 * 4)))
    assert train.n_batches == gf_batches == len(train)
    assert train.deepdxf_batch_size == int(n / gf_batches)
    train.set_epoch(1)
    batches = list(train)
    assert len(batches) == gf_batches
    seen = []
    for b in batches:
        # GF pairs and the DeepDXF batch hold the same drawings (odd leftover: one partner from elsewhere)
        x1, x2 = b.gf_views.x[0], b.gf_views.x[2]  # view a of the first and of the second graphs
        assert x1.shape[0] <= 4 and x2.shape[0] <= 4
        assert b.deepdxf.index.tolist() == b.index.tolist()
        assert b.deepdxf.n_drawings in (train.deepdxf_batch_size, train.deepdxf_batch_size + 1)
        gf_rows = torch.cat([x1, x2])
        ours = torch.stack([torch.from_numpy(data.dataset.graph(int(i))[0]) for i in b.index])
        hits = sum(bool((gf_rows == ours[i]).all(-1).all(-1).any()) for i in range(len(b.index)))
        assert hits == len(b.index)
        assert torch.equal(b.gf_graphs.x, ours)  # the batch's own graphs, in order
        seen.extend(b.index.tolist())
    assert sorted(seen) == sorted(train.indices.tolist())  # every drawing once per epoch


def test_new_order_each_epoch_fixed_order_for_validation(corpus):
    data, split = joint_data(_cfg(corpus))
    train, val = data.fold_loaders(split, 1)
    train.set_epoch(1)
    a = [b.index.tolist() for b in train]
    train.set_epoch(2)
    b = [b.index.tolist() for b in train]
    assert a != b
    val.set_epoch(1)
    v1 = [b.index.tolist() for b in val]
    val.set_epoch(5)
    assert v1 == [b.index.tolist() for b in val]


def test_views_of_a_batch_do_not_depend_on_sharding(corpus):
    cfg = _cfg(corpus)
    one = fold_loaders(cfg, 0)[0]
    two = fold_loaders(cfg, 0, rank=1, world_size=2)[0]
    one.set_epoch(3)
    two.set_epoch(3)
    by_part = {b.part: b for b in one}
    for b in two:
        ref = by_part[b.part]
        assert torch.equal(b.deepdxf.view1.params, ref.deepdxf.view1.params)
        assert torch.equal(b.gf_views.x, ref.gf_views.x) and torch.equal(b.gf_views.adj, ref.gf_views.adj)


def test_shards_cover_every_part_with_equal_counts():
    for n, w in [(5, 2), (4, 2), (1, 3), (7, 4)]:
        shards = [shard_parts(n, r, w) for r in range(w)]
        assert len({len(s) for s in shards}) == 1
        assert set().union(*map(set, shards)) == set(range(n))
