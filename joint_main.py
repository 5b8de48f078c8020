"""Train the GF and DeepDXF models jointly: python joint_main.py [--flags]

    python joint_main.py                                   # sample corpus in data/, default settings
    python joint_main.py --data_dir data/real --fold 0 --epochs 10 --weighting dwa --cross_weight 0.5
    torchrun --nproc_per_node=4 joint_main.py --device cuda --amp --num_workers 4   # DistributedDataParallel
    python joint_main.py --resume --run_name NAME           # continue an interrupted run
    python joint_main.py --groups my_groups.json            # the retrieval check also searches your groups

Reads the drawings that have both encodings, from a packed archive
(``<data_dir>/packed/shard-*.h5``, ``dataset/pack.py``) or from the per-drawing
folders (``<data_dir>/GF/*.npz`` and ``<data_dir>/DeepDXF/*.h5``), one batch at a
time (``--num_workers`` DataLoader processes read and collate; memory does not grow
with the archive), holds out 20 % (by group) as the test set and runs k-fold cross
validation on the rest. Per fold: one optimizer over both models (and
the cross-model heads and loss weights), the dynamically weighted combined loss,
early stopping on the combined validation loss, the best checkpoint (kind
``joint``), the test losses of that checkpoint. Writes ``logs/<run_name>/``
(config, split, train.log, metrics.csv with every loss term and weight,
loss_curve.png, summary.json with the chance levels) and ``checkpoints/<run_name>/``
(``fold_<i>.pth``, ``last.pth`` for ``--resume``, ``best_model.pth`` = the best
fold's, also copied to ``checkpoints/best_model.pth``).

The fold loop is ``utils/train_loop.py``'s :func:`fit_fold` (the one of
GF_main.py and DeepDXF_train.py); one epoch is ``joint_train.train_epoch``.
Under ``torchrun`` every rank trains on its share of the batches; gradients are
averaged by DDP (the loss weights by hand), metrics are summed over ranks by name,
so every rank takes the same early-stopping decision; rank 0 writes logs and
checkpoints, and all ranks wait for it before leaving.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from config.cli import config_to_dict, parse_config
from config.joint_config import JointConfig
from joint_train import (
    EXTRA_TERMS, build_fold, evaluate, explain_loss, extra_weights, joint_state, load_joint_state, schedule_plan,
    setup_distributed, train_epoch,
)
from dataset.pack import ArchiveError
from model.joint_dataset import JointDataError, JointDataLoader
from model.floors import FLOOR_LABELS
from utils.checkpoint import load_checkpoint, load_trained_models
from utils.embedding_choice import choice_table, choose_search_embedding, store_choice
from utils.ranking import GroupsError, read_groups, resolve_groups
from utils.val_retrieval import (
    FLOOR_KEYS, floor_maps, merge_groups, pick_validation_drawings, strongest_floor, validation_retrieval,
)
from utils.distributed import DistInfo, broadcast_object, cleanup_distributed
from utils.run_log import RunLogger
from utils.seed import seed_everything
from utils.splits import Split, make_split
from utils.train_loop import (
    LAST_NAME, FoldResult, FoldSetup, LoopSettings, finish_run, fit_fold, raw_dxf_hint, summarize_folds,
)


class _QuietLog:
    """The logger of ranks other than 0: prints nothing, writes nothing."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir

    def info(self, msg: str, console: bool = True) -> None:
        pass

    warning = info

    def log_metrics(self, row: dict[str, Any]) -> None:
        pass

    def set_chance_levels(self, chance: dict[str, float]) -> None:
        pass

    def record_config(self, values: dict[str, Any]) -> None:
        pass

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoint_dir / name


def _latest_run(checkpoints_dir: str) -> Optional[str]:
    """The run of the newest ``checkpoints/<run>/last.pth``."""
    found = sorted(Path(checkpoints_dir).glob(f"*/{LAST_NAME}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.name if found else None


def _find_resume(cfg: JointConfig) -> tuple[int, Optional[str], Any, Optional[Split]]:
    """Rank 0's view of ``--resume``: (status, message, last.pth, split); status 0 = go on,
    2 = error, 1 = nothing left to do."""
    run = cfg.run_name or _latest_run(cfg.checkpoints_dir)
    last = Path(cfg.checkpoints_dir) / str(run) / LAST_NAME
    if run is None or not last.is_file():
        return 2, f"error: --resume: no {LAST_NAME} under {cfg.checkpoints_dir}/{run or '*'}", None, None
    ckpt = load_checkpoint(last, expect_kind="joint")
    if ckpt.get("complete"):
        return 1, f"run {run} is complete: nothing to resume", None, None
    if "training" not in ckpt["state"]:
        return 2, f"error: --resume: {last} was written by an older version of joint_main.py; start a new run", None, None
    split_path = Path(cfg.logs_dir) / run / "split.json"
    return 0, run, ckpt, Split.load(split_path) if split_path.is_file() else None


def fold_setup(fold: int, cfg: JointConfig, data: JointDataLoader, log: Any, info: DistInfo,
               user_groups: Sequence[Sequence[int]] = ()) -> FoldSetup:
    """The joint model, weighting, optimizer and loaders of one fold, behind the loop's callables.
    ``user_groups``: ``--groups`` as joint-drawing indices (more queries for the retrieval check)."""
    train_loader, val_loader = data.get_fold_loaders(fold)
    st = build_fold(cfg, train_loader, info, fold)
    objective, weighting = st.objective, st.weighting
    plan = schedule_plan(cfg, math.ceil(len(train_loader) / cfg.accumulation_steps))
    extra = extra_weights(cfg)
    off = [t for t, w in extra.items() if w <= 0]
    log.info(f"fold {fold}: {len(train_loader.indices)} train / {len(val_loader.indices)} val drawings; "
             f"{train_loader.n_batches} joint batch(es) per epoch"
             + (f" ({len(train_loader)} on this rank)" if info.enabled else "") + ", "
             f"GF {cfg.GF_batch_size} pairs max, DeepDXF batch int({len(train_loader.indices)} / "
             f"{train_loader.n_batches}) = {train_loader.deepdxf_batch_size}; {plan.describe()}; "
             f"weighting {cfg.weighting}; "
             + ", ".join(f"{t} term " + (f"weight {w:g}" if t not in off else "off") for t, w in extra.items()))
    if plan.warning():
        log.warning(plan.warning())
    log.record_config({"DeepDXF_batch_size": train_loader.deepdxf_batch_size, "warmup_steps": plan.warmup_steps,
                       "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps})

    def drop_off_terms(metrics: dict[str, float]) -> dict[str, float]:
        """The metrics without those of the extra terms that are off."""
        return {k: v for k, v in metrics.items() if not any(t in k for t in off)}

    def one_epoch(epoch: int) -> dict[str, float]:
        train_loader.set_epoch(epoch)
        row = train_epoch(st, train_loader, cfg, info)
        weighting.end_epoch(torch.tensor([row["train_GF_loss"], row["train_DeepDXF_loss"]]))
        if row["skipped_steps"]:
            log.info(f"fold {fold} epoch {epoch}: skipped {row['skipped_steps']} step(s) with NaN/inf loss or gradients")
        return drop_off_terms(row)

    pick_groups = merge_groups(data.split.groups, user_groups) if user_groups else data.split.groups
    retrieval_drawings = {
        part: pick_validation_drawings(idx, pick_groups, cfg.val_retrieval, cfg.seed) if cfg.val_retrieval else []
        for part, idx in (("val", val_loader.indices), ("test", data.split.test))}
    floors: dict[str, dict[str, float]] = {}  # per part: the floors do not learn, compute them once
    if cfg.val_retrieval:
        n_val = len(retrieval_drawings["val"])
        log.info(f"fold {fold}: retrieval check on {n_val} validation drawing(s)" if n_val else
                 f"fold {fold}: no retrieval check: no two validation drawings share a group (--group_pattern)")

    def evaluate_part(part: str) -> dict[str, float]:
        loader = data.get_test_loaders() if part == "test" else val_loader
        metrics = evaluate(objective, weighting, loader, cfg, info)
        if retrieval_drawings[part]:
            if part not in floors:
                floors[part] = floor_maps(data.dataset, data.names, data.split.groups, retrieval_drawings[part],
                                          user_groups)
                log.info(f"fold {fold}: {describe_floors(part, floors[part])}")
            metrics.update(validation_retrieval(objective, data.dataset, data.names, data.split.groups,
                                                retrieval_drawings[part], user_groups, floors[part]))
        if part == "val":
            log.set_chance_levels({"val_loss": metrics["chance_loss"],
                                   **{f"val_{t}_loss": metrics[f"chance_{t}"] for t in ("GF", "DeepDXF", *EXTRA_TERMS)}})
        return drop_off_terms(metrics)

    def load_train_state(state: dict[str, Any]) -> None:
        if not st.load_state_dict(state) and st.scaler.is_enabled():
            log.info(f"fold {fold}: the checkpoint holds no GradScaler state: fp16 loss scaling starts afresh")

    return FoldSetup(
        train_epoch=one_epoch, evaluate=evaluate_part,
        model_state=lambda: joint_state(objective, weighting),
        load_model_state=lambda state: load_joint_state(objective, weighting, state),
        train_state=st.state_dict, load_train_state=load_train_state,
        row_extra=weighting.log_values,
        describe=lambda part, m: explain_loss(m, weighting, extra) + describe_retrieval(m),
        result_extra=lambda: {"skipped_steps": st.skipped_steps,
                              "deepdxf_batch_size": train_loader.deepdxf_batch_size},
        bar_keys={"GF": "val_GF_loss", "DeepDXF": "val_DeepDXF_loss",
                  **{t: f"val_{t}_loss" for t in EXTRA_TERMS if t not in off},
                  **({"mAP": "val_retrieval_mAP", "floor": "val_floor_mAP"} if retrieval_drawings["val"] else {}),
                  "w_GF": "w_GF", "w_DeepDXF": "w_DeepDXF"},
    )


def describe_retrieval(metrics: dict[str, float]) -> str:
    """``"; retrieval mAP 0.80 (strongest floor layout_rot 0.92: below the floor)"`` when the metrics
    hold the retrieval check, else ``""``."""
    m, f = metrics.get("retrieval_mAP", math.nan), metrics.get("floor_mAP", math.nan)
    if not math.isfinite(m):
        return ""
    return (f"; retrieval mAP {m:.3f} (strongest floor {strongest_floor(metrics) or '-'} {f:.3f}"
            f"{': below the floor' if m < f else ''})")


def describe_floors(part: str, floors: dict[str, float]) -> str:
    """One line: every floor's mAP on the part's retrieval drawings and which is the strongest."""
    maps = ", ".join(f"{k} {floors[f'floor_{k}_mAP']:.3f}" for k in FLOOR_KEYS
                     if math.isfinite(floors.get(f"floor_{k}_mAP", math.nan)))
    best = strongest_floor(floors)
    if best is None:
        return f"no floor for the {part} retrieval check (no query)"
    return (f"{part} retrieval check: floors (mAP) {maps}; the model is compared with the strongest, {best} "
            f"({FLOOR_LABELS[best]})")


#: a small archive's epoch should have at least this many optimizer steps (when it allows)
MIN_STEPS_PER_EPOCH = 4
#: the smallest GF batch (pairs) the default is scaled down to: 8 drawings, 15 negatives each
MIN_GF_PAIRS = 4


def fit_batch_to_archive(cfg: JointConfig, n_train: int, world_size: int = 1) -> Optional[str]:
    """Scale the default ``GF_batch_size`` down for a small archive, in place.

    With ``n_train`` training drawings per fold, the default batch (45 pairs, up to 90
    drawings) gives ``ceil(n_train / 90)`` batches per epoch: 1 for an archive of 75
    drawings, so 50 epochs are 50 optimizer steps. When ``--GF_batch_size`` is left at its
    default and an epoch would have fewer than :data:`MIN_STEPS_PER_EPOCH` optimizer steps
    (batches / accumulation steps / processes), the batch becomes
    ``max(MIN_GF_PAIRS, n_train // (2 * MIN_STEPS_PER_EPOCH * accumulation * processes))``
    pairs. Returns the log line that says so, or None when nothing changed.
    """
    default = JointConfig.__dataclass_fields__["GF_batch_size"].default
    if cfg.GF_batch_size != default or n_train <= 0:
        return None
    per_step = cfg.accumulation_steps * max(1, world_size)

    def steps(pairs: int) -> int:
        return math.ceil(math.ceil(n_train / (2 * pairs)) / per_step)

    if steps(default) >= MIN_STEPS_PER_EPOCH:
        return None
    pairs = min(default, max(MIN_GF_PAIRS, n_train // (2 * MIN_STEPS_PER_EPOCH * per_step)))
    if pairs == default:
        return None
    cfg.GF_batch_size = pairs
    return (f"small archive: {n_train} training drawings per fold would be {steps(default)} optimizer step(s) "
            f"per epoch with the default --GF_batch_size {default}; using --GF_batch_size {pairs} "
            f"({steps(pairs)} step(s) per epoch). Give --GF_batch_size to choose; on a small archive also train "
            f"one fold of a few (--k_folds 5 --fold 0) with more epochs (README: Small archives)")


def read_user_groups(cfg: JointConfig, names: Sequence[str], log: Any) -> list[list[int]]:
    """``--groups``: the listed groups as joint-drawing indices (names not among ``names`` are
    left out, and the log says how many). Empty without ``--groups``."""
    if not cfg.groups:
        return []
    listed = read_groups(cfg.groups)
    found, missing = resolve_groups(names, listed)
    found = [g for g in found if len(g) >= 2]
    log.info(f"--groups {cfg.groups}: {len(found)} of {len(listed)} group(s) with >= 2 of the joint drawings"
             + (f"; {len(missing)} name(s) not among them, e.g. {missing[0]!r}" if missing else "")
             + ("" if cfg.val_retrieval else "; unused: --val_retrieval 0 turns the retrieval check off"))
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    """Run the joint training; returns the summary (every rank), or an exit code on bad input."""
    cfg = parse_config(JointConfig, argv, description=__doc__.split("\n")[0])
    info = setup_distributed(cfg)
    try:
        return _main(cfg, info)
    except KeyboardInterrupt:
        if info.is_main:
            print(interrupted_message(cfg), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        cleanup_distributed(info)


#: the exit code after Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130


def interrupted_message(cfg: JointConfig) -> str:
    """One line after Ctrl-C: what ``last.pth`` of the run holds and the command that goes on."""
    last = Path(cfg.checkpoints_dir) / cfg.run_name / LAST_NAME if cfg.run_name else None
    if last is None or not last.is_file():
        return "interrupted (Ctrl-C) before the first epoch ended: nothing saved to resume from"
    ckpt = load_checkpoint(last, expect_kind="joint")
    if ckpt.get("complete"):
        return f"interrupted (Ctrl-C) after the run finished: {last} is complete"
    return (f"interrupted (Ctrl-C): saved {last} after fold {ckpt.get('fold')} epoch {ckpt.get('epoch')}; "
            f"go on with the same command plus --resume --run_name {cfg.run_name}")


def _main(cfg: JointConfig, info: DistInfo) -> dict[str, Any] | int:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    hint = raw_dxf_hint(cfg.data_dir)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        return 2
    resume: Optional[dict[str, Any]] = None
    split: Optional[Split] = None
    if cfg.groups:  # a bad file fails before any work
        try:
            read_groups(cfg.groups)
        except GroupsError as err:
            print(f"error: --groups: {err}", file=sys.stderr)
            return 2
    if cfg.resume:  # rank 0 decides and sends what it found: ranks agree even without a shared filesystem
        status, message, resume, split = broadcast_object(_find_resume(cfg) if info.is_main else None, info)
        if status != 0:
            print(message, file=sys.stderr)
            return 2 if status == 2 else 0
        cfg.run_name = message
    try:
        data = JointDataLoader(cfg, info.rank, info.world_size, split=split, make_split=make_split)
    except (ArchiveError, JointDataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folds = list(range(data.split.n_folds)) if cfg.fold is None else [cfg.fold]
    n_train = min((len(data.split.folds[f][0]) for f in folds if 0 <= f < data.split.n_folds), default=0)
    batch_note = fit_batch_to_archive(cfg, n_train, info.world_size)
    log: Any = None
    if info.is_main:
        log = RunLogger(cfg.run_name or None, cfg, logs_root=cfg.logs_dir, checkpoints_root=cfg.checkpoints_dir,
                        use_wandb=cfg.wandb, prefix="joint")
        log.save_split(data.split)
    cfg.run_name = broadcast_object(log.run_name if log is not None else None, info)
    if not info.is_main:
        log = _QuietLog(Path(cfg.checkpoints_dir) / cfg.run_name)

    if any(not 0 <= f < data.split.n_folds for f in folds):
        log.info(f"error: --fold {cfg.fold} is not one of the split's {data.split.n_folds} folds")
        return 2
    log.info(f"joint: {data.describe()}; fold(s) {folds}; device {info.device}"
             + (f", {info.world_size} processes (DDP)" if info.enabled else "")
             + f"; accumulation {cfg.accumulation_steps}; amp {cfg.amp}; "
             + (f"{cfg.num_workers} DataLoader worker(s) per process" if cfg.num_workers else
                "batches built in the training process (--num_workers 0)"))

    if batch_note:
        log.info(batch_note)
    user_groups = read_user_groups(cfg, data.names, log)
    user_names = [[data.names[i] for i in g] for g in user_groups]
    if user_groups and cfg.group_weight > 0:  # the group term learns the user's groups (with their revisions)
        data.use_group_labels(merge_groups(data.split.groups, user_groups))
    done: list[dict[str, Any]] = list(resume.get("done", [])) if resume else []
    finished = {d["fold"] for d in done}
    results = [FoldResult(**{k: d[k] for k in FoldResult.__dataclass_fields__ if k in d}) for d in done]
    for fold in folds:
        if fold in finished:
            continue
        setup = fold_setup(fold, cfg, data, log, info, user_groups)
        run = LoopSettings(cfg.epochs, cfg.patience, cfg.min_delta, "joint",
                           dict(config_to_dict(cfg), DeepDXF_batch_size=setup.result_extra()["deepdxf_batch_size"]),
                           checkpoint_extra={"deepdxf_batch_size": setup.result_extra()["deepdxf_batch_size"]},
                           save_last=True, stop_after_epochs=cfg.stop_after_epochs)
        fold_resume = resume if resume is not None and resume["fold"] == fold else None
        r = fit_fold(fold, setup, log, run, info, fold_resume, done)
        if r is None:  # left early on purpose
            return {"interrupted": True, "run_name": cfg.run_name}
        results.append(r)

    extra = {
        "test_terms_per_fold": {str(r.fold): r.test_metrics for r in results},
        "chance_level": {k: v for r in results[-1:] for k, v in r.test_metrics.items() if k.startswith("chance")},
        "chance_formula": "GF: mean ln(2n-1) over graphs (n real nodes); DeepDXF: ln(2B-1); cross: ln(B); group: ln(2B-1); "
                           "B = drawings per batch",
        "test_loss_formula": "sum_i w_i L_i + cross_weight * cross + group_weight * group, w normalized to sum to 2 (the uncertainty "
                             "regularizer sum log sigma^2 is part of the training objective only)",
        "skipped_steps": sum(r.extra.get("skipped_steps", 0) for r in results),
        "weighting": cfg.weighting, "cross_weight": cfg.cross_weight, "group_weight": cfg.group_weight,
        "n_drawings": len(data.names), "n_test": len(data.split.test), "data_dir": cfg.data_dir,
        "data_layout": data.layout,
        "world_size": info.world_size, "run_name": cfg.run_name,
    }
    if not info.is_main:
        return {**summarize_folds(results), **extra}
    best = summarize_folds(results)
    if cfg.choose_embedding and best.get("best_checkpoint"):
        extra["search_embedding"] = choose_and_store(cfg, data, best, log, user_names)
    return finish_run(log, results, extra,
                      f"joint over {len(results)} fold(s): best combined val loss {{val_loss_mean:.4f}} ± "
                      f"{{val_loss_std:.4f}}, test {{test_loss_mean:.4f}} ± {{test_loss_std:.4f}}")


def choose_and_store(cfg: JointConfig, data: JointDataLoader, summary: dict[str, Any], log: Any,
                     user_groups: Sequence[Sequence[str]] = ()) -> Optional[dict]:
    """Choose the search embedding on the best fold's validation drawings
    (``utils.embedding_choice``), store it in that fold's checkpoint (published as
    ``best_model.pth``), and say what was chosen and why; returns what summary.json keeps
    of the choice (None: nothing to choose on)."""
    fold = int(summary["best_fold"])
    train_idx, val_idx = data.split.folds[fold]
    groups = group_lists(data.names, data.split.groups) + [list(g) for g in user_groups]
    trained = load_trained_models(summary["best_checkpoint"], "cpu")
    choice = choose_search_embedding(trained.gf, trained.deepdxf, data.dataset, data.names, val_idx, train_idx,
                                     groups, cfg.choice_max_drawings, seed=cfg.seed)
    if choice is None:
        log.info("search embedding: not chosen: no two validation drawings share a group (--group_pattern, "
                 "--groups); SimDeepDXF.py --embedding auto uses joint_floors. Give the archive revisions "
                 "(dataset/make_revisions.py) or --groups to let training choose")
        return None
    store_choice([summary["best_checkpoint"]], choice)  # published as best_model.pth with it
    log.info(f"search embedding: {choice['name']} [{choice['description']}]: {choice['why']}\n"
             + choice_table(choice))
    return {k: choice[k] for k in ("name", "description", "why", "scores", "strongest_floor", "n_queries")}


def group_lists(names: Sequence[str], group_of_each: Sequence[str]) -> list[list[str]]:
    """Groups of names with two members or more, from each name's group label."""
    by_group: dict[str, list[str]] = {}
    for n, g in zip(names, group_of_each):
        by_group.setdefault(g, []).append(n)
    return [members for members in by_group.values() if len(members) >= 2]


def cli(argv: Sequence[str] | None = None) -> int:
    """The command (``python joint_main.py``, the ``dxf-train`` console script): :func:`main`
    as an exit code (0 after a run, its code on bad input or Ctrl-C)."""
    out = main(argv)
    return out if isinstance(out, int) else 0


if __name__ == "__main__":
    sys.exit(cli())
