"""Preprocess a DXF archive into both encodings: GF graphs and DeepDXF sequences.

    python dataset/dxf_process.py                      # data/DXF -> data/GF, data/DeepDXF
    python dataset/dxf_process.py --input DIR --output OUT --workers 4
    python dataset/dxf_process.py --input DIR --output OUT --shard 0/2   # machine 1 of 2 (1/2 on the other)
    python dataset/dxf_process.py --output OUT --merge                   # shard manifests -> manifest.csv

Each file is parsed once (``dataset.encode``) and written as ``OUT/GF/<name>.npz``
and ``OUT/DeepDXF/<name>.h5``; ``OUT/manifest.csv`` gets one row per input file with
its status (``ok`` / ``skipped`` / ``failed``) and a reason a person understands.
One bad file never stops a run: a file that raises, runs past ``--timeout`` or kills
its worker process (out of memory) becomes a ``failed`` row. Rows are appended to the
manifest as files finish, so a run that is killed or stopped with Ctrl-C resumes where
it stopped: drawings already done and unchanged (same size and modification time) are
skipped unless ``--overwrite``.

This module is the command line (the files, the worker pool, the summary); encoding one
drawing is :mod:`dataset.encode`, the manifest :mod:`dataset.manifest`, packing
:mod:`dataset.archive`.
"""
from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path

from config.cli import parse_config
from config.process_config import DEFAULT_INPUT, ProcessConfig, parse_shard
from dataset.archive import PACKED_DIR, pack, pack_staleness
from dataset.console import progress_bar
from dataset.dxf_read import TYPE_ALIASES, find_drawings
from dataset.encode import EncodeTask, process_file, remove_outputs
from dataset.manifest import (ManifestAppender, ManifestError, earlier_rows, failed_row, is_unchanged,
                              manifest_path, merge_manifests, write_manifest)
from dataset.parallel import TaskResult, run_tasks

__all__ = ["PreprocessInterrupted", "find_dxf_files", "shard_of", "summarize", "run", "main"]

EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


class PreprocessInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the run has said what it kept."""


# --------------------------------------------------------------------------- input files


def find_dxf_files(roots: list[str]) -> list[tuple[Path, str]]:
    """All ``.dxf`` files (any case) under ``roots`` with their drawing names
    (:func:`dataset.dxf_read.find_drawings`: recursive, hidden files skipped, a name seen
    twice gets its root folder's name as prefix); clashes are reported on stderr."""
    files, clashes = find_drawings(roots, (".dxf",))
    if clashes:
        print(f"note: {len(clashes)} drawing names occur more than once (e.g. {clashes[0]!r}); the later ones "
              "are prefixed with their input folder's name", file=sys.stderr)
    return files


def shard_of(name: str, n_shards: int) -> int:
    """The shard (0..n_shards-1) that a drawing belongs to: a stable hash of its name,
    the same on every machine, Python version and run."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


# --------------------------------------------------------------------------- reports


def reason_key(reason: str) -> str:
    """The reason without its details, for counting ("unreadable DXF (...)" -> "unreadable DXF")."""
    return reason.split(" (", 1)[0]


def summarize(rows: list[dict], n_reused: int) -> str:
    """A short report for people: counts by status and by reason."""
    by_status = Counter(r["status"] for r in rows)
    lines = [f"{len(rows)} files: " + ", ".join(f"{by_status[s]} {s}" for s in ("ok", "skipped", "failed"))
             + (f" ({n_reused} unchanged since the last run)" if n_reused else "")]
    for status in ("skipped", "failed"):
        reasons = Counter(reason_key(r["reason"]) for r in rows if r["status"] == status)
        if reasons:
            lines.append(f"  {status}: " + "; ".join(f"{n} {why}" for why, n in reasons.most_common()))
    recovered = sum(1 for r in rows if r["status"] == "ok" and "recover" in r["reason"])
    if recovered:
        lines.append(f"  {recovered} damaged files were read with ezdxf.recover")
    cut = [r for r in rows if int(r.get("n_cut") or 0) > 0]
    if cut:
        lines.append(f"  {len(cut)} drawings longer than --max_len were cut")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run


def ensure_sample_corpus(cfg: ProcessConfig) -> None:
    """Fill the default input folder with the bundled sample corpus when it is empty."""
    if cfg.input != [DEFAULT_INPUT]:
        return
    folder = Path(DEFAULT_INPUT)
    if folder.is_dir() and any(p.suffix.lower() == ".dxf" for p in folder.rglob("*")):
        return
    from dataset.make_sample_dxf import make_sample_corpus

    print(f"{folder}/ is empty: writing the bundled sample corpus there first.")
    written = make_sample_corpus(folder, seed=cfg.seed)
    print(f"wrote {len(written)} sample drawings to {folder}/")


def run(cfg: ProcessConfig) -> list[dict]:
    """Preprocess every DXF file under ``cfg.input`` (or merge shard manifests with
    ``cfg.merge``); returns the manifest rows.

    Raises:
        SystemExit: a missing input folder, no .dxf file at all, bad flags.
        PreprocessInterrupted: Ctrl-C; the finished rows are in the manifest already.
    """
    out = Path(cfg.output)
    if cfg.merge:
        return _merge(cfg, out)
    shard = parse_shard(cfg.shard) if cfg.shard else None
    files = _input_files(cfg, shard)
    manifest = manifest_path(out, shard)
    tasks, rows = _plan(cfg, files, out, manifest)
    n_reused = len(rows)
    for folder in (out / "GF", out / "DeepDXF") if tasks else (out,):
        folder.mkdir(parents=True, exist_ok=True)
    tasks.sort(key=lambda t: -t.size)  # big files first: better load balance
    rows += _encode_all(cfg, tasks, rows, manifest, n_reused, len(files))
    write_manifest(manifest, rows)  # sorted by path: the same file whatever the finishing order
    print(summarize(rows, n_reused))
    what = f"shard {shard[0]}/{shard[1]}: " if shard else ""
    print(f"{what}wrote {out / 'GF'}/, {out / 'DeepDXF'}/ and {manifest}")
    if shard is not None:
        print(f"when every shard is done: python dataset/dxf_process.py --output {out} --merge")
    else:
        refresh_pack(out, repack=cfg.repack)
    return rows


def _merge(cfg: ProcessConfig, out: Path) -> list[dict]:
    """``--merge``: the shard manifests into ``manifest.csv``, then the packed shards refreshed."""
    try:
        rows = merge_manifests(out)
    except ManifestError as err:
        raise SystemExit(f"error: {err}") from None
    print(summarize(rows, 0))
    print(f"merged the shard manifests into {manifest_path(out)}")
    refresh_pack(out, repack=cfg.repack)
    return rows


def _input_files(cfg: ProcessConfig, shard: tuple[int, int] | None) -> list[tuple[Path, str]]:
    """The ``.dxf`` files of this run (of this shard) with their names; SystemExit when there is nothing to do."""
    ensure_sample_corpus(cfg)
    missing = [p for p in cfg.input if not Path(p).exists()]
    if missing:
        raise SystemExit(f"error: input folder not found: {', '.join(missing)}")
    if len(cfg.gf_classes) != len(set(cfg.gf_classes)):
        raise SystemExit("error: --gf_classes has duplicates")
    files = find_dxf_files(cfg.input)
    if not files:
        raise SystemExit(f"error: nothing to do: no .dxf files under {', '.join(cfg.input)} "
                         "(searched recursively; nothing was written)")
    if shard is not None:
        files = [(path, name) for path, name in files if shard_of(name, shard[1]) == shard[0]]
    return files


def _plan(cfg: ProcessConfig, files: list[tuple[Path, str]], out: Path,
          manifest: Path) -> tuple[list[EncodeTask], list[dict]]:
    """``(tasks, rows)``: the files to encode, and the rows of the files an earlier run did
    and that are unchanged since (reused as they are, unless ``--overwrite``)."""
    classes = tuple(TYPE_ALIASES.get(c.upper(), c.upper()) for c in cfg.gf_classes)
    previous = {} if cfg.overwrite else earlier_rows(out, manifest)
    tasks, rows = [], []
    for path, name in files:
        stat = path.stat()
        task = EncodeTask(str(path), name, str(out), cfg.max_len, classes, stat.st_size, stat.st_mtime_ns)
        if is_unchanged(task, previous.get(task.path)):
            rows.append(previous[task.path])
        else:
            tasks.append(task)
    return tasks, rows


def _result_row(result: TaskResult) -> dict:
    """The manifest row of one finished task: its own, or ``failed`` (timed out, worker died,
    ...) with its stale encodings removed."""
    if result.error is None:
        return result.value
    remove_outputs(result.task.output, result.task.name)
    return failed_row(result.task, result.error, result.seconds)


def _encode_all(cfg: ProcessConfig, tasks: list[EncodeTask], kept: list[dict], manifest: Path, n_reused: int,
                n_files: int) -> list[dict]:
    """Encode ``tasks`` in ``cfg.workers`` processes, each row appended to ``manifest`` as its
    file finishes (after the ``kept`` rows); returns the new rows.

    Raises:
        PreprocessInterrupted: Ctrl-C; the rows of the files done are in the manifest.
    """
    appender = ManifestAppender(manifest, kept)
    bar = progress_bar(total=len(tasks), desc="preprocessing" + (f" shard {cfg.shard}" if cfg.shard else ""),
                       unit="file")
    results = run_tasks(process_file, tasks, workers=cfg.workers, timeout=cfg.timeout)
    rows: list[dict] = []
    try:
        for result in results:
            row = _result_row(result)
            appender.append(row)
            rows.append(row)
            bar.update(1)
            if row["status"] != "ok":
                bar.write(f"{row['status']}: {row['path']}: {row['reason']}")
    except KeyboardInterrupt:
        results.close()  # stops the workers
        bar.close()
        appender.close()
        print(f"interrupted: {len(rows)} of {len(tasks)} files done in this run and kept in {manifest} "
              f"({n_reused + len(rows)} of {n_files} in all); run the same command again to resume",
              file=sys.stderr, flush=True)
        raise PreprocessInterrupted() from None
    finally:
        results.close()
        bar.close()
        appender.close()
    return rows


def refresh_pack(out: Path, *, repack: bool) -> None:
    """Pack ``out`` again when its packed shards are older than its encodings (``repack``),
    or say that they are. A shard run leaves this to ``--merge``."""
    reason = pack_staleness(out)
    if reason is None:
        return
    if not repack:
        print(f"note: {reason}")
        return
    print(f"{out / PACKED_DIR} is older than the encodings written now: packing again")
    shards = pack(out)
    print(f"wrote {len(shards)} shard(s) to {out / PACKED_DIR}")


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            cfg = parse_config(ProcessConfig, argv, description=__doc__.split("\n\n")[0])
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        run(cfg)
    except PreprocessInterrupted:
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # outside the processing loop
        print("interrupted: the manifest keeps every finished file; run the same command again to resume",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
