"""Speed of GF training on CPU: graphs/s and the time of one 50-epoch fold.

    python bench/bench_gf.py                       # 16,000 synthetic 10-node graphs, 2 measured epochs
    python bench/bench_gf.py --epochs_measured 50  # the whole fold, no extrapolation
    python bench/bench_gf.py --threads 1 2         # compare torch thread counts
    python bench/bench_gf.py --dev                 # retrieval on the lead-frame dev set, untrained vs trained
    python bench/bench_gf.py --load 20000          # GF_main's start: reading the graphs, folders vs packed

One fold is what ``GF_main.py`` runs per fold with the default settings: the 20 %
test split and 10 folds of ``utils/train/splits.py`` (so ~72 % of the graphs train, ~8 %
validate), ``GF_batch_size=45`` pairs, AdamW with gradient clipping, a validation
loss every epoch. The script times ``--epochs_measured`` epochs (after one warm-up
step) and extrapolates to ``--epochs`` (50); it says when it extrapolated.
The target (issue 3) is ≤ 10 minutes per 50-epoch fold on 2 CPU cores.

``--load N``: writes N synthetic drawings (both encodings) to a temporary folder and
times ``load_gf_graphs`` from the per-drawing ``GF/*.npz`` files and from the packed
shards of ``dataset/pack.py`` (warm file cache both times).

``--dev``: self-supervised training on every preprocessed real drawing of
``--real_dir`` (no labels are used; the 26 labelled ones are among them), then mAP
on ``$DXF_BENCH_DIR/leadframe-dev/groups.json`` (``bench/bench_data.py``) (26 queries, 93-drawing gallery) of
the encoder embedding before and after training, per seed, beside the raw GF floor.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.bench_data import LABELLED_GROUPS  # noqa: E402
from config.GF_config import GFConfig  # noqa: E402
from dataset.loaders.gf import GFPairLoader  # noqa: E402
from dataset.loaders.views import GFViewRates  # noqa: E402
from GF_main import evaluate  # noqa: E402
from model.GF_model import build_gf_model  # noqa: E402
from tests.synthetic import synthetic_gf_graphs  # noqa: E402
from utils.train.splits import make_split  # noqa: E402

DEV_GROUPS = LABELLED_GROUPS


def time_fold(n_graphs: int, epochs_measured: int, threads: int, cfg: GFConfig) -> dict[str, float]:
    """Train ``epochs_measured`` epochs of fold 0 on synthetic graphs; return timings."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    graphs = synthetic_gf_graphs(n_graphs, seed=cfg.seed)
    split = make_split(graphs.names, cfg.test_fraction, cfg.k_folds, cfg.seed, r"$^")  # every name its own group
    train_idx, val_idx = split.folds[0]
    rates = GFViewRates.of(cfg)
    train = GFPairLoader(graphs.subset(train_idx), cfg.GF_batch_size, rates, shuffle=True, seed=cfg.seed,
                         view_seed=cfg.seed)
    val = GFPairLoader(graphs.subset(val_idx), cfg.GF_batch_size, rates, shuffle=False, seed=cfg.seed,
                       view_seed=cfg.seed)
    model = build_gf_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(views) -> float:
        loss = model.loss(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    step(next(iter(train)))  # warm-up
    train_s = val_s = 0.0
    first = last = float("nan")
    for epoch in range(epochs_measured):
        train.set_epoch(epoch)
        t0 = time.perf_counter()
        losses = [step(b) for b in train]
        t1 = time.perf_counter()
        vl = evaluate(model, val)["loss"]
        t2 = time.perf_counter()
        train_s += t1 - t0
        val_s += t2 - t1
        first = sum(losses) / len(losses) if epoch == 0 else first
        last = vl
    graphs_per_epoch = sum(2 * len(f) for f, _ in train.batches())
    epoch_s = (train_s + val_s) / epochs_measured
    return {
        "threads": threads,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "steps_per_epoch": len(train),
        "train_graphs_per_s": graphs_per_epoch * epochs_measured / train_s,
        "epoch_s": epoch_s,
        "val_s_per_epoch": val_s / epochs_measured,
        "fold_min": epoch_s * cfg.epochs / 60,
        "first_train_loss": first,
        "last_val_loss": last,
    }


def dev_retrieval(real_dir: str, groups_path: Path, seeds: int, epochs: int, cfg: GFConfig) -> int:
    """Print dev-set mAP of GF embeddings (every pooling) untrained vs trained, per seed."""
    import json

    from dataset.loaders.gf import load_gf_graphs
    from model.GF_model import embed_graphs
    from model.floors import raw_gf_embedding
    from utils.ranking import retrieval_metrics

    if not groups_path.is_file():
        print(f"error: no dev groups at {groups_path}", file=sys.stderr)
        return 2
    groups = json.loads(groups_path.read_text(encoding="utf-8"))
    graphs = load_gf_graphs(real_dir)
    torch.set_num_threads(1)

    def m_ap(emb) -> float:
        return retrieval_metrics(emb, graphs.names, groups)["mAP"]

    raw = m_ap(raw_gf_embedding(graphs.features.numpy(), graphs.adjacency.numpy()))
    print(f"{len(graphs)} drawings from {real_dir}; raw GF matrices mAP {raw:.3f}; "
          f"training {epochs} epochs on all of them, {cfg.GF_batch_size} pairs/batch")
    poolings = ("concat", "mean", "concat_input")
    print("| seed | " + " | ".join(f"{p} untrained | {p} trained" for p in poolings) + " | last train loss |")
    print("|---" * (2 * len(poolings) + 2) + "|")
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build_gf_model(cfg)
        before = [m_ap(embed_graphs(model, graphs.features, graphs.adjacency, pooling=p)) for p in poolings]
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loader = GFPairLoader(graphs, cfg.GF_batch_size, GFViewRates.of(cfg), shuffle=True, seed=seed, view_seed=seed)
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for views in loader:
                loss = model.loss(views)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
        after = [m_ap(embed_graphs(model, graphs.features, graphs.adjacency, pooling=p)) for p in poolings]
        cells = " | ".join(f"{b:.3f} | {a:.3f}" for b, a in zip(before, after))
        print(f"| {seed} | {cells} | {loss.item():.3f} |", flush=True)
    print("the dev set has 6 groups: differences below ~0.05-0.08 mAP are noise")
    return 0


def time_loading(n: int) -> int:
    """Seconds to read ``n`` graphs from per-drawing files and from packed shards."""
    import tempfile

    from dataset.archive import pack
    from dataset.loaders.gf import load_gf_graphs
    from tests.synthetic import write_synthetic_joint_corpus

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synthetic_joint_corpus(tmp, n, max_len=8)
        print(f"wrote {n} synthetic drawings in {time.perf_counter() - t0:.1f} s")
        load_gf_graphs(tmp)  # warm the file cache
        t0 = time.perf_counter()
        folders = load_gf_graphs(tmp)
        t_folders = time.perf_counter() - t0
        pack(tmp, progress=False)
        load_gf_graphs(tmp)
        t0 = time.perf_counter()
        packed = load_gf_graphs(tmp)
        t_packed = time.perf_counter() - t0
        assert packed.names == folders.names and torch.equal(packed.features, folders.features)
    print("| graphs | per-drawing GF/*.npz (s) | packed shards (s) | ratio |")
    print("|---|---|---|---|")
    print(f"| {n} | {t_folders:.2f} | {t_packed:.3f} | {t_folders / max(t_packed, 1e-9):.0f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n_graphs", type=int, default=16000)
    p.add_argument("--epochs", type=int, default=50, help="epochs of the fold to report")
    p.add_argument("--epochs_measured", type=int, default=2, help="epochs actually run (extrapolated to --epochs)")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch CPU thread counts to time")
    p.add_argument("--GF_batch_size", type=int, default=45)
    p.add_argument("--dev", action="store_true", help="retrieval on the lead-frame dev set instead of speed")
    p.add_argument("--real_dir", default="data/real", help="--dev: preprocessed real drawings (GF/)")
    p.add_argument("--groups", default=str(DEV_GROUPS), help="--dev: JSON list of groups of similar drawings")
    p.add_argument("--seeds", type=int, default=3, help="--dev: seeds")
    p.add_argument("--dev_epochs", type=int, default=30, help="--dev: training epochs")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="time reading N graphs from per-drawing files vs packed shards instead of training")
    args = p.parse_args(argv)
    if args.load:
        return time_loading(args.load)
    cfg = GFConfig(epochs=args.epochs, GF_batch_size=args.GF_batch_size)
    if args.dev:
        return dev_retrieval(args.real_dir, Path(args.groups), args.seeds, args.dev_epochs, cfg)
    print(f"GF training speed: {args.n_graphs} synthetic 10-node graphs, fold 0 of {cfg.k_folds}, "
          f"{cfg.GF_batch_size} pairs/batch, hidden {cfg.GF_hidden}, {cfg.GF_num_layers} GGNN steps")
    print("| threads | train graphs | steps/epoch | train graphs/s | s/epoch (incl. val) | "
          f"{args.epochs}-epoch fold (min) |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        r = time_fold(args.n_graphs, args.epochs_measured, threads, cfg)
        print(f"| {r['threads']} | {r['n_train']} | {r['steps_per_epoch']} | {r['train_graphs_per_s']:.0f} | "
              f"{r['epoch_s']:.2f} | {r['fold_min']:.1f} |", flush=True)
    how = "measured" if args.epochs_measured >= args.epochs else f"extrapolated from {args.epochs_measured} measured epoch(s)"
    print(f"fold time {how}; target <= 10 min per 50-epoch fold on 2 CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
