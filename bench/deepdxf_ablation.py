"""DeepDXF retrieval ablation on the labelled lead-frame dev set (the labelled set).

    python bench/deepdxf_ablation.py                       # the table of the report
    python bench/deepdxf_ablation.py --variants default mean_pool --seeds 0 1 2 --steps 150

Each variant trains a fresh model self-supervised (no labels) for ``--steps``
optimizer steps on every drawing of ``--data_dir`` (plus ``--extra_dirs``), then
embeds the whole gallery (``--data_dir``: the 26 dev drawings + 67 distractors, every
entity unless the variant truncates) and scores it with ``utils.retrieval`` against
``groups.json``. Printed beside the floors of bench/eval_leadframe_dev.py, per variant:
mean mAP over seeds (and each seed), the learned embedding alone (cosine), z-scored,
and appended to the standardized floor blocks (histogram + raw GF).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.bench_data import LABELLED_GROUPS  # noqa: E402
from config.DeepDXF_config import DeepDXFConfig  # noqa: E402
from utils.train.schedule import warmup_cosine  # noqa: E402
from dataset.loaders.deepdxf import load_deepdxf_dir, make_loader  # noqa: E402
from model.DeepDXF_model import build_deepdxf_model, deepdxf_step_loss, embed_sequences  # noqa: E402
from utils.retrieval import (bootstrap_interval, floor_embeddings, floor_table, format_table,  # noqa: E402
                             load_encodings, normalize_name, retrieval_metrics, standardize_blocks)
from utils.train.seed import seed_everything  # noqa: E402

NO_AUG = dict(DeepDXF_aug_crop=False, DeepDXF_aug_drop=False, DeepDXF_aug_jitter=False, DeepDXF_aug_shift=False)

#: name -> (config overrides, trained?, truncate drawings to this many entities (0 = all))
VARIANTS: dict[str, tuple[dict, bool, int]] = {
    "untrained": ({}, False, 0),
    "dropout_only": (NO_AUG, True, 0),
    "default": ({}, True, 0),
    "mean_pool": ({"DeepDXF_pooling": "mean"}, True, 0),
    "mean_pool_untrained": ({"DeepDXF_pooling": "mean"}, False, 0),
    "truncate_1024": ({}, True, 1024),
    "no_hist_in_head": ({"DeepDXF_hist_in_head": False}, True, 0),
    "windows_4": ({"DeepDXF_max_view_chunks": 4}, True, 0),
    "batch5": ({"DeepDXF_batch_size": 5}, True, 0),
    "strong_aug": ({"DeepDXF_aug_param_mask": True, "DeepDXF_param_mask_prob": 0.5, "DeepDXF_jitter": 8,
                    "DeepDXF_shift": 16, "DeepDXF_drop_prob": 0.3}, True, 0),
}


def train(cfg: DeepDXFConfig, arrays: list[np.ndarray], steps: int, seed: int,
          on_eval=None, eval_every: int = 0) -> tuple[torch.nn.Module, list[float]]:
    """A fresh model trained ``steps`` steps on all ``arrays`` (AdamW, warm-up + cosine, clipping).
    ``on_eval(model, step)`` is called every ``eval_every`` steps (and at step 0)."""
    seed_everything(seed)
    model = build_deepdxf_model(cfg)
    if steps <= 0:
        return model, []
    if on_eval is not None and eval_every > 0:
        on_eval(model, 0)
    loader = make_loader(arrays, cfg, train=True, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, steps))
    model.train()
    losses, step, epoch = [], 0, 0
    while step < steps:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            loss = deepdxf_step_loss(model, batch, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if on_eval is not None and eval_every > 0 and step % eval_every == 0:
                on_eval(model, step)
                model.train()
            if step >= steps:
                break
        epoch += 1
    return model, losses


def zscore(x: np.ndarray, fit_rows: list[int] | None) -> np.ndarray:
    ref = x[fit_rows] if fit_rows else x
    return (x - ref.mean(0)) / (ref.std(0) + 1e-8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default="data/real", help="gallery and training drawings (GF/ and DeepDXF/)")
    p.add_argument("--extra_dirs", nargs="*", default=[], help="more training drawings (e.g. data/thirdparty)")
    p.add_argument("--groups", default=str(LABELLED_GROUPS))
    p.add_argument("--variants", nargs="+", default=["untrained", "mean_pool_untrained", "dropout_only", "default",
                                                     "mean_pool", "truncate_1024", "strong_aug", "batch5"],
                   choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides for every variant, key=value")
    p.add_argument("--eval_every", type=int, default=0, help="also print the learned mAP every N steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    groups = json.loads(Path(args.groups).read_text(encoding="utf-8"))
    enc = load_encodings(args.data_dir)
    names, arrays = load_deepdxf_dir(args.data_dir)
    by_name = dict(zip(names, arrays))
    gallery = [by_name[n] for n in enc["names"]]
    train_arrays = list(arrays)
    for d in args.extra_dirs:
        train_arrays += load_deepdxf_dir(d)[1]
    labelled = {normalize_name(n) for g in groups for n in g}
    fit_rows = [i for i, n in enumerate(enc["names"]) if n not in labelled] or None
    floors = floor_embeddings(enc, fit_rows)
    hist, raw = floors["entity-type histogram log(1+count)"], floors["raw GF matrices"]

    base = DeepDXFConfig(DeepDXF_batch_size=args.batch_size)
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = type(getattr(base, k))(v) if not isinstance(getattr(base, k), bool) else v.lower() in ("1", "true", "yes")
    base = dataclasses.replace(base, **overrides)
    print(f"training on {len(train_arrays)} drawings, gallery {len(gallery)}, {args.steps} steps of "
          f"{base.DeepDXF_batch_size} drawings, seeds {args.seeds}, overrides {overrides}", flush=True)

    rows = floor_table(enc, groups, fit_rows=fit_rows)
    results: dict[str, dict] = {}
    for variant in args.variants:
        ov, trained, trunc = VARIANTS[variant]
        cfg = dataclasses.replace(base, **ov)
        train_set = [a[:trunc] for a in train_arrays] if trunc else train_arrays
        per_seed = {"learned": [], "learned z-scored": [], "learned + floors": []}
        per_query = {k: [] for k in per_seed}
        losses_end = []
        for seed in args.seeds:
            t0 = time.time()
            def on_eval(model, step, trunc=trunc, variant=variant, seed=seed):
                e = embed_sequences(model, gallery, max_len=trunc)
                print(f"  {variant} seed {seed} step {step}: learned mAP "
                      f"{retrieval_metrics(e, enc['names'], groups)['mAP']:.3f}", flush=True)

            model, losses = train(cfg, train_set, args.steps if trained else 0, seed, on_eval, args.eval_every)
            emb = embed_sequences(model, gallery, max_len=trunc)
            embs = {"learned": emb, "learned z-scored": zscore(emb, fit_rows),
                    "learned + floors": standardize_blocks([emb, hist, raw], fit_rows)}
            for k, e in embs.items():
                m = retrieval_metrics(e, enc["names"], groups)
                per_seed[k].append(m["mAP"])
                per_query[k].append(m["per_query_ap"])
            last = float(np.mean(losses[-10:])) if losses else float("nan")
            losses_end.append(last)
            print(f"{variant} seed {seed}: mAP learned {per_seed['learned'][-1]:.3f}, z-scored "
                  f"{per_seed['learned z-scored'][-1]:.3f}, +floors {per_seed['learned + floors'][-1]:.3f}; "
                  f"final train loss {last:.3f} (chance {np.log(2 * cfg.DeepDXF_batch_size - 1):.3f}); "
                  f"{time.time() - t0:.0f} s", flush=True)
        results[variant] = {"trained": trained, "mAP": per_seed, "final_train_loss": losses_end,
                            "per_query_ap_mean": {k: np.mean(v, 0).tolist() for k, v in per_query.items()}}

    print("\nfloors (bench/eval_leadframe_dev.py protocol):")
    print(format_table(rows))
    print(f"\n| variant | learned mAP (mean of {len(args.seeds)} seeds) | 95% CI (queries) | per seed | "
          f"z-scored | learned + floors | final train loss |")
    print("|---|---|---|---|---|---|---|")
    for variant, r in results.items():
        lo, hi = bootstrap_interval(r["per_query_ap_mean"]["learned"])
        m = r["mAP"]
        print(f"| {variant} | {np.mean(m['learned']):.3f} | {lo:.3f}–{hi:.3f} | "
              f"{' '.join(f'{x:.3f}' for x in m['learned'])} | {np.mean(m['learned z-scored']):.3f} | "
              f"{np.mean(m['learned + floors']):.3f} | {np.mean(r['final_train_loss']) if r['trained'] else float('nan'):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
