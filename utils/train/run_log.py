"""The run folder of every training command.

``RunLogger`` owns::

    logs/<run_name>/config.json     the run's config
    logs/<run_name>/split.json      the split (utils.train.splits.Split.save)
    logs/<run_name>/train.log       what happened, in words (also printed, between progress bars)
    logs/<run_name>/metrics.csv     one row per epoch (fold, epoch, train_loss, val_loss, ...)
    logs/<run_name>/loss_curve.png  train/val loss per epoch and fold (+ loss terms, weights)
    logs/<run_name>/summary.json    best validation loss per fold, test loss, chance levels...
    checkpoints/<run_name>/         checkpoints of the run, best_model.pth the best fold's
    checkpoints/best_model.pth      the latest finished run's best model

Example::

    log = RunLogger(cfg.run_name, config_to_dict(cfg), prefix="GF", use_wandb=cfg.wandb)
    log.save_split(split)
    log.log_metrics({"fold": 0, "epoch": 1, "train_loss": 2.1, "val_loss": 2.3})
    log.publish_best(log.checkpoint_path("fold_0.pth"))
    log.finish()
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from dataset.console import interactive, progress_bar

BEST_MODEL_NAME = "best_model.pth"
PLOT_NOTE = "train can sit above val: training views are augmented (and dropout is on)"


def progress(iterable: Iterable, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` on a terminal; a silent pass-through (no bar) when
    stderr is redirected (:func:`dataset.console.progress_bar`)."""
    return progress_bar(iterable, **kwargs)


def echo(msg: str) -> None:
    """Print ``msg`` on its own line: through ``tqdm.write`` (above any bar) on a terminal,
    plainly to stdout otherwise."""
    if interactive():
        tqdm.write(msg)
    else:
        print(msg, flush=True)


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays, tensors, paths and dataclasses."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON (numpy values converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default), encoding="utf-8")
    return path


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _cell(value: Any) -> str:
    """The text of one metrics.csv cell (numpy/torch scalars unwrapped)."""
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


class QuietLogger:
    """The logger of DDP ranks other than 0: prints nothing, writes nothing (rank 0's
    :class:`RunLogger` does), but knows where the run's checkpoints go."""

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


class RunLogger:
    """Folders, log file, metrics table, plot, summary and optional wandb of one run.

    Args:
        run_name: the run's name; None gives ``<prefix>-YYYYmmdd-HHMMSS``.
        config: the run's config (a plain dict, or a dataclass instance).
        logs_root: parent of the run's log folder.
        checkpoints_root: parent of the run's checkpoint folder.
        use_wandb: also log to Weights & Biases (``WANDB_ENTITY``/``WANDB_PROJECT``
            from the environment); if wandb is missing or fails, a warning is logged
            and the run goes on without it.
        wandb_project: the project when ``WANDB_PROJECT`` is not set.
        prefix: the start of generated run names (``GF``, ``DeepDXF``, ``joint``).

    A second logger on an existing run name (e.g. ``--fold 1`` after ``--fold 0``)
    appends to its ``train.log`` and ``metrics.csv``.
    """

    def __init__(
        self,
        run_name: str | None,
        config: dict[str, Any] | Any,
        logs_root: str | Path = "logs",
        checkpoints_root: str | Path = "checkpoints",
        use_wandb: bool = False,
        wandb_project: str = "DXF-similarity",
        prefix: str = "run",
    ) -> None:
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            from config.cli import config_to_dict

            config = config_to_dict(config)
        self.config: dict[str, Any] = dict(config)
        self.logs_root = Path(logs_root)
        self.checkpoints_root = Path(checkpoints_root)
        if not run_name:
            run_name = self._fresh_name(prefix)
        self.run_name: str = run_name
        self.log_dir = self.logs_root / run_name
        self.checkpoint_dir = self.checkpoints_root / run_name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / "train.log"
        self.metrics_path = self.log_dir / "metrics.csv"
        self.config_path = write_json(self.log_dir / "config.json", self.config)
        self._columns: list[str] = []
        self._chance: dict[str, float] = {}
        self._rows: list[dict[str, str]] = []
        self._load_existing_metrics()
        self._start = time.time()
        self._wandb: Any = None
        if use_wandb:
            self._init_wandb(wandb_project)

    # ------------------------------------------------------------------ setup
    def _fresh_name(self, prefix: str) -> str:
        base = f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        name, i = base, 1
        while (self.logs_root / name).exists() or (self.checkpoints_root / name).exists():
            i += 1
            name = f"{base}-{i}"
        return name

    def _load_existing_metrics(self) -> None:
        if not self.metrics_path.is_file():
            return
        with self.metrics_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            self._columns = list(reader.fieldnames or [])
            self._rows = [dict(r) for r in reader]

    def _init_wandb(self, default_project: str) -> None:
        try:
            import wandb  # noqa: PLC0415 - optional dependency, imported only when asked for
        except ImportError:
            self.info("WARNING: --wandb asked for, but wandb is not installed (pip install wandb): logging locally only")
            return
        try:
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", default_project),
                entity=os.environ.get("WANDB_ENTITY") or None,
                name=self.run_name,
                config=self.config,
                dir=str(self.log_dir),
            )
        except Exception as err:  # wandb raises many kinds (network, auth, usage)
            self.info(f"WARNING: wandb could not start ({type(err).__name__}: {err}): logging locally only")
            self._wandb = None

    # ---------------------------------------------------------------- logging
    def info(self, msg: str, console: bool = True) -> None:
        """Append ``msg`` to train.log and print it on its own line (``console=False``:
        the file only)."""
        if console:
            echo(msg)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with self.log_path.open("a", encoding="utf-8") as fh:
            for line in str(msg).splitlines() or [""]:
                fh.write(f"{stamp} {line}\n")

    def warning(self, msg: str) -> None:
        """:meth:`info` with a ``WARNING:`` prefix."""
        self.info(f"WARNING: {msg}")

    def save_split(self, split: Any) -> Path:
        """Write the split to ``split.json`` (a ``Split`` or a plain dict)."""
        path = self.log_dir / "split.json"
        if hasattr(split, "save"):
            split.save(path)
        else:
            write_json(path, split)
        return path

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.csv (and wandb).

        Columns follow the first row's key order; a key never seen before adds a
        column at the end and the file is rewritten with it.
        """
        new_keys = [k for k in row if k not in self._columns]
        self._columns.extend(new_keys)
        text_row = {k: _cell(v) for k, v in row.items()}
        self._rows.append(text_row)
        if new_keys or not self.metrics_path.is_file():
            self._rewrite_metrics()
        else:
            with self.metrics_path.open("a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=self._columns, restval="").writerow(text_row)
        if self._wandb is not None:
            numeric = {k: f for k, v in row.items() if (f := _to_float(v)) is not None}
            try:
                self._wandb.log(numeric)
            except Exception as err:  # never let the dashboard stop training
                self.warning(f"wandb.log failed ({type(err).__name__}: {err}); disabling wandb")
                self._wandb = None

    def _rewrite_metrics(self) -> None:
        tmp = self.metrics_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns, restval="")
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.metrics_path)

    def record_config(self, values: dict[str, Any]) -> Path:
        """Overwrite config.json entries with what the run actually used (e.g. a derived
        batch size, the warm-up after capping); the values given on the command line stay
        under ``"as_configured"``."""
        configured = dict(self.config.get("as_configured", {}))
        for k, v in values.items():
            if k in self.config and k not in configured and self.config[k] != v:
                configured[k] = self.config[k]
            self.config[k] = v
        if configured:
            self.config["as_configured"] = configured
        return write_json(self.config_path, self.config)

    @property
    def metrics(self) -> list[dict[str, str]]:
        """The rows of metrics.csv so far (values as text)."""
        return list(self._rows)

    # ------------------------------------------------------------------- plot
    def set_chance_levels(self, chance: dict[str, float]) -> None:
        """Chance levels to draw as dashed lines, keyed by metrics column (``val_loss``,
        ``val_GF_loss``...); a ``val_X`` level is also drawn for ``train_X``."""
        self._chance = {k: float(v) for k, v in chance.items() if _to_float(v) is not None}

    def plot_lines(self) -> list[dict[str, Any]]:
        """The lines of loss_curve.png, one dict per line: ``panel`` (``loss``, ``loss terms``,
        ``loss weights``), ``label``, ``x``, ``y``, ``colour``, ``style`` (``-`` train, ``-.``
        val, ``--`` a chance level). Every curve has its own colour; a chance line takes
        the colour of its loss."""
        if not self._rows:
            return []
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import colormaps

        cols = self._columns
        main = [c for c in ("train_loss", "val_loss") if c in cols]
        terms = [c for c in cols if c.endswith("_loss") and c not in main]
        weights = [c for c in cols if c.startswith(("w_", "weight_"))]
        panels = [(p, t) for p, t in ((main, "loss"), (terms, "loss terms"), (weights, "loss weights")) if p]
        folds: dict[str, list[dict[str, str]]] = {}
        for r in self._rows:
            folds.setdefault(r.get("fold", "") or "all", []).append(r)
        n_curves = sum(len(c) for c, _ in panels) * len(folds)
        cmap = colormaps["tab10" if n_curves <= 10 else "tab20"]
        palette = [cmap(i % cmap.N) for i in range(max(n_curves, 1))]
        chance = getattr(self, "_chance", {})
        lines: list[dict[str, Any]] = []
        k = 0
        for columns, panel in panels:
            for fold, rows in folds.items():
                for col in columns:
                    pts = [(_to_float(r.get("epoch")), _to_float(r.get(col))) for r in rows]
                    pts = [(x if x is not None else i, y) for i, (x, y) in enumerate(pts) if y is not None]
                    if not pts:
                        continue
                    colour = palette[k % len(palette)]
                    k += 1
                    label = col if len(folds) == 1 else f"fold {fold} {col}"
                    style = "-." if col.startswith("val") else "-"
                    lines.append({"panel": panel, "label": label, "x": [p[0] for p in pts], "y": [p[1] for p in pts],
                                  "colour": colour, "style": style})
                    level = chance.get(col, chance.get("val" + col[5:]) if col.startswith("train") else None)
                    if level is not None and (col.startswith("val") or "val" + col[5:] not in columns):
                        lines.append({"panel": panel, "label": f"chance {col.replace('val_', '').replace('train_', '')}"
                                      + ("" if len(folds) == 1 else f" (fold {fold})"),
                                      "x": [pts[0][0], pts[-1][0]], "y": [level, level], "colour": colour, "style": "--"})
        return lines

    def plot_losses(self, path: str | Path | None = None) -> Path | None:
        """Write loss_curve.png (:meth:`plot_lines`): one panel for the train/val loss, one for
        other ``*_loss`` columns and one for ``w_*``/``weight_*`` columns when present, dashed
        chance levels, and why train can sit above val. Returns None without metrics."""
        fig = self.loss_figure()
        if fig is None:
            return None
        import matplotlib.pyplot as plt

        out = Path(path) if path is not None else self.log_dir / "loss_curve.png"
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return out

    def loss_figure(self) -> Any:
        """The matplotlib figure of :meth:`plot_losses` (None without metrics); each panel's
        legend sits below its axes, off the curves."""
        lines = self.plot_lines()
        if not lines:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        panels = list(dict.fromkeys(line["panel"] for line in lines))
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.4), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            for line in (ln for ln in lines if ln["panel"] == panel):
                ax.plot(line["x"], line["y"], line["style"], color=line["colour"], label=line["label"],
                        lw=1.0 if line["style"] == "--" else 1.5, alpha=0.7 if line["style"] == "--" else 1.0)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(panel)
            ax.grid(alpha=0.3)
            handles, _ = ax.get_legend_handles_labels()
            if handles:
                ax.legend(fontsize=7, ncol=3 if len(handles) > 8 else 2, loc="upper center",
                          bbox_to_anchor=(0.5, -0.14), frameon=False)
        fig.suptitle(f"{self.run_name}\n{PLOT_NOTE}; dashed: chance level", fontsize=9)
        fig.tight_layout()
        return fig

    # ------------------------------------------------------ summary/checkpoints
    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write summary.json (and send it to wandb's run summary when on)."""
        path = write_json(self.log_dir / "summary.json", summary)
        if self._wandb is not None:
            try:
                for k, v in summary.items():
                    if _to_float(v) is not None:
                        self._wandb.summary[k] = _to_float(v)
            except Exception as err:
                self.warning(f"wandb summary failed ({type(err).__name__}: {err})")
        return path

    def checkpoint_path(self, name: str) -> Path:
        """``checkpoints/<run_name>/<name>``."""
        return self.checkpoint_dir / name

    def publish_best(self, path: str | Path) -> Path:
        """Copy a checkpoint to ``checkpoints/<run>/best_model.pth`` and to
        ``checkpoints/best_model.pth`` (the latest finished run's best, what
        SimDeepDXF.py loads by default). Returns the run's copy."""
        src = Path(path)
        if not src.is_file():
            raise FileNotFoundError(f"cannot publish {src}: no such checkpoint")
        run_best = self.checkpoint_dir / BEST_MODEL_NAME
        if src.resolve() != run_best.resolve():
            _atomic_copy(src, run_best)
        _atomic_copy(run_best, self.checkpoints_root / BEST_MODEL_NAME)
        self.info(f"best model: {run_best} (also {self.checkpoints_root / BEST_MODEL_NAME})")
        return run_best

    def finish(self) -> None:
        """Plot the losses, note the run time, close wandb."""
        self.plot_losses()
        minutes = (time.time() - self._start) / 60
        self.info(f"run {self.run_name} finished after {minutes:.1f} min; logs in {self.log_dir}")
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as err:
                tqdm.write(f"WARNING: wandb.finish failed ({type(err).__name__}: {err})")
            self._wandb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


__all__ = ["RunLogger", "QuietLogger", "progress", "echo", "write_json", "BEST_MODEL_NAME"]
