"""Hard negatives for the group term: batches of groups that the floors find alike.

With groups in a random order, a batch of ~90 drawings out of thousands rarely holds two
groups that counting confuses, so the group term's negatives are easy ones that the floors
already tell apart. ``--hard_negatives`` clusters the training groups by their floors (the
z-scored entity-type histogram, raw GF matrices and rotation-robust layout grid, one unit
block each; scikit-learn's k-means, about one batch of drawings per cluster) and lets
``dataset.loaders.joint.epoch_parts`` fill each batch with the groups of one cluster: the
negatives are then look-alikes (templates of one maker, sibling parts), what counting
cannot separate.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from model.floors import BLOCK_DIMS, floor_block, standardize
from utils.train.val_retrieval import floor_arrays

#: the floor blocks the clusters are made of
CLUSTER_BLOCKS = ("hist", "gf_raw", "layout_rot")


def floor_vectors(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """[n, D] unit-block floor vectors of the drawings in ``arrays`` (``val_retrieval.floor_arrays``):
    each block of :data:`CLUSTER_BLOCKS` z-scored over these drawings and L2-normalized."""
    raw = np.concatenate([floor_block(b, arrays) for b in CLUSTER_BLOCKS], axis=1)
    return standardize(raw, raw, [BLOCK_DIMS[b] for b in CLUSTER_BLOCKS])


def group_clusters(vectors: np.ndarray, group_ids: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """[n] cluster id of each drawing's group: k-means (``n_clusters``, at most one per group)
    over the groups' mean floor vectors, each group weighted by its size.

    Args:
        vectors: [n, D] floor vectors of the drawings (:func:`floor_vectors`).
        group_ids: [n] int group id of each drawing.
    """
    from sklearn.cluster import KMeans

    _, dense, sizes = np.unique(np.asarray(group_ids), return_inverse=True, return_counts=True)
    sums = np.zeros((len(sizes), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, dense, vectors)
    means = sums / sizes[:, None]
    k = int(min(max(1, n_clusters), len(sizes)))
    if k == 1:
        return np.zeros(len(dense), dtype=np.int64)
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(means, sample_weight=sizes.astype(np.float64))
    return km.labels_.astype(np.int64)[dense]


def training_clusters(dataset: Any, indices: Sequence[int], group_ids: np.ndarray, drawings_per_batch: int,
                      seed: int) -> np.ndarray:
    """[len(indices)] cluster ids of the groups of the training drawings ``indices`` (joint
    indices of ``dataset``), about ``drawings_per_batch`` drawings per cluster."""
    vectors = floor_vectors(floor_arrays(dataset, indices))
    n_clusters = max(1, round(len(indices) / max(1, drawings_per_batch)))
    return group_clusters(vectors, group_ids, n_clusters, seed)


__all__ = ["CLUSTER_BLOCKS", "floor_vectors", "group_clusters", "training_clusters"]
