"""DDP with 2 CPU processes (gloo): equal gradients on both ranks, the same stop decision,
and the same losses as one process with 2 accumulation steps on the same data."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from config.joint_config import JointConfig
from joint_train import DistInfo, TrainState, build_joint, make_optimizer, make_scaler, make_scheduler, train_epoch
from model.joint_dataset import JointDataLoader
from tests.synthetic import write_synthetic_joint_corpus
from utils.splits import make_split

WORLD = 2


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=2, GF_batch_size=3, GF_hidden=16, GF_proj_dim=16,
                DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=16, DeepDXF_size_dim=4,
                DeepDXF_dropout=0.0, cross_weight=0.5, cross_dim=8, weighting="uncertainty", warmup_steps=0,
                grad_clip=0.0)
    base.update(kw)
    return JointConfig(**base)


def _main_argv(root, run):
    return ["--data_dir", str(root), "--k_folds", "2", "--fold", "0", "--epochs", "4", "--patience", "1",
            "--min_delta", "0.02", "--GF_batch_size", "3", "--GF_hidden", "16", "--GF_proj_dim", "16",
            "--DeepDXF_d_model", "16", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_dropout", "0",
            "--cross_weight", "0.5", "--cross_dim", "8", "--lr", "3e-3", "--warmup_steps", "0",
            "--logs_dir", str(root / "logs"), "--checkpoints_dir", str(root / "ckpt"), "--run_name", run]


def _one_step(cfg, info, model_wrap=None):
    data = JointDataLoader(cfg, info.rank, info.world_size, make_split=make_split)
    train, _ = data.get_fold_loaders(0)
    train.set_epoch(1)
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, train.deepdxf_batch_size)
    model = model_wrap(obj) if model_wrap else obj
    opt = make_optimizer(obj, weighting, cfg)
    st = TrainState(obj, model, weighting, opt, make_scheduler(opt, cfg, 1), make_scaler(cfg, torch.device("cpu")))
    row = train_epoch(st, train, cfg, info)
    grads = {n: p.grad.detach().clone() for n, p in obj.named_parameters() if p.grad is not None}
    grads.update({f"weighting.{n}": p.grad.detach().clone() for n, p in weighting.named_parameters()})
    return row, grads, train.n_batches


def _worker(rank, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import joint_main
    from joint_train import setup_distributed

    cfg = _cfg(root)
    info = setup_distributed(cfg)
    row, grads, _ = _one_step(cfg, info, lambda m: torch.nn.parallel.DistributedDataParallel(m))
    summary = joint_main.main(_main_argv(root, "ddp"))
    torch.save({"row": row, "grads": grads, "summary": summary}, out / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_synthetic_joint_corpus(root, 30, seed=1, max_len=40)
    mp.spawn(_worker, args=(_free_port(), root, root), nprocs=WORLD, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_gradients_equal_on_both_ranks_and_to_one_process_with_accumulation(ddp_run):
    root, ranks = ddp_run
    row, grads, n_batches = _one_step(_cfg(root, accumulation_steps=WORLD), DistInfo())
    assert n_batches % WORLD == 0
    g0, g1 = ranks[0]["grads"], ranks[1]["grads"]
    assert g0.keys() == g1.keys() == grads.keys()
    assert "weighting.log_vars" in g0  # the loss weights (outside DDP) are averaged too
    for name in grads:
        assert torch.allclose(g0[name], g1[name], rtol=1e-5, atol=1e-7), name
        assert torch.allclose(g0[name], grads[name], rtol=1e-4, atol=1e-6), name
    for key in ("train_loss", "train_GF_loss", "train_DeepDXF_loss", "train_cross_loss", "objective"):
        assert ranks[0]["row"][key] == pytest.approx(row[key], rel=1e-5), key
        assert ranks[1]["row"][key] == pytest.approx(row[key], rel=1e-5), key


def test_ranks_stop_together_with_the_losses_of_one_process(ddp_run):
    import joint_main

    root, ranks = ddp_run
    s0, s1 = ranks[0]["summary"], ranks[1]["summary"]
    single = joint_main.main(_main_argv(root, "single") + ["--accumulation_steps", str(WORLD)])
    f0, f1, fs = s0["folds"][0], s1["folds"][0], single["folds"][0]
    assert f0["epochs_run"] == f1["epochs_run"] == fs["epochs_run"]
    assert f0["best_epoch"] == f1["best_epoch"] == fs["best_epoch"]
    assert f0["best_val_loss"] == pytest.approx(f1["best_val_loss"], rel=1e-6)
    assert f0["best_val_loss"] == pytest.approx(fs["best_val_loss"], rel=1e-4)
    assert f0["test_loss"] == pytest.approx(fs["test_loss"], rel=1e-4)
    assert s0["world_size"] == 2 and single["world_size"] == 1
    assert (root / "ckpt" / "ddp" / "best_model.pth").is_file()
