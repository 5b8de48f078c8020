"""The group term of joint training: SupCon against a slow reference, group-keeping batches, end to end."""
import json
import math

import numpy as np
import pytest
import torch

import joint_main
from config.joint_config import JointConfig
from joint_train import build_joint
from model.DeepDXF_loss import nt_xent_loss
from dataset.loaders.joint import epoch_parts
from model.joint_loss import group_chance, group_contrastive_loss
from tests.synthetic import fold_loaders, joint_data, write_synthetic_joint_corpus
from dataset.names import group_of


def _slow_supcon(z: torch.Tensor, labels: list[int], tau: float) -> float:
    """SupCon "L_out" written anchor by anchor, pair by pair."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    m = len(labels)
    total, anchors = 0.0, 0
    for i in range(m):
        others = [a for a in range(m) if a != i]
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        pos = [p for p in others if labels[p] == labels[i]]
        if not pos:
            continue
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


def test_group_loss_matches_the_slow_reference():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 6, generator=g)
    labels = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5]  # 3 and 5: anchors without a positive
    got = group_contrastive_loss(z, torch.tensor(labels), 0.2).item()
    assert got == pytest.approx(_slow_supcon(z, labels, 0.2), rel=1e-5)


def test_group_loss_with_one_drawing_per_group_is_nt_xent():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    labels = torch.cat([torch.arange(7), torch.arange(7)])
    got = group_contrastive_loss(torch.cat([z1, z2]), labels, 0.15)
    assert got.item() == pytest.approx(nt_xent_loss(z1, z2, 0.15).item(), rel=1e-5)


def test_group_loss_edge_cases():
    same = torch.ones(6, 4)  # all alike: every candidate equal -> chance ln(2B - 1), B = 3
    assert group_contrastive_loss(same, torch.tensor([0, 1, 2, 0, 1, 2])).item() == pytest.approx(group_chance(3))
    z = torch.randn(3, 4, requires_grad=True)
    loss = group_contrastive_loss(z, torch.tensor([0, 1, 2]))  # no positive anywhere: 0, no NaN
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError):
        group_contrastive_loss(torch.randn(4, 3), torch.tensor([0, 1]))


def test_epoch_parts_keep_groups_together_and_are_seeded():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=200)
    parts = epoch_parts(200, 7, seed=3, epoch=2, groups=groups)
    order = np.concatenate(parts)
    assert sorted(order.tolist()) == list(range(200))
    # in the epoch's order every group is one run of consecutive positions
    seq = groups[order]
    runs = 1 + int((seq[1:] != seq[:-1]).sum())
    assert runs == len(np.unique(groups))
    again = epoch_parts(200, 7, seed=3, epoch=2, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = epoch_parts(200, 7, seed=3, epoch=3, groups=groups)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    # without groups: the plain seeded permutation, as before
    plain = np.concatenate(epoch_parts(200, 7, seed=3, epoch=2))
    assert np.array_equal(plain, np.random.default_rng([3, 2]).permutation(200))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("group_term")
    write_synthetic_joint_corpus(root, 24, seed=4, max_len=30)  # names d<i>_1, d<i>_2: groups of two
    return root


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=2, GF_batch_size=3, GF_hidden=8, GF_proj_dim=8, GF_num_layers=1,
                DeepDXF_d_model=8, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=8, DeepDXF_size_dim=4,
                DeepDXF_chunk_len=16, group_weight=1.0, warmup_steps=0, GF_layout_features=False)
    base.update(kw)
    return JointConfig(**base)


def test_batches_carry_group_ids_and_the_term_trains_both_models(corpus):
    data, split = joint_data(_cfg(corpus))
    train, _ = data.fold_loaders(split, 0)
    train.set_epoch(0)
    batches = list(train)
    seen = 0
    for b in batches:
        names = [data.names[i] for i in b.index.tolist()]
        ids = b.group.tolist()
        for i in range(len(names)):
            for j in range(len(names)):
                assert (ids[i] == ids[j]) == (group_of(names[i]) == group_of(names[j]))
        seen += len(ids) - len(set(ids))
    assert seen > 0  # some batch holds both pieces of a drawing
    cfg = _cfg(corpus)
    obj, _ = build_joint(cfg, train.deepdxf_batch_size)
    out = obj(batches[0])
    assert set(out) == {"GF", "DeepDXF", "cross", "group"} and out["group"].item() > 0
    out["group"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.gf.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.deepdxf.parameters())
    off = fold_loaders(_cfg(corpus, group_weight=0.0), 0)[0]
    assert next(iter(off)).group is None


def test_joint_main_with_the_group_term_logs_it(corpus):
    argv = ["--data_dir", str(corpus), "--logs_dir", str(corpus / "logs"), "--checkpoints_dir", str(corpus / "ckpt"),
            "--run_name", "group", "--epochs", "2", "--k_folds", "2", "--fold", "0", "--GF_batch_size", "3",
            "--GF_hidden", "8", "--GF_proj_dim", "8", "--GF_num_layers", "1", "--DeepDXF_d_model", "8",
            "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_proj_dim", "8", "--DeepDXF_size_dim", "4",
            "--DeepDXF_chunk_len", "16", "--warmup_steps", "0", "--group_weight", "0.5", "--weighting", "fixed"]
    summary = joint_main.main(argv)
    test = summary["test_terms_per_fold"]["0"]
    assert math.isfinite(test["group_loss"]) and test["chance_group"] > 0
    assert test["loss"] == pytest.approx(test["GF_loss"] + test["DeepDXF_loss"] + 0.5 * test["group_loss"], rel=1e-6)
    cfg = json.loads((corpus / "logs" / "group" / "config.json").read_text(encoding="utf-8"))
    assert cfg.get("group_weight", cfg.get("config", {}).get("group_weight")) == 0.5
    with pytest.raises(ValueError):
        JointConfig(group_weight=-1)


def test_metric_bench_learns_to_pull_groups_together():
    """bench/metric_ablation.py's learned metrics start at the identity and lower the group loss."""
    from bench.metric_ablation import apply_metric, learn_metric

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 5))
    groups = np.repeat(np.arange(6), 4)
    x = centres[groups] + 0.6 * rng.normal(size=(24, 5))
    x[:, 4] = rng.normal(size=24) * 5  # a noisy column the metric should learn to weigh down
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.as_tensor(groups)
    before = group_contrastive_loss(xt, yt).item()
    for kind in ("diag", "linear"):
        model = learn_metric(x, groups, kind, reg=1e-4, seed=0, steps=150, batch=24)
        with torch.no_grad():
            emb = apply_metric(model, kind, xt)
        assert emb.shape == (24, 5)
        assert group_contrastive_loss(emb, yt).item() < before - 0.1
