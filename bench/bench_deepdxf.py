"""DeepDXF speed on CPU: training throughput and time to embed a gallery.

    python bench/bench_deepdxf.py [--data_dir data/real] [--steps 6] [--threads 2]

Training throughput is counted in *real* (non-padding) entities per second of both
views, for three ways of batching the same drawings:

* ``grouped``: length-grouped batches, chunks padded to the longest chunk of the batch
* ``random``: shuffled batches, chunks padded to the longest chunk of the batch
* ``random, pad to C``: shuffled batches, every chunk padded to ``chunk_len``

Then the time to embed every drawing of ``data_dir`` (all chunks, eval mode).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from config.DeepDXF_config import DeepDXFConfig  # noqa: E402
from dataset.loaders.deepdxf import DeepDXFCollate, DeepDXFDataset, LengthGroupedBatchSampler, load_deepdxf_dir  # noqa: E402
from model.DeepDXF_model import build_deepdxf_model, deepdxf_step_loss, embed_sequences  # noqa: E402


def train_throughput(arrays, cfg: DeepDXFConfig, grouped: bool, pad_to_chunk_len: bool, steps: int) -> dict:
    """Real entities/s and padding share over ``steps`` optimizer steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = build_deepdxf_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ds = DeepDXFDataset(arrays)
    sampler = LengthGroupedBatchSampler(ds.lengths, cfg.DeepDXF_batch_size, seed=0, grouped=grouped)
    collate = DeepDXFCollate(cfg, seed=0, pad_to_chunk_len=pad_to_chunk_len)
    batches = [collate([ds[i] for i in b]) for b in sampler.batches()]
    real = slots = 0
    elapsed = 0.0
    for k in range(steps + 1):
        batch = batches[k % len(batches)]
        t0 = time.perf_counter()
        loss = deepdxf_step_loss(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k == 0:
            continue  # warm-up step
        elapsed += time.perf_counter() - t0
        real += batch.n_entities
        slots += batch.view1.mask.numel() + batch.view2.mask.numel()
    return {"entities_per_s": real / elapsed, "padding": 1 - real / slots, "s_per_step": elapsed / steps}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default="data/real")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per setting")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=16)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names, arrays = load_deepdxf_dir(args.data_dir)
    lengths = np.array([a.shape[0] for a in arrays])
    cfg = dataclasses.replace(DeepDXFConfig(), DeepDXF_batch_size=args.batch_size)
    print(f"{len(arrays)} drawings from {args.data_dir}: entities median {int(np.median(lengths))}, "
          f"p90 {int(np.percentile(lengths, 90))}, max {lengths.max()}; batch {cfg.DeepDXF_batch_size}, "
          f"chunk {cfg.DeepDXF_chunk_len}, d_model {cfg.DeepDXF_d_model}, layers {cfg.DeepDXF_layers}, "
          f"{torch.get_num_threads()} threads")
    print("| batching | real entities/s | padding share | s/step |\n|---|---|---|---|")
    for label, grouped, pad in (("grouped", True, False), ("random", False, False), ("random, pad to C", False, True)):
        r = train_throughput(arrays, cfg, grouped, pad, args.steps)
        print(f"| {label} | {r['entities_per_s']:.0f} | {r['padding']:.1%} | {r['s_per_step']:.2f} |")
    model = build_deepdxf_model(cfg)
    t0 = time.perf_counter()
    emb = embed_sequences(model, arrays)
    dt = time.perf_counter() - t0
    print(f"embedding all {len(arrays)} drawings ({lengths.sum()} entities, every chunk): {dt:.1f} s "
          f"({lengths.sum() / dt:.0f} entities/s), embedding size {emb.shape[1]}")


if __name__ == "__main__":
    main()
