"""joint_train.py: gradient accumulation, NaN/inf skipping, the cross-model term, the checkpoint contract."""
import copy

import numpy as np
import pytest
import torch

from config.joint_config import JointConfig
from joint_train import TrainState, build_joint, joint_state, make_optimizer, train_epoch
from model.DeepDXF_model import embed_sequences
from model.GF_model import embed_graphs
from model.joint_loss import TASKS, clip_loss
from tests.synthetic import fold_loaders, joint_data, test_loader, write_synthetic_joint_corpus
from utils.train.amp import amp_dtype, make_grad_scaler
from utils.train.checkpoint import load_checkpoint, load_trained_models, save_checkpoint
from utils.train.distributed import DistInfo
from utils.train.schedule import make_lr_scheduler, plan_schedule


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is faster (and steadier on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint_train_corpus")
    write_synthetic_joint_corpus(root, 30, seed=1, max_len=40)
    return root


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=2, GF_batch_size=3, GF_hidden=16, GF_proj_dim=16,
                DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=16, DeepDXF_size_dim=4,
                DeepDXF_dropout=0.0, cross_weight=0.5, cross_dim=8, weighting="fixed", w_GF=0.7, w_DeepDXF=1.3,
                warmup_steps=0, GF_layout_features=False)  # mechanics tests: the 11 GF features
    base.update(kw)
    return JointConfig(**base)


def _state(cfg, loader):
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, loader.deepdxf_batch_size)
    opt = make_optimizer(obj, weighting, cfg)
    plan = plan_schedule(1, cfg.epochs, cfg.warmup_steps)  # one optimizer step per epoch
    cpu = torch.device("cpu")
    return TrainState(obj, obj, weighting, opt, make_lr_scheduler(opt, plan),
                      make_grad_scaler(cpu, amp_dtype(cfg.amp, cfg.amp_dtype, cpu)))


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def test_accumulated_micro_batches_give_the_gradient_of_their_mean_loss(corpus):
    cfg = _cfg(corpus, accumulation_steps=2, max_steps_per_epoch=2, grad_clip=0.0)
    train, _ = fold_loaders(cfg, 0)
    train.set_epoch(1)
    assert len(train) == 2
    st = _state(cfg, train)
    ref = copy.deepcopy(st.objective)
    # reference: one backward of the mean of the two batch losses (the same seeded views)
    totals = []
    for b in train:
        t = ref(b)
        totals.append(0.7 * t["GF"] + 1.3 * t["DeepDXF"] + 0.5 * t["cross"] + t["group"])  # group term: default 1
    (0.5 * (totals[0] + totals[1])).backward()
    row = train_epoch(st, train, cfg, DistInfo())
    got, want = _grads(st.objective), _grads(ref)
    assert got.keys() == want.keys() and len(got) > 10
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name
    # logged losses are the unscaled batch means, not divided by accumulation_steps
    mean_total = float(np.mean([float(t.detach()) for t in totals]))
    assert row["objective"] == pytest.approx(mean_total, rel=1e-5)
    assert row["train_loss"] == pytest.approx(mean_total, rel=1e-5)  # fixed weights already sum to 2
    assert row["skipped_steps"] == 0


def test_nan_steps_are_skipped_and_counted(corpus):
    cfg = _cfg(corpus, max_steps_per_epoch=2)
    train, _ = fold_loaders(cfg, 0)
    train.set_epoch(1)
    st = _state(cfg, train)
    before = {n: p.detach().clone() for n, p in st.objective.named_parameters()}
    forward = st.objective.forward
    calls = []

    def poisoned(batch):
        out = forward(batch)
        calls.append(1)
        if len(calls) == 1:
            out["GF"] = out["GF"] * float("nan")
        return out

    st.objective.forward = poisoned
    st.model = st.objective
    row = train_epoch(st, train, cfg, DistInfo())
    assert row["skipped_steps"] == 1 and st.skipped_steps == 1
    after = dict(st.objective.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the second (good) step was taken


def test_cross_term_reaches_both_models_and_matches_clip_formula(corpus):
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    s = an @ bn.T / 0.1
    expect = 0.5 * (-(s.diag() - s.logsumexp(1)).mean() - (s.diag() - s.logsumexp(0)).mean())
    assert clip_loss(a, b, 0.1).item() == pytest.approx(expect.item(), rel=1e-5)
    assert clip_loss(a[:1], b[:1]).item() == 0.0
    cfg = _cfg(corpus)
    train, _ = fold_loaders(cfg, 0)
    obj, _ = build_joint(cfg, train.deepdxf_batch_size)
    out = obj(next(iter(train)))
    assert set(out) == {"GF", "DeepDXF", "cross", "group"} and all(v.dtype == torch.float32 for v in out.values())
    out["cross"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.gf.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.deepdxf.parameters())


def test_joint_checkpoint_gives_both_models(corpus, tmp_path):
    cfg = _cfg(corpus, weighting="uncertainty")
    data, split = joint_data(cfg)
    train, _ = data.fold_loaders(split, 0)
    obj, weighting = build_joint(cfg, train.deepdxf_batch_size)
    from config.cli import config_to_dict

    path = save_checkpoint(tmp_path / "j.pth", "joint", config_to_dict(cfg), joint_state(obj, weighting))
    ckpt = load_checkpoint(path, expect_kind="joint")
    assert set(ckpt["state"]) >= {"gf", "deepdxf", "weighting", "heads"}
    gf, dx = load_trained_models(path).gf, load_trained_models(path).deepdxf
    assert not gf.training and not dx.training
    for (n, p), q in zip(gf.state_dict().items(), obj.gf.state_dict().values()):
        assert torch.equal(p, q), n
    graphs = [data.dataset.graph(i) for i in range(4)]
    eg = embed_graphs(gf, np.stack([f for f, _ in graphs]), np.stack([a for _, a in graphs]))
    ed = embed_sequences(dx, [data.dataset.rows(i) for i in range(4)])
    assert eg.shape[0] == ed.shape[0] == 4 and np.isfinite(eg).all() and np.isfinite(ed).all()
    assert TASKS == ("GF", "DeepDXF")


def _lr0(**kw):
    return dict(lr=0.0, GF_lr=0.0, weight_lr=0.0, **kw)


def test_short_last_accumulation_window_is_scaled_by_its_own_size(corpus):
    """3 micro-batches, accumulation 2: the last window holds one batch, whose loss must
    not be halved. With lr 0 the gradients left after the epoch are that window's."""
    cfg = _cfg(corpus, GF_batch_size=1, accumulation_steps=2, max_steps_per_epoch=3, grad_clip=0.0, **_lr0())
    train, _ = fold_loaders(cfg, 0)
    train.set_epoch(1)
    assert len(train) == 3
    st = _state(cfg, train)
    ref = copy.deepcopy(st.objective)
    last = list(train)[-1]
    t = ref(last)
    (0.7 * t["GF"] + 1.3 * t["DeepDXF"] + 0.5 * t["cross"] + t["group"]).backward()
    train_epoch(st, train, cfg, DistInfo())
    got, want = _grads(st.objective), _grads(ref)
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-7), name


def test_gradient_clipping_clips_each_model(corpus):
    cfg = _cfg(corpus, max_steps_per_epoch=1, grad_clip=1e-3)
    train, _ = fold_loaders(cfg, 0)
    train.set_epoch(1)
    st = _state(cfg, train)
    row = train_epoch(st, train, cfg, DistInfo())
    assert row["grad_norm_GF"] > 1e-2 and row["grad_norm_DeepDXF"] > 1e-2  # norms before clipping
    for module in (st.objective.gf, st.objective.deepdxf):
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
        assert float(norm) == pytest.approx(1e-3, rel=1e-3)


def test_bf16_autocast_on_cpu_gives_finite_losses_close_to_fp32(corpus):
    from utils.train.amp import autocast

    cfg = _cfg(corpus, amp=True, amp_dtype="bf16")
    assert amp_dtype(cfg.amp, cfg.amp_dtype, torch.device("cpu")) == torch.bfloat16
    train, _ = fold_loaders(cfg, 0)
    train.set_epoch(1)
    st = _state(cfg, train)
    batch = next(iter(train))  # its views drawn: the same for both
    with torch.no_grad():
        full = st.objective(batch)
        with autocast("cpu", torch.bfloat16):
            half = st.objective(batch)
    for k in full:
        assert torch.isfinite(half[k]) and half[k].dtype == torch.float32
        assert float(half[k]) == pytest.approx(float(full[k]), rel=0.05, abs=0.02), k
    row = train_epoch(st, train, cfg, DistInfo())  # a whole epoch under CPU bf16 autocast
    assert np.isfinite(row["train_loss"]) and row["skipped_steps"] == 0


def test_ranks_share_initial_weights_but_not_dropout_masks(corpus):
    from joint_train import build_fold

    cfg = _cfg(corpus)
    train, _ = fold_loaders(cfg, 0)
    draws, states = [], []
    for rank in (0, 1):
        st = build_fold(cfg, train, DistInfo(rank=rank), fold=0)
        states.append(st.objective.state_dict())
        draws.append(torch.rand(8))  # what dropout would draw next on this rank
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(draws[0], draws[1])


def test_fp16_resume_from_a_checkpoint_without_scaler_state(corpus):
    cfg = _cfg(corpus)
    train, _ = fold_loaders(cfg, 0)
    saved = _state(cfg, train).state_dict()  # fp32 run: the disabled scaler saves {}
    assert saved["scaler"] == {}
    st = _state(cfg, train)
    st.scaler = torch.amp.GradScaler("cpu", enabled=True)  # resumed with fp16
    assert st.load_state_dict(saved) is False
    assert st.scaler.get_scale() == 65536.0


def test_evaluation_takes_every_batch_once_over_ranks(corpus):
    from joint_train import evaluation_batches

    cfg = _cfg(corpus, GF_batch_size=1)
    data, split = joint_data(cfg)
    parts = []
    for rank in range(2):
        loader = test_loader(cfg, rank=rank, world_size=2)
        parts += [b.part for b in evaluation_batches(loader)]
    n = data.test_loader(split).n_batches
    assert n % 2 == 1  # odd: training's wrap-around would repeat a batch
    assert sorted(parts) == list(range(n))


def test_printed_test_loss_adds_up(corpus):
    import re

    from joint_train import evaluate, explain_loss

    cfg = _cfg(corpus, weighting="uncertainty", max_steps_per_epoch=2)
    data, split = joint_data(cfg)
    train, val = data.fold_loaders(split, 0)
    train.set_epoch(1)
    st = _state(cfg, train)
    train_epoch(st, train, cfg, DistInfo())  # the weights move away from 1
    m = evaluate(st.objective, st.weighting, val, cfg, DistInfo())
    text = explain_loss(m, st.weighting, {"cross": cfg.cross_weight, "group": cfg.group_weight})
    terms = re.findall(r"([0-9.]+)·(GF|DeepDXF|cross|group) ([0-9.]+)", text)
    assert [t[1] for t in terms] == ["GF", "DeepDXF", "cross", "group"]
    assert sum(float(w) * float(v) for w, _, v in terms) == pytest.approx(m["loss"], abs=2e-3)
    assert "log σ² terms" in text and "normalized to sum to 2" in text
    reg = float(st.weighting.log_vars.detach().sum())
    assert f"{reg:+.4f}" in text
