"""DDP with 2 CPU processes (gloo): equal gradients on both ranks, the same stop decision,
and the same losses as one process with 2 accumulation steps on the same data; evaluation
counts every batch once; ranks agree on --resume without a shared filesystem."""
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from config.joint_config import JointConfig
from joint_train import TrainState, build_joint, evaluate, make_optimizer, train_epoch
from tests.synthetic import joint_data, write_synthetic_joint_corpus
from utils.train.amp import make_grad_scaler
from utils.train.distributed import DistInfo
from utils.train.schedule import make_lr_scheduler, plan_schedule

WORLD = 2


def _cfg(root, **kw):
    base = dict(data_dir=str(root), k_folds=2, GF_batch_size=3, GF_hidden=16, GF_proj_dim=16,
                DeepDXF_d_model=16, DeepDXF_heads=2, DeepDXF_layers=1, DeepDXF_proj_dim=16, DeepDXF_size_dim=4,
                DeepDXF_dropout=0.0, cross_weight=0.5, cross_dim=8, weighting="uncertainty", warmup_steps=0,
                grad_clip=0.0, GF_layout_features=False)  # mechanics tests: the 11 GF features
    base.update(kw)
    return JointConfig(**base)


def _main_argv(root, run):
    return ["--data_dir", str(root), "--k_folds", "2", "--fold", "0", "--epochs", "4", "--patience", "1",
            "--min_delta", "0.02", "--GF_batch_size", "3", "--GF_hidden", "16", "--GF_proj_dim", "16",
            "--DeepDXF_d_model", "16", "--DeepDXF_heads", "2", "--DeepDXF_layers", "1", "--DeepDXF_dropout", "0",
            "--cross_weight", "0.5", "--cross_dim", "8", "--lr", "3e-3", "--warmup_steps", "0",
            "--logs_dir", str(root / "logs"), "--checkpoints_dir", str(root / "ckpt"), "--run_name", run]


def _one_step(cfg, info, model_wrap=None):
    data, split = joint_data(cfg, info.rank, info.world_size)
    train, _ = data.fold_loaders(split, 0)
    train.set_epoch(1)
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, train.deepdxf_batch_size)
    model = model_wrap(obj) if model_wrap else obj
    opt = make_optimizer(obj, weighting, cfg)
    sched = make_lr_scheduler(opt, plan_schedule(1, cfg.epochs, cfg.warmup_steps))
    st = TrainState(obj, model, weighting, opt, sched, make_grad_scaler(torch.device("cpu"), None))
    row = train_epoch(st, train, cfg, info)
    grads = {n: p.grad.detach().clone() for n, p in obj.named_parameters() if p.grad is not None}
    grads.update({f"weighting.{n}": p.grad.detach().clone() for n, p in weighting.named_parameters()})
    return row, grads, train.n_batches


def _worker(rank, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import joint_main
    from utils.train.distributed import setup_distributed

    cfg = _cfg(root)
    info = setup_distributed(cfg.device, cfg.dist_backend)
    row, grads, _ = _one_step(cfg, info, lambda m: torch.nn.parallel.DistributedDataParallel(m))
    acc_cfg = _cfg(root, **ACC)
    acc_row, acc_grads, _ = _one_step(acc_cfg, info, lambda m: torch.nn.parallel.DistributedDataParallel(m))
    val = _evaluate_test(_cfg(root, GF_batch_size=1), info)
    summary = joint_main.main(_main_argv(root, "ddp"))
    torch.save({"row": row, "grads": grads, "summary": summary, "acc_row": acc_row, "acc_grads": acc_grads,
                "val": val}, out / f"rank{rank}.pt")


ACC = dict(GF_batch_size=1, accumulation_steps=2, max_steps_per_epoch=2)  # 2 ranks x 2 micro-batches


def _evaluate_test(cfg, info):
    """The test losses of a fixed model (an odd number of test batches)."""
    data, split = joint_data(cfg, info.rank, info.world_size)
    torch.manual_seed(0)
    obj, weighting = build_joint(cfg, 5)
    return evaluate(obj, weighting, data.test_loader(split), cfg, info), data.test_loader(split).n_batches


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_synthetic_joint_corpus(root, 30, seed=1, max_len=40)
    mp.spawn(_worker, args=(_free_port(), root, root), nprocs=WORLD, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


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


def test_ddp_with_accumulation_matches_one_process_with_the_same_micro_batches(ddp_run):
    root, ranks = ddp_run
    row, grads, _ = _one_step(_cfg(root, **dict(ACC, accumulation_steps=4, max_steps_per_epoch=4)), DistInfo())
    for r in ranks:
        for name in grads:
            assert torch.allclose(r["acc_grads"][name], grads[name], rtol=1e-4, atol=1e-6), name
        for key in ("train_loss", "train_GF_loss", "train_DeepDXF_loss", "objective"):
            assert r["acc_row"][key] == pytest.approx(row[key], rel=1e-5), key


def test_evaluation_on_two_ranks_equals_one_process(ddp_run):
    root, ranks = ddp_run
    single, n_batches = _evaluate_test(_cfg(root, GF_batch_size=1), DistInfo())
    assert n_batches % WORLD == 1  # the wrap-around of training would count a batch twice
    for r in ranks:
        val, _ = r["val"]
        for key in ("loss", "GF_loss", "DeepDXF_loss", "cross_loss", "chance_GF", "chance_DeepDXF"):
            assert val[key] == pytest.approx(single[key], rel=1e-5), key


def _resume_worker(rank, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ.pop("LOCAL_RANK", None)
    torch.set_num_threads(1)
    import joint_main

    argv = _main_argv(root, "res") + ["--resume"]
    if rank == 1:  # this rank's disk has no checkpoints (no shared filesystem)
        argv += ["--checkpoints_dir", str(root / "rank1_disk")]
    result = joint_main.main(argv)
    torch.save({"result": result}, out / f"resume{rank}.pt")


def test_ranks_agree_on_resume_without_a_shared_filesystem(ddp_run):
    import joint_main

    root, _ = ddp_run
    assert joint_main.main(_main_argv(root, "res") + ["--stop_after_epochs", "1"])["interrupted"]
    ctx = mp.start_processes(_resume_worker, args=(_free_port(), root, root), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.time() + 240
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank hung on --resume (ranks disagreed about last.pth)")
    results = [torch.load(root / f"resume{r}.pt", weights_only=True)["result"] for r in range(WORLD)]
    assert all(isinstance(r, dict) and r["world_size"] == WORLD for r in results)
    assert results[0]["folds"][0]["best_val_loss"] == pytest.approx(results[1]["folds"][0]["best_val_loss"])
