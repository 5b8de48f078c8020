"""The grouped train/validation/test split, saved with every run.

20 % of the drawings (by group) are held out as the test set; the rest is cut into
k grouped folds for cross validation. Revisions and pieces of one drawing
("QFN21LA(Cu) -508 Rev1_3", "... Rev1_5", "... Rev2_1") form one *group* and
always stay on one side of every cut. A group is the name with the match of a
regular expression removed (``dataset.names.group_of``, ``DEFAULT_GROUP_PATTERN`` by default).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from dataset.formats import DEFAULT_GROUP_PATTERN
from dataset.names import group_of

VAL_FRACTION_SINGLE = 0.1  # validation share when k_folds == 1


@dataclass
class Split:
    """A seeded grouped split of ``names``.

    Attributes:
        names: the drawing names, in the order the indices refer to.
        test: indices of the held-out test drawings (sorted).
        folds: ``folds[i] = (train, val)``, sorted index lists; their union with
            ``test`` covers every name, and each fold's ``val`` parts are disjoint.
        seed: the seed the split was drawn with.
        group_pattern: the grouping regex used.
    """

    names: list[str]
    test: list[int]
    folds: list[tuple[list[int], list[int]]]
    seed: int = 0
    group_pattern: str = DEFAULT_GROUP_PATTERN
    test_fraction: float = 0.2
    k_folds: int = 10
    groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = [group_of(n, self.group_pattern) for n in self.names]

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "test": [int(i) for i in self.test],
            "folds": [{"train": [int(i) for i in tr], "val": [int(i) for i in va]} for tr, va in self.folds],
            "seed": int(self.seed),
            "group_pattern": self.group_pattern,
            "test_fraction": float(self.test_fraction),
            "k_folds": int(self.k_folds),
            "groups": list(self.groups),
        }

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (names included, so it survives a changed data folder)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(
            names=list(d["names"]),
            test=[int(i) for i in d["test"]],
            folds=[([int(i) for i in f["train"]], [int(i) for i in f["val"]]) for f in d["folds"]],
            seed=int(d.get("seed", 0)),
            group_pattern=d.get("group_pattern", DEFAULT_GROUP_PATTERN),
            test_fraction=float(d.get("test_fraction", 0.2)),
            k_folds=int(d.get("k_folds", len(d["folds"]))),
            groups=list(d.get("groups", [])),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        """Read a split written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _grouped_holdout(
    indices: np.ndarray, group_ids: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (keep, held_out) by whole groups; held_out has
    ``ceil(fraction * n_groups)`` groups, at least 1 and at most n_groups - 1."""
    n_groups = len(np.unique(group_ids))
    n_held = min(max(1, math.ceil(fraction * n_groups)), n_groups - 1)
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
    keep, held = next(splitter.split(indices, groups=group_ids))
    return indices[keep], indices[held]


def make_split(
    names: Sequence[str],
    test_fraction: float = 0.2,
    k_folds: int = 10,
    seed: int = 0,
    group_pattern: str = DEFAULT_GROUP_PATTERN,
    groups: Optional[Sequence[str]] = None,
) -> Split:
    """Draw the grouped test split and the k grouped folds.

    Args:
        names: drawing names (no extension); index ``i`` of the result refers to ``names[i]``.
        test_fraction: share of groups held out as the test set (0 for none).
        k_folds: number of cross-validation folds of the rest; 1 means a single
            grouped 90/10 train/validation split. Reduced (with a warning) when
            there are fewer groups than folds.
        seed: the seed; the same seed and names give the same split.
        group_pattern: the grouping regex (see ``dataset.names.group_of``).
        groups: [len(names)] group label of every drawing, instead of the pattern's (e.g. the
            pattern's groups with a user's ``--groups`` merged in:
            ``utils.train.val_retrieval.merge_groups``); drawings of one label stay on one side.
    Returns:
        a :class:`Split`.
    """
    names = list(names)
    if not names:
        raise ValueError("cannot split an empty list of drawings")
    if len(set(names)) != len(names):
        raise ValueError("drawing names must be unique")
    if k_folds < 1:
        raise ValueError(f"k_folds must be >= 1, got {k_folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")

    if groups is None:
        groups = [group_of(n, group_pattern) for n in names]
    elif len(groups) != len(names):
        raise ValueError(f"{len(groups)} group labels for {len(names)} drawings")
    groups = [str(g) for g in groups]
    _, group_ids = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    rest, test = _test_part(group_ids, test_fraction, seed)
    folds = _folds(rest, group_ids[rest], k_folds, seed)
    return Split(
        names=names,
        test=sorted(test.tolist()),
        folds=folds,
        seed=int(seed),
        group_pattern=group_pattern,
        test_fraction=float(test_fraction),
        k_folds=len(folds),
        groups=groups,
    )


def _test_part(group_ids: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, test)`` positions: ``ceil(test_fraction * groups)`` whole groups held out,
    keeping at least two groups for training and validation (none held out below 3 groups)."""
    all_idx = np.arange(len(group_ids))
    n_groups = int(group_ids.max()) + 1
    if test_fraction > 0 and n_groups >= 3:
        n_held = min(max(1, math.ceil(test_fraction * n_groups)), n_groups - 2)
        splitter = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
        rest_pos, test_pos = next(splitter.split(all_idx, groups=group_ids))
        return all_idx[rest_pos], all_idx[test_pos]
    if test_fraction > 0:
        warnings.warn(f"only {n_groups} drawing group(s): no test set held out", RuntimeWarning, stacklevel=3)
    return all_idx, all_idx[:0]


def _folds(rest: np.ndarray, rest_groups: np.ndarray, k_folds: int,
           seed: int) -> list[tuple[list[int], list[int]]]:
    """The grouped ``(train, val)`` folds of the positions ``rest`` (groups ``rest_groups``):
    ``k_folds`` of them (fewer when there are fewer groups), one 90/10 cut for ``k_folds = 1``."""
    n_rest_groups = len(np.unique(rest_groups))
    k = k_folds
    if k > 1 and n_rest_groups < k:
        warnings.warn(f"{n_rest_groups} drawing group(s) outside the test set: {k_folds} folds reduced to "
                      f"{n_rest_groups}", RuntimeWarning, stacklevel=3)
        k = n_rest_groups
    if k >= 2:
        kfold = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(sorted(rest[tr].tolist()), sorted(rest[va].tolist()))
                for tr, va in kfold.split(rest, groups=rest_groups)]
    if n_rest_groups >= 2:
        train, val = _grouped_holdout(rest, rest_groups, VAL_FRACTION_SINGLE, seed)
        return [(sorted(train.tolist()), sorted(val.tolist()))]
    warnings.warn("a single drawing group: validation set is empty", RuntimeWarning, stacklevel=3)
    return [(sorted(rest.tolist()), [])]


__all__ = ["Split", "make_split"]
