"""The retrieval check of joint training: which validation drawings it searches, and its numbers in the run."""
import csv
import math

import numpy as np
import pytest

import joint_main
from joint_train import build_joint
from tests.synthetic import joint_data, write_synthetic_joint_corpus
from config.joint_config import JointConfig
from model.floors import raw_gf_embedding
from utils.ranking import retrieval_metrics
from utils.train.splits import make_split
from utils.train.val_retrieval import pick_validation_drawings, validation_retrieval


def test_pick_takes_whole_groups_first_and_respects_the_cap():
    groups = ["a", "a", "b", "c", "c", "c", "d", "e", "e"]
    picked = pick_validation_drawings(range(9), groups, max_drawings=6, seed=0)
    assert len(picked) <= 6 and picked == sorted(picked)
    by_group = {}
    for i in picked:
        by_group.setdefault(groups[i], []).append(i)
    multi = {g for g in by_group if groups.count(g) >= 2}
    assert multi and all(len(by_group[g]) == groups.count(g) for g in multi)  # never half a group
    assert pick_validation_drawings(range(9), groups, 6, seed=0) == picked  # seeded
    assert pick_validation_drawings([0, 2, 3, 6], groups, 10) == []  # no group with two members here
    assert pick_validation_drawings(range(9), groups, 0) == []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("val_retrieval")
    write_synthetic_joint_corpus(root, 24, seed=5, max_len=30)  # d<i>_1, d<i>_2: groups of two
    return root


def test_validation_retrieval_is_the_joint_embedding_and_the_raw_gf_floor(corpus):
    cfg = JointConfig(data_dir=str(corpus), k_folds=2, GF_batch_size=3, GF_hidden=8, GF_proj_dim=8, GF_num_layers=1,
                      DeepDXF_d_model=8, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4,
                      DeepDXF_chunk_len=16)
    data, split = joint_data(cfg)
    obj, _ = build_joint(cfg, 4)
    drawings = pick_validation_drawings(range(len(data.names)), split.groups, 500)
    assert len(drawings) == len(data.names)
    got = validation_retrieval(obj, data.dataset, data.names, split.groups, drawings)
    assert 0.0 < got["retrieval_mAP"] <= 1.0
    graphs = [data.dataset.graph(i) for i in drawings]
    names = [data.names[i] for i in drawings]
    pairs = {}
    for i, n in zip(drawings, names):
        pairs.setdefault(split.groups[i], []).append(n)
    floor = retrieval_metrics(raw_gf_embedding(np.stack([f for f, _ in graphs]), np.stack([a for _, a in graphs])),
                              names, list(pairs.values()))
    assert got["floor_gf_raw_mAP"] == pytest.approx(floor["mAP"])
    assert got["floor_mAP"] >= got["floor_gf_raw_mAP"]  # the strongest floor (tests/test_val_retrieval_floors.py)
    nothing = validation_retrieval(obj, data.dataset, data.names, split.groups, drawings[:1])
    assert all(math.isnan(v) for v in nothing.values())


def test_joint_main_logs_the_retrieval_check_each_epoch(corpus):
    argv = ["--data_dir", str(corpus), "--logs_dir", str(corpus / "logs"), "--checkpoints_dir", str(corpus / "ckpt"),
            "--run_name", "ret", "--epochs", "2", "--k_folds", "2", "--fold", "0", "--GF_batch_size", "3",
            "--GF_hidden", "8", "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8",
            "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4",
            "--DeepDXF_chunk_len", "16", "--warmup_steps", "0"]
    summary = joint_main.main(argv)
    with open(corpus / "logs" / "ret" / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert all(0.0 < float(r["val_retrieval_mAP"]) <= 1.0 and 0.0 < float(r["val_floor_mAP"]) <= 1.0 for r in rows)
    test = summary["test_terms_per_fold"]["0"]
    assert 0.0 < test["retrieval_mAP"] <= 1.0
    log = (corpus / "logs" / "ret" / "train.log").read_text(encoding="utf-8")
    assert "retrieval check on" in log and "strongest floor" in log
    off = joint_main.main(argv[:7] + ["ret_off"] + argv[8:] + ["--val_retrieval", "0"])
    assert "retrieval_mAP" not in off["test_terms_per_fold"]["0"]
