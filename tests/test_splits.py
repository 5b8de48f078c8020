"""dataset/names.py and utils/train/splits.py: grouping of names and the grouped test split + k folds."""
import warnings

import pytest

from dataset.formats import DEFAULT_GROUP_PATTERN
from dataset.names import group_of
from utils.train.splits import Split, make_split


@pytest.mark.parametrize(
    "a,b",
    [
        ("QFN21LA(Cu) -508 Rev1_5", "QFN21LA(Cu) -508 Rev1_3"),
        ("8-040116-SOP1(ETCH) REV A_1", "8-040116-SOP1(ETCH) REV A_2"),
        ("QFN-a_rev2", "QFN-a_rev0"),
        ("X Rev.2", "X_rev3"),
        ("X-r2", "X REV C"),
        ("DFN6V-226 Rev2_2", "DFN6V-226"),
    ],
)
def test_revisions_and_pieces_share_a_group(a, b):
    assert group_of(a) == group_of(b)


def test_group_names():
    assert group_of("QFN-a_rev2") == "QFN-a"
    assert group_of("SOP-c_rev0") == "SOP-c"
    assert group_of("QFN21LA(Cu) -508 Rev1_5") == "QFN21LA(Cu) -508"
    assert group_of("PREV2") == "PREV2"  # "REV" glued to a word is not a revision
    # a revision of a piece joins its piece's group; a suffix without a revision marker goes once
    assert group_of("011L185090DCE_1__rev0") == group_of("011L185090DCE_1") == "011L185090DCE"
    assert group_of("STD-55.5x229.4 REV 0__rev1") == group_of("STD-55.5x229.4 REV 0") == "STD-55.5x229.4"
    assert group_of("4222105_4230076_0117") == "4222105_4230076"
    assert group_of("4222105_4230076_0117__rev2") == "4222105_4230076"
    assert group_of("QFN-a") != group_of("QFN-b")


def _names():
    return [f"PKG{g:02d}-{g * 7} Rev{r}_{p}" for g in range(25) for r in (1, 2) for p in (1, 2)]


def test_split_covers_everything_once_and_keeps_groups_together():
    names = _names()
    s = make_split(names, test_fraction=0.2, k_folds=5, seed=3)
    assert len(s.folds) == 5
    groups = [group_of(n) for n in names]
    test_groups = {groups[i] for i in s.test}
    vals = [i for _, va in s.folds for i in va]
    assert sorted(vals + s.test) == list(range(len(names)))  # each once
    assert 0.15 <= len(s.test) / len(names) <= 0.25
    for train, val in s.folds:
        assert set(train).isdisjoint(val) and set(train).isdisjoint(s.test)
        assert sorted(train + val + s.test) == list(range(len(names)))
        tg, vg = {groups[i] for i in train}, {groups[i] for i in val}
        assert not (tg & vg) and not (tg & test_groups) and not (vg & test_groups)


def test_given_group_labels_replace_the_pattern_and_stay_on_one_side():
    names = [f"part{i:02d}" for i in range(40)]  # every name its own group by the pattern
    labels = [f"kind{i % 8}" for i in range(40)]  # 8 kinds of 5 drawings each
    s = make_split(names, test_fraction=0.2, k_folds=3, seed=0, groups=labels)
    assert s.groups == labels  # saved with the split
    sides = [set(s.test)] + [set(va) for _, va in s.folds]
    for kind in set(labels):
        members = {i for i, g in enumerate(labels) if g == kind}
        assert sum(bool(members & side) for side in sides) == 1  # in the test set or one fold's validation only
        for train, val in s.folds:
            assert not (members & set(train)) or not (members & (set(val) | set(s.test)))
    plain = make_split(names, test_fraction=0.2, k_folds=3, seed=0)
    assert any({labels[i] for i in tr} & {labels[i] for i in va} for tr, va in plain.folds)  # the pattern splits kinds
    with pytest.raises(ValueError, match="3 group labels for 40 drawings"):
        make_split(names, groups=["a", "b", "c"])


def test_same_seed_same_split_other_seed_differs():
    names = _names()
    a = make_split(names, seed=1, k_folds=4)
    b = make_split(names, seed=1, k_folds=4)
    c = make_split(names, seed=2, k_folds=4)
    assert a.test == b.test and a.folds == b.folds
    assert a.test != c.test or a.folds != c.folds


def test_save_load_round_trip(tmp_path):
    s = make_split(["a b（中）_1", "a b（中）_2", "c Rev1", "d", "e", "f"], k_folds=2, seed=5)
    path = s.save(tmp_path / "split.json")
    t = Split.load(path)
    assert t.names == s.names and t.test == s.test and t.folds == s.folds
    assert t.seed == 5 and t.group_pattern == DEFAULT_GROUP_PATTERN


def test_tiny_inputs_reduce_folds_with_warning():
    with pytest.warns(RuntimeWarning, match="reduced"):
        s = make_split(["a", "b", "c", "d"], k_folds=10, seed=0)
    assert len(s.test) == 1 and len(s.folds) == 3
    with pytest.warns(RuntimeWarning):
        one = make_split(["x_1", "x_2"], k_folds=3)
    assert one.test == [] and one.folds == [([0, 1], [])]


def test_single_fold_is_grouped_holdout():
    names = _names()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = make_split(names, k_folds=1, seed=0)
    (train, val), = s.folds
    assert len(val) > 0 and len(train) > len(val) * 4
    assert {group_of(names[i]) for i in train}.isdisjoint({group_of(names[i]) for i in val})


def test_seed_everything_reproduces_draws():
    import random

    import numpy as np
    import torch

    from utils.train.seed import seed_everything

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    assert draw() != a
