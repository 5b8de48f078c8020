"""The evaluation sets of bench/archive_quality.py, as preprocessed folders of links + groups.

    python bench/make_bench_sets.py kicad --encodings data/enc/kicad --labels KICAD_DIR/groups.json
    python bench/make_bench_sets.py revisions --revisions data/bench/revisions --encodings data/bench/prep-revisions
    python bench/make_bench_sets.py human --encodings data/enc/leadframe-dev data/enc/leadframe \
        --labels LABELLED_DIR/groups.json
    python bench/make_bench_sets.py folders --encodings data/enc/librecad --name librecad

- ``kicad``: a footprint library preprocessed by ``dataset/dxf_process.py`` (names
  ``<folder>__<footprint>``) split **by library folder** into train / selection / report:
  folders ordered by a seeded SHA-1 hash and cut at the cumulative drawing fractions
  ``--fractions`` (a folder goes where its middle falls), so no kind of part is on two
  sides. Each side gets ``kind.json`` and ``variant.json`` (the label groups restricted to
  it) and ``groups.json`` (both).
- ``revisions``: the output of ``dataset/make_revisions.py`` (its ``splits.json``) and its
  preprocessed encodings -> ``lf-train``, ``lf-selection``, ``lf-report``, each source with
  its revisions as one group.
- ``human``: labelled drawings plus distractors in one gallery, with their ``groups.json``.
- ``folders``: an archive preprocessed by ``dataset/dxf_process.py`` from nested folders
  (names ``<folder>__<subfolder>__<drawing>``), e.g. a symbol library: one gallery
  ``--name`` whose groups are the folders (``groups.json``: "the same kind of drawing"),
  and those groups halved by a seeded hash (``groups-a.json``, ``groups-b.json``: label one
  half for training, judge on the other).

Everything goes under ``--output`` (default ``data/bench``); the links point at the
encodings, nothing is copied.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _h01(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:12], 16) / float(16 ** 12)


def link_drawings(dest: Path, drawings: Sequence[tuple[str, Path]]) -> None:
    """``dest/GF/<name>.npz`` and ``dest/DeepDXF/<name>.h5`` linked to each ``(name, encodings folder)``."""
    for sub, ext in (("GF", ".npz"), ("DeepDXF", ".h5")):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for name, src in drawings:
            link = dest / sub / f"{name}{ext}"
            if not link.exists() and (src / sub / f"{name}{ext}").exists():
                link.symlink_to((src / sub / f"{name}{ext}").resolve())


def split_by_folder(names: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Names ``<folder>__<rest>`` split by folder at the cumulative drawing ``fractions``."""
    folders: dict[str, list[str]] = {}
    for n in names:
        folders.setdefault(n.split("__", 1)[0], []).append(n)
    order = sorted(folders, key=lambda f: (_h01(f"{seed}/kicad/{f}"), f))
    b0, b1 = fractions[0] * len(names), (fractions[0] + fractions[1]) * len(names)
    out: dict[str, list[str]] = {"train": [], "selection": [], "report": []}
    done = 0
    for f in order:
        mid = done + len(folders[f]) / 2
        out["train" if mid < b0 else "selection" if mid < b1 else "report"] += folders[f]
        done += len(folders[f])
    return {k: sorted(v) for k, v in out.items()}


def kicad(encodings: Path, labels: Path, out: Path, fractions: Sequence[float], seed: int) -> None:
    names = sorted(p.stem for p in (encodings / "DeepDXF").glob("*.h5"))
    tasks = json.loads(labels.read_text(encoding="utf-8"))
    for side, members in split_by_folder(names, fractions, seed).items():
        dest = out / "kicad" / side
        link_drawings(dest, [(n, encodings) for n in members])
        keep = set(members)
        per_task = {t: [g2 for g in tasks[t] if len(g2 := [n for n in g if n in keep]) >= 2] for t in ("kind", "variant")}
        for t, groups in per_task.items():
            (dest / f"{t}.json").write_text(json.dumps(groups, ensure_ascii=False))
        (dest / "groups.json").write_text(json.dumps(per_task["kind"] + per_task["variant"], ensure_ascii=False))
        print(f"kicad {side}: {len(members)} drawings, {len(per_task['kind'])} kind and "
              f"{len(per_task['variant'])} variant groups")


def revisions(revisions_dir: Path, encodings: Path, out: Path) -> None:
    splits = json.loads((revisions_dir / "splits.json").read_text(encoding="utf-8"))
    names = sorted(p.stem for p in (encodings / "DeepDXF").glob("*.h5"))
    for side in ("train", "selection", "report"):
        sources = set(splits[side])
        members = [n for n in names if n.split("__rev")[0] in sources]
        dest = out / f"lf-{side}"
        link_drawings(dest, [(n, encodings) for n in members])
        groups: dict[str, list[str]] = {}
        for n in members:
            groups.setdefault(n.split("__rev")[0], []).append(n)
        (dest / "groups.json").write_text(json.dumps([g for g in groups.values() if len(g) >= 2], ensure_ascii=False))
        print(f"lf-{side}: {len(members)} drawings, {len(groups)} sources")


def human(encodings: Sequence[Path], labels: Path, out: Path) -> None:
    dest = out / "lf-human"
    drawings = [(p.stem, e) for e in encodings for p in sorted((e / "DeepDXF").glob("*.h5"))]
    link_drawings(dest, drawings)
    shutil.copyfile(labels, dest / "groups.json")
    print(f"lf-human: {len(drawings)} drawings")


def folder_of(name: str) -> str:
    """The folder part of a name ``<folder>__...__<drawing>`` ("" for a drawing at the top)."""
    return name.rsplit("__", 1)[0] if "__" in name else ""


def folders(encodings: Path, out: Path, name: str, seed: int) -> None:
    names = sorted(p.stem for p in (encodings / "DeepDXF").glob("*.h5"))
    dest = out / name
    link_drawings(dest, [(n, encodings) for n in names])
    by_folder: dict[str, list[str]] = {}
    for n in names:
        by_folder.setdefault(folder_of(n), []).append(n)
    groups = {f: g for f, g in sorted(by_folder.items()) if len(g) >= 2}
    (dest / "groups.json").write_text(json.dumps(list(groups.values()), ensure_ascii=False))
    halves = {"a": [], "b": []}
    for f, g in groups.items():
        halves["a" if _h01(f"{seed}/{name}/{f}") < 0.5 else "b"].append(g)
    for half, gs in halves.items():
        (dest / f"groups-{half}.json").write_text(json.dumps(gs, ensure_ascii=False))
    print(f"{name}: {len(names)} drawings in {len(groups)} folder groups "
          f"({len(halves['a'])} in groups-a.json, {len(halves['b'])} in groups-b.json)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["kicad", "revisions", "human", "folders"])
    p.add_argument("--encodings", nargs="+", required=True, help="preprocessed folders (GF/, DeepDXF/)")
    p.add_argument("--labels", default=None, help="kicad: groups.json with kind/variant; human: groups.json")
    p.add_argument("--revisions", default=None, help="revisions: the make_revisions.py output folder")
    p.add_argument("--fractions", type=float, nargs=3, default=[0.6, 0.2, 0.2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="folders", help="folders: the set's folder name under --output")
    p.add_argument("--output", default="data/bench")
    a = p.parse_args(argv)
    out, enc = Path(a.output), [Path(e) for e in a.encodings]
    if a.what == "kicad":
        kicad(enc[0], Path(a.labels), out, a.fractions, a.seed)
    elif a.what == "revisions":
        revisions(Path(a.revisions), enc[0], out)
    elif a.what == "folders":
        folders(enc[0], out, a.name, a.seed)
    else:
        human(enc, Path(a.labels), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
