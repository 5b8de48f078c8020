"""Training's retrieval check compares with the strongest non-learned floor on the same
drawings, names it, and takes a user's ``--groups`` as more queries."""
import csv
import json
import math

import numpy as np
import pytest

import joint_main
import joint_train
from config.joint_config import JointConfig
from dataset.dxf_process_DeepDXF import load_h5
from joint_train import build_joint
from model.floors import FLOOR_LABELS, floor_embeddings, layout_grid
from tests.synthetic import joint_data, write_synthetic_joint_corpus
from utils.ranking import retrieval_metrics
from utils.train.val_retrieval import merge_groups, pick_validation_drawings, strongest_floor, validation_retrieval

SMALL = dict(k_folds=2, GF_batch_size=3, GF_hidden=8, GF_proj_dim=8, GF_num_layers=1, DeepDXF_d_model=8,
             DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4, DeepDXF_chunk_len=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("val_floors")
    write_synthetic_joint_corpus(root, 24, seed=5, max_len=30)  # d<i>_1, d<i>_2: groups of two
    return root


def _floors_by_hand(root, names, groups):
    """Every floor's mAP from the files themselves (type counts from the .h5 attributes)."""
    from dataset.dxf_process_GF import load_gf

    feats, adjs, counts, layouts = [], [], [], []
    for n in names:
        gf = load_gf(root / "GF" / f"{n}.npz", keys=("features", "adjacency"))
        rows, attrs = load_h5(root / "DeepDXF" / f"{n}.h5")
        feats.append(gf["features"][:, :11])
        adjs.append(gf["adjacency"])
        counts.append(np.asarray(attrs["type_counts"]))
        layouts.append(layout_grid(rows))
    floors = floor_embeddings({"type_counts": np.stack(counts), "gf_features": np.stack(feats),
                               "gf_adjacency": np.stack(adjs), "layout": np.stack(layouts)})
    return {k: retrieval_metrics(e, names, groups)["mAP"] for k, e in floors.items()}


def test_the_check_compares_with_the_strongest_floor_and_names_it(corpus):
    cfg = JointConfig(data_dir=str(corpus), **SMALL)
    data, split = joint_data(cfg)
    obj, _ = build_joint(cfg, 4)
    drawings = pick_validation_drawings(range(len(data.names)), split.groups, 500)
    names = [data.names[i] for i in drawings]
    pairs: dict[str, list[str]] = {}
    for i, n in zip(drawings, names):
        pairs.setdefault(split.groups[i], []).append(n)
    want = _floors_by_hand(corpus, names, list(pairs.values()))
    assert set(want) == set(FLOOR_LABELS)
    got = validation_retrieval(obj, data.dataset, data.names, split.groups, drawings)
    for k, v in want.items():
        assert got[f"floor_{k}_mAP"] == pytest.approx(v), k
    best = max(want, key=want.get)
    assert got["floor_mAP"] == pytest.approx(want[best]) and strongest_floor(got) == best
    assert want[best] > want["gf_raw"]  # on this corpus the raw GF floor is not the strongest
    text = joint_train.describe_retrieval(got)
    assert f"strongest floor {best} {want[best]:.3f}" in text


def test_merge_groups_links_listed_drawings_across_pattern_groups():
    merged = merge_groups(["a", "b", "c", "d", "d"], [[0, 1], [1, 2]])
    assert merged[0] == merged[1] == merged[2] != merged[3] == merged[4]
    assert merge_groups(["a", "b"], []) == ["a", "b"]


def test_user_groups_make_queries_of_validation_drawings(corpus):
    cfg = JointConfig(data_dir=str(corpus), **SMALL)
    data, split = joint_data(cfg)
    obj, _ = build_joint(cfg, 4)
    singles = [str(i) for i in range(len(data.names))]  # as if no name shared a pattern group
    everything = list(range(len(data.names)))
    nothing = validation_retrieval(obj, data.dataset, data.names, singles, everything)
    assert math.isnan(nothing["retrieval_mAP"]) and math.isnan(nothing["floor_mAP"])
    listed = [[0, 5], [7, 9, 11]]
    assert pick_validation_drawings(everything, singles, 500) == []
    picked = pick_validation_drawings(everything, merge_groups(singles, listed), 5)
    assert picked == [0, 5, 7, 9, 11]  # the listed groups first and whole
    got = validation_retrieval(obj, data.dataset, data.names, singles, picked, listed)
    names = [data.names[i] for i in picked]
    want = _floors_by_hand(corpus, names, [[data.names[i] for i in g] for g in listed])
    assert got["floor_mAP"] == pytest.approx(max(want.values()))
    assert 0.0 < got["retrieval_mAP"] <= 1.0


def _argv(root, run, *extra):
    flags = [f"--{k}={v}" for k, v in SMALL.items()]
    return ["--data_dir", str(root), "--logs_dir", str(root / "logs"), "--checkpoints_dir", str(root / "ckpt"),
            "--run_name", run, "--epochs", "1", "--fold", "0", "--warmup_steps", "0", *flags, *extra]


def test_joint_main_groups_file_adds_the_check(corpus, tmp_path, capsys):
    no_pattern = ["--group_pattern", "NO-SUCH-SUFFIX$"]  # every drawing its own group: no check without --groups
    joint_main.main(_argv(corpus, "nogroups", *no_pattern))
    with open(corpus / "logs" / "nogroups" / "metrics.csv", encoding="utf-8") as fh:
        assert "val_retrieval_mAP" not in next(csv.DictReader(fh))
    pairs = [[f"d{i:04d}_1", f"d{i:04d}_2"] for i in range(12)] + [["not-a-drawing", "d0000_1"]]
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps(pairs), encoding="utf-8")
    joint_main.main(_argv(corpus, "usergroups", *no_pattern, "--groups", str(groups)))
    with open(corpus / "logs" / "usergroups" / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert all(0.0 < float(r["val_floor_mAP"]) <= 1.0 and 0.0 < float(r["val_retrieval_mAP"]) <= 1.0 for r in rows)
    best = strongest_floor({k: float(v) for k, v in rows[0].items() if "floor" in k})
    log = (corpus / "logs" / "usergroups" / "train.log").read_text(encoding="utf-8")
    assert f"the model is compared with the strongest, {best}" in log
    assert "1 name(s) not among them" in log
    assert "to choose on at least 10, validate on more of them: --k_folds 2" in log  # a handful of pairs validated
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert joint_main.main(_argv(corpus, "bad", "--groups", str(bad))) == 2
    assert "--groups" in capsys.readouterr().err


def test_both_archive_layouts_give_the_type_counts_before_any_cut(tmp_path):
    from dataset.archive import FolderArchive, PackedArchive, pack

    write_synthetic_joint_corpus(tmp_path, 6, seed=3, max_len=20)
    folders = FolderArchive(tmp_path)
    packed = PackedArchive(pack(tmp_path, shard_size=4, progress=False)[0].parent)
    assert folders.names() == packed.names()
    for i, name in enumerate(folders.names()):
        _, attrs = load_h5(tmp_path / "DeepDXF" / f"{name}.h5")
        want = np.asarray(attrs["type_counts"], dtype=np.int64)
        assert np.array_equal(folders.type_counts(i), want) and np.array_equal(packed.type_counts(i), want), name
    packed.close()


@pytest.mark.parametrize("keep", [True, False])
def test_joint_main_keeps_each_user_group_on_one_side_of_the_split(corpus, tmp_path, keep):
    no_pattern = ["--group_pattern", "NO-SUCH-SUFFIX$"]  # every drawing its own group by the pattern
    kinds = [[f"d{i:04d}_{p}" for i in range(k, 24, 4) for p in (1, 2)] for k in range(4)]  # 4 kinds of 12
    groups = tmp_path / "kinds.json"
    groups.write_text(json.dumps(kinds), encoding="utf-8")
    run = f"kinds_{keep}"
    flag = "--split_by_groups" if keep else "--no-split_by_groups"
    joint_main.main(_argv(corpus, run, *no_pattern, "--groups", str(groups), "--test_fraction", "0.25", flag))
    split = json.loads((corpus / "logs" / run / "split.json").read_text(encoding="utf-8"))
    kind_of = {n: k for k, g in enumerate(kinds) for n in g}
    side = lambda idx: {kind_of[split["names"][i]] for i in idx}  # noqa: E731
    train, val = split["folds"][0]["train"], split["folds"][0]["val"]
    log = (corpus / "logs" / run / "train.log").read_text(encoding="utf-8")
    if keep:  # validation and test hold kinds the model never trained on
        assert not side(train) & side(val) and not side(train) & side(split["test"])
        assert "each kept on one side of the split" in log
    else:
        assert side(train) & side(val)
        assert "split apart (--no-split_by_groups" in log
