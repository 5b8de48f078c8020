"""How far can learning on the train split go? A metric learned on the floors' own features.

    python bench/metric_ablation.py --revisions data/bench/revisions-hard \\
        --prep data/bench/quality-hard/prep/revisions --seeds 0 1 2

The strongest floor on revisions is the raw GF matrices. This bench asks whether the
train split's revision groups hold enough signal to beat it *at all*: it learns a
metric on top of the non-learned features themselves (so it starts from the floor and
only has to learn what to weigh), with the same group objective as
``joint_main.py --group_weight`` (``model.joint_loss.group_contrastive_loss``: a
drawing's revisions are its positives, other groups its negatives):

- ``diag``: one weight per feature column (a learned re-weighting), initialised at 1;
- ``linear``: a full linear map, initialised at the identity;

each pulled towards its initial value with an L2 penalty of strength ``--reg``. Features:
every block set of :data:`BLOCK_SETS`, each block L2-normalized (and z-scored with the
train drawings where the floor z-scores it). Trained on the ``train`` split only;
judged on the ``selection-revisions`` set (with the train drawings as distractors), beside
the floors. Rows: mean over ``--seeds`` with a bootstrap 95 % interval over queries.
Writes ``--output``/metric_ablation.md; the measured table is kept in
``bench/learn_ablation.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.learn_ablation import encodings_of  # noqa: E402
from bench.quality import Entry, build_table, extra_training, format_markdown, protocol_sets  # noqa: E402
from dataset.files import atomic_write_text  # noqa: E402
from model.joint_loss import group_contrastive_loss  # noqa: E402
from model.floors import floor_block, zscore_l2  # noqa: E402
from utils.ranking import retrieval_metrics  # noqa: E402
from utils.retrieval.encodings import stack_encodings  # noqa: E402
from utils.retrieval.evaluate import floor_table  # noqa: E402
from dataset.names import group_of  # noqa: E402

#: feature sets: name -> ((floor block, z-scored with the train drawings?), ...)
BLOCK_SETS: dict[str, tuple[tuple[str, bool], ...]] = {
    "gf_raw": (("gf_raw", False),),
    "hist+gf_raw": (("hist", True), ("gf_raw", False)),
    "hist+gf_raw+layout_rot": (("hist", True), ("gf_raw", False), ("layout_rot", True)),
}


def block_features(arrays: dict, blocks: Sequence[tuple[str, bool]], reference: dict) -> np.ndarray:
    """``[n, sum d_k]``: each floor block of ``arrays`` z-scored with ``reference``'s (where
    the block says so) and L2-normalized (``model.floors.zscore_l2``)."""
    parts = []
    for name, z in blocks:
        parts.append(zscore_l2(floor_block(name, arrays), floor_block(name, reference) if z else None))
    return np.concatenate(parts, axis=1)


def learn_metric(x: np.ndarray, groups: np.ndarray, kind: str, reg: float, seed: int, steps: int = 300,
                 batch: int = 64, lr: float = 1e-2, temperature: float = 0.1) -> torch.nn.Module:
    """A ``diag`` or ``linear`` map of ``x: [n, d]`` trained with the group loss on ``groups: [n]``."""
    torch.manual_seed(seed)
    d = x.shape[1]
    if kind == "diag":
        model: torch.nn.Module = torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.ones(d))})
        param, init = model["w"], torch.ones(d)
    else:
        model = torch.nn.Linear(d, d, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.eye(d))
        param, init = model.weight, torch.eye(d)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.as_tensor(groups)
    opt = torch.optim.AdamW([param], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randperm(len(xt))[:batch]
        loss = group_contrastive_loss(apply_metric(model, kind, xt[idx]), yt[idx], temperature)
        loss = loss + reg * ((param - init) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def apply_metric(model: torch.nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    """The learned embedding of ``x: [n, d]`` -> ``[n, d]``."""
    return x * model["w"] if kind == "diag" else model(x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--revisions", default="data/bench/revisions-hard", help="bench/make_revisions.py output")
    parser.add_argument("--prep", default="data/bench/quality-hard/prep/revisions", help="its preprocessing")
    parser.add_argument("--output", default="data/bench/metric", help="result folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reg", type=float, nargs="+", default=[1e-3, 1e-2], help="pull towards the initial map")
    parser.add_argument("--extra_train", nargs="*", default=[],
                        help="preprocessed folders whose drawings (with their groups) join the training set")
    parser.add_argument("--n_boot", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    prep = Path(args.prep)
    train_names, sets = protocol_sets(Path(args.revisions), prep, None, None, None, train_distractors=True)
    sel = next(s for s in sets if s.name == "selection-revisions")
    extra = extra_training([Path(d) for d in args.extra_train], exclude=set(train_names) | set(sel.names))
    by_folder: dict[Path, list[str]] = {}
    for n, folder in extra.items():
        by_folder.setdefault(folder, []).append(n)
    train_encs = encodings_of(train_names, prep)
    for folder, names in by_folder.items():
        train_encs += encodings_of(names, folder)
        train_names = train_names + names
    train_arrays = stack_encodings(train_encs)
    sel_arrays = stack_encodings(encodings_of(sel.names, prep))
    ids: dict[str, int] = {}
    train_groups = np.array([ids.setdefault(group_of(n), len(ids)) for n in train_names])
    enc = {"names": sel.names, **{k: sel_arrays[k] for k in ("type_counts", "gf_features", "gf_adjacency", "layout")}}
    entries = [Entry(label, "floor", [m]) for label, m in floor_table(enc, sel.groups) if m is not None]
    for set_name, blocks in BLOCK_SETS.items():
        x_train = block_features(train_arrays, blocks, train_arrays)
        x_sel = block_features(sel_arrays, blocks, train_arrays)
        entries.append(Entry(f"{set_name}, not learned", "floor",
                             [retrieval_metrics(x_sel, sel.names, sel.groups)]))
        for kind in ("diag", "linear"):
            for reg in args.reg:
                runs = []
                for seed in args.seeds:
                    model = learn_metric(x_train, train_groups, kind, reg, seed)
                    with torch.no_grad():
                        emb = apply_metric(model, kind, torch.tensor(x_sel, dtype=torch.float32)).numpy()
                    runs.append(retrieval_metrics(emb, sel.names, sel.groups))
                entries.append(Entry(f"{set_name}, learned {kind} (reg {reg:g})", "inductive", runs))
    table = build_table(entries, n_boot=args.n_boot, groups=sel.groups)
    text = (f"Learned metrics on floor features: trained on the train split ({len(train_names)} drawings, "
            f"{len(ids)} groups), seeds {args.seeds}; selection split only.\n\n"
            + format_markdown("selection-revisions", table) + "\n")
    print(text)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metric_ablation.md", text)
    print(f"wrote {out / 'metric_ablation.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
