"""--hard_negatives: batches of groups that the floors find alike."""
import numpy as np
import pytest

import joint_main
from dataset.loaders.joint import PartSampler, epoch_parts
from model.floors import BLOCK_DIMS
from tests.synthetic import fold_loaders, joint_data, write_synthetic_joint_corpus
from utils.train.hard_negatives import CLUSTER_BLOCKS, floor_vectors, group_clusters, training_clusters
from utils.train.val_retrieval import floor_arrays

from tests.test_group_term import _cfg


def _two_cluster_setup():
    """24 drawings in 12 groups of two; groups 0-5 in cluster 7, groups 6-11 in cluster 3."""
    groups = np.repeat(np.arange(12), 2)
    clusters = np.where(groups < 6, 7, 3)
    perm = np.random.default_rng(1).permutation(24)  # positions in any order
    return groups[perm], clusters[perm]


def test_each_batch_holds_the_groups_of_one_cluster():
    groups, clusters = _two_cluster_setup()
    for epoch in range(4):
        parts = epoch_parts(24, 2, seed=5, epoch=epoch, groups=groups, clusters=clusters)
        assert sorted(np.concatenate(parts).tolist()) == list(range(24))
        for p in parts:
            assert len(np.unique(clusters[p])) == 1  # one cluster of look-alikes per batch
            for g in np.unique(groups[p]):  # whole groups
                assert (groups[p] == g).sum() == (groups == g).sum()
    # without clusters the same seed mixes the two clusters in a batch
    mixed = epoch_parts(24, 2, seed=5, epoch=0, groups=groups)
    assert any(len(np.unique(clusters[p])) == 2 for p in mixed)


def test_hard_batches_are_seeded_and_change_with_the_epoch():
    groups, clusters = _two_cluster_setup()
    a = epoch_parts(24, 4, seed=5, epoch=1, groups=groups, clusters=clusters)
    b = epoch_parts(24, 4, seed=5, epoch=1, groups=groups, clusters=clusters)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    orders = {tuple(np.concatenate(epoch_parts(24, 4, seed=5, epoch=e, groups=groups, clusters=clusters)))
              for e in range(6)}
    assert len(orders) > 1
    # the clusters come in a random order: the first batch is not always of one cluster
    first = {int(clusters[epoch_parts(24, 4, seed=5, epoch=e, groups=groups, clusters=clusters)[0][0]])
             for e in range(12)}
    assert first == {3, 7}


def test_part_sampler_passes_clusters_and_checks_their_length():
    groups, clusters = _two_cluster_setup()
    indices = np.arange(100, 124)
    sampler = PartSampler(indices, 2, seed=5, groups=groups, clusters=clusters)
    for req in sampler:
        assert len(np.unique(clusters[req.index - 100])) == 1
    with pytest.raises(ValueError, match="cluster ids"):
        PartSampler(indices, 2, seed=5, groups=groups, clusters=clusters[:5])


def test_group_clusters_separate_far_groups_and_keep_a_group_together():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0.0], [-5.0, 0.0]])
    group_ids = np.repeat(np.arange(10), 3)
    side = (np.arange(10) % 2)[group_ids]  # even groups near one center, odd near the other
    vectors = centers[side] + 0.1 * rng.standard_normal((30, 2))
    labels = group_clusters(vectors, group_ids, n_clusters=2, seed=0)
    for g in range(10):
        assert len(np.unique(labels[group_ids == g])) == 1
    assert len(np.unique(labels[side == 0])) == 1 and len(np.unique(labels[side == 1])) == 1
    assert labels[side == 0][0] != labels[side == 1][0]
    # never more clusters than groups; one cluster is all zeros
    assert len(np.unique(group_clusters(vectors, group_ids, n_clusters=50, seed=0))) == 10
    assert not group_clusters(vectors, group_ids, n_clusters=1, seed=0).any()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard_negatives")
    write_synthetic_joint_corpus(root, 24, seed=4, max_len=30)  # names d<i>_1, d<i>_2: groups of two
    return root


def test_floor_vectors_are_unit_blocks_of_the_floors(corpus):
    data, split = joint_data(_cfg(corpus))
    idx = split.folds[0][0]
    vectors = floor_vectors(floor_arrays(data.dataset, idx))
    assert vectors.shape == (len(idx), sum(BLOCK_DIMS[b] for b in CLUSTER_BLOCKS))
    start = 0
    for b in CLUSTER_BLOCKS:
        block = vectors[:, start:start + BLOCK_DIMS[b]]
        start += BLOCK_DIMS[b]
        norms = np.linalg.norm(block, axis=1)
        assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_training_batches_follow_the_clusters(corpus):
    cfg = _cfg(corpus, hard_negatives=True, GF_batch_size=2)  # 4 drawings a batch: 2 clusters of the 8
    data, split = joint_data(cfg)
    train_idx = split.folds[0][0]
    group_ids = data.group_ids(split, train_idx)
    clusters = training_clusters(data.dataset, train_idx, group_ids, 2 * cfg.GF_batch_size, seed=0)
    assert len(clusters) == len(train_idx) and len(np.unique(clusters)) >= 2
    train, _ = data.fold_loaders(split, 0, clusters)
    of = dict(zip(train_idx, clusters))
    train.set_epoch(0)
    n_mixed = sum(len({of[i] for i in b.index.tolist()}) > 1 for b in train)
    n_batches = len(train)
    assert n_mixed < n_batches  # most batches hold one cluster (a cut may fall inside one)
    # the group term off: no groups, no clusters
    off = fold_loaders(_cfg(corpus, group_weight=0.0, hard_negatives=True), 0)[0]
    assert off.part_sampler.clusters is None


def test_joint_main_hard_negatives_logs_the_clusters(corpus):
    common = ["--data_dir", str(corpus), "--logs_dir", str(corpus / "logs"), "--checkpoints_dir",
              str(corpus / "ckpt"), "--epochs", "1", "--k_folds", "2", "--fold", "0", "--GF_batch_size", "3",
              "--GF_hidden", "8", "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8",
              "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4",
              "--DeepDXF_chunk_len", "16", "--warmup_steps", "0", "--hard_negatives"]
    common[common.index("--GF_batch_size") + 1] = "2"
    joint_main.main(common + ["--run_name", "hard"])
    log = (corpus / "logs" / "hard" / "train.log").read_text(encoding="utf-8")
    assert "hard negatives: 4 training groups in 2 clusters" in log
    joint_main.main(common + ["--run_name", "hard_off", "--group_weight", "0"])
    log = (corpus / "logs" / "hard_off" / "train.log").read_text(encoding="utf-8")
    assert "--hard_negatives ignored: the group term is off" in log
