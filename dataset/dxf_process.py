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

This module is the command line (worker pool, manifest, summary); encoding one
drawing is :mod:`dataset.encode`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py

from config.cli import parse_config
from config.process_config import ProcessConfig, parse_shard
from dataset.console import progress_bar
from dataset.dxf_process_DeepDXF import FORMAT_VERSION
from dataset.dxf_read import TYPE_ALIASES, find_drawings
from dataset.encode import DEFAULT_INPUT, EncodeTask, failed_row, output_paths, process_file
from dataset.files import atomic_write_text
from dataset.pack import PACKED_DIR, pack, pack_staleness
from dataset.parallel import run_tasks

MANIFEST_COLUMNS = ["path", "name", "status", "reason", "n_entities", "n_dropped", "n_cut",
                    "seconds", "size", "mtime_ns"]
MANIFEST = "manifest.csv"
SHARD_MANIFEST = re.compile(r"manifest-(\d+)-of-(\d+)\.csv")
TRANSIENT_FAILURES = ("timed out", "worker process died", "out of memory")
"""Reasons of ``failed`` rows that a rerun tries again (they depend on limits and load, not the file)."""
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


class PreprocessInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the run has said what it kept."""


class ManifestError(ValueError):
    """Shard manifests that cannot be merged (missing, of different N, overlapping)."""


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


def manifest_path(output: Path, shard: tuple[int, int] | None = None) -> Path:
    """``output/manifest.csv``, or ``output/manifest-I-of-N.csv`` for shard ``(I, N)``."""
    return output / (MANIFEST if shard is None else f"manifest-{shard[0]}-of-{shard[1]}.csv")


# --------------------------------------------------------------------------- the manifest


def read_manifest(path: Path) -> dict[str, dict]:
    """Rows of an earlier manifest keyed by path ({} if there is none); a later row of a
    path wins, and a line cut short by a killed run is ignored."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)
                if row.get("path") and None not in row.values()}


def _csv_text(rows: list[dict], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write a whole manifest, rows sorted by path, atomically."""
    atomic_write_text(path, _csv_text(sorted(rows, key=lambda r: r["path"]), header=True))


class ManifestAppender:
    """Appends one row per finished file to a manifest and flushes it at once, so that
    a run killed at any moment leaves every finished row on disk."""

    def __init__(self, path: Path, rows: list[dict]) -> None:
        write_manifest(path, rows)  # the rows kept from earlier runs, then appends
        self._file = open(path, "a", newline="", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._file.write(_csv_text([row], header=False))  # one write per row
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def merge_manifests(output: str | Path) -> list[dict]:
    """Merge ``manifest-I-of-N.csv`` (every I of one N) under ``output`` into ``manifest.csv``.

    Returns:
        the merged rows, sorted by path: what one run over the whole input writes.

    Raises:
        ManifestError: no shard manifests, several N, a missing shard, or a file in two shards.
    """
    out = Path(output)
    found: dict[int, dict[int, Path]] = {}
    for path in sorted(out.glob("manifest-*-of-*.csv")):
        match = SHARD_MANIFEST.fullmatch(path.name)
        if match:
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise ManifestError(f"no shard manifests (manifest-I-of-N.csv) in {out}: "
                            "run dataset/dxf_process.py with --shard I/N first")
    if len(found) > 1:
        raise ManifestError(f"shard manifests of different runs in {out} (N = "
                            f"{', '.join(map(str, sorted(found)))}): keep the files of one N only")
    (n, shards), = found.items()
    missing = [f"manifest-{i}-of-{n}.csv" for i in range(n) if i not in shards]
    if missing:
        raise ManifestError(f"cannot merge {out}: {', '.join(missing)} missing (run those shards first)")
    rows: dict[str, dict] = {}
    for i in range(n):
        for path, row in read_manifest(shards[i]).items():
            if path in rows:
                raise ManifestError(f"{path} is in two shard manifests of {out}: "
                                    f"were the shards run over different --input?")
            rows[path] = row
    merged = sorted(rows.values(), key=lambda r: r["path"])
    write_manifest(out / MANIFEST, merged)
    return merged


def earlier_rows(output: Path, manifest: Path) -> dict[str, dict]:
    """Rows of every manifest under ``output`` (shard manifests, the merged one, then
    ``manifest`` itself, which wins), keyed by path: whichever run did a file, sharded
    or not, a later run reuses it when the file is unchanged."""
    rows: dict[str, dict] = {}
    for path in [*sorted(output.glob("manifest-*-of-*.csv")), output / MANIFEST, manifest]:
        rows.update(read_manifest(path))
    return rows


def is_unchanged(task: EncodeTask, previous: dict | None) -> bool:
    """True when an earlier run already handled this exact file (same size and mtime)
    and, for an ``ok`` drawing, both encodings are still there, written by this encoding
    version (``FORMAT_VERSION``). A file that failed for a
    reason of the run (timed out, its worker died) is tried again."""
    if previous is None:
        return False
    if previous.get("status") == "failed" and previous.get("reason", "").startswith(TRANSIENT_FAILURES):
        return False
    if str(previous.get("size")) != str(task.size) or str(previous.get("mtime_ns")) != str(task.mtime_ns):
        return False
    if previous.get("status") != "ok":
        return True
    gf_path, h5_path = output_paths(task.output, task.name)
    if not gf_path.is_file() or not h5_path.is_file():
        return False
    try:
        with h5py.File(h5_path, "r") as f:
            return (int(f.attrs.get("source_mtime_ns", -1)) == task.mtime_ns
                    and int(f.attrs.get("format_version", -1)) == FORMAT_VERSION)  # older encodings: again
    except OSError:
        return False


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


def _result_row(result) -> dict:
    """The manifest row of one finished task (a ``dataset.parallel.TaskResult``)."""
    if result.error is None:
        return result.value
    return failed_row(result.task, result.error, result.seconds)  # timed out, worker died, ...


def run(cfg: ProcessConfig) -> list[dict]:
    """Preprocess every DXF file under ``cfg.input`` (or merge shard manifests with
    ``cfg.merge``); returns the manifest rows.

    Raises:
        SystemExit: a missing input folder, no .dxf file at all, bad flags.
        PreprocessInterrupted: Ctrl-C; the finished rows are in the manifest already.
    """
    out = Path(cfg.output)
    if cfg.merge:
        try:
            rows = merge_manifests(out)
        except ManifestError as err:
            raise SystemExit(f"error: {err}") from None
        print(summarize(rows, 0))
        print(f"merged the shard manifests into {manifest_path(out)}")
        refresh_pack(out, cfg.repack)
        return rows
    shard = parse_shard(cfg.shard) if cfg.shard else None
    ensure_sample_corpus(cfg)
    missing = [p for p in cfg.input if not Path(p).exists()]
    if missing:
        raise SystemExit(f"error: input folder not found: {', '.join(missing)}")
    if len(cfg.gf_classes) != len(set(cfg.gf_classes)):
        raise SystemExit("error: --gf_classes has duplicates")
    classes = tuple(TYPE_ALIASES.get(c.upper(), c.upper()) for c in cfg.gf_classes)

    files = find_dxf_files(cfg.input)
    if not files:
        raise SystemExit(f"error: nothing to do: no .dxf files under {', '.join(cfg.input)} "
                         "(searched recursively; nothing was written)")
    if shard is not None:
        files = [(path, name) for path, name in files if shard_of(name, shard[1]) == shard[0]]
    manifest = manifest_path(out, shard)
    previous = {} if cfg.overwrite else earlier_rows(out, manifest)

    tasks, rows = [], []
    for path, name in files:
        stat = path.stat()
        task = EncodeTask(str(path), name, str(out), cfg.max_len, classes, stat.st_size, stat.st_mtime_ns)
        if is_unchanged(task, previous.get(task.path)):
            rows.append(previous[task.path])
        else:
            tasks.append(task)
    n_reused = len(rows)
    if tasks:
        (out / "GF").mkdir(parents=True, exist_ok=True)
        (out / "DeepDXF").mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    tasks.sort(key=lambda t: -t.size)  # big files first: better load balance

    appender = ManifestAppender(manifest, rows)
    bar = progress_bar(total=len(tasks), desc="preprocessing" + (f" shard {cfg.shard}" if shard else ""),
                       unit="file")
    results = run_tasks(process_file, tasks, workers=cfg.workers, timeout=cfg.timeout)
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
        n_new = len(rows) - n_reused
        print(f"interrupted: {n_new} of {len(tasks)} files done in this run and kept in {manifest} "
              f"({len(rows)} of {len(files)} in all); run the same command again to resume",
              file=sys.stderr, flush=True)
        raise PreprocessInterrupted() from None
    finally:
        results.close()
        bar.close()
        appender.close()
    write_manifest(manifest, rows)  # sorted by path: the same file whatever the finishing order
    print(summarize(rows, n_reused))
    what = f"shard {shard[0]}/{shard[1]}: " if shard else ""
    print(f"{what}wrote {out / 'GF'}/, {out / 'DeepDXF'}/ and {manifest}")
    if shard is not None:
        print(f"when every shard is done: python dataset/dxf_process.py --output {out} --merge")
    else:
        refresh_pack(out, cfg.repack)
    return rows


def refresh_pack(out: Path, repack: bool) -> None:
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
