"""Choose the search embedding for the gallery searched, on the user's groups of it
(``SimDeepDXF.py --gallery DIR --groups FILE --choose OUT.pth``).

A joint checkpoint stores the embedding chosen on the archive it was trained on. Another
archive may want another one: on one footprint library of our measurements the
standardized counts were the strongest floor, on another a rotation-robust layout grid,
by a wide margin. With groups of similar drawings of the gallery, the same candidates as
at training (``utils.train.embedding_choice``: the learned parts, every floor and their
fusions, floors z-scored with the gallery) are scored on those groups, the same rule picks
(the standardized counts unless another floor, then a learned candidate, is better beyond
the corrected noise), and
a copy of the checkpoint holding that choice is written; ``--embedding auto`` with it
then searches exactly that embedding, and says where it was chosen.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.ranking import resolve_groups


def choice_files(files: Sequence[tuple[Path, str]], groups: Sequence[Sequence[str]], max_drawings: int,
                 seed: int = 0) -> list[tuple[Path, str]]:
    """The gallery files a choice ranks: every member of ``groups`` (resolved as ``--groups``
    resolves names), then a seeded sample of the others, ``max_drawings`` at most (the members
    are all kept). A million-drawing gallery is not embedded whole to choose."""
    if len(files) <= max_drawings:
        return list(files)
    index_groups, _ = resolve_groups([name for _, name in files], groups)
    members = sorted({i for g in index_groups for i in g})
    taken = set(members)
    others = [i for i in range(len(files)) if i not in taken]
    room = max(0, max_drawings - len(members))
    sample = np.random.default_rng(seed).permutation(len(others))[:room]
    keep = sorted(members + [others[k] for k in sample])
    return [files[i] for i in keep]


class ChoiceError(Exception):
    """Nothing to choose on (no group with two members in the gallery)."""


def choose_for_gallery(gallery: Any, groups: Sequence[Sequence[str]], groups_file: str) -> dict[str, Any]:
    """The choice (``utils.train.embedding_choice.choose_from_parts``) over every drawing of
    ``gallery`` (built with ``utils.retrieval.embedders.parts_embedder``) against ``groups``
    (names as ``--groups`` reads them; a bare stem works when it is unique).

    Raises:
        ChoiceError: no group has two members in the gallery.
    """
    from utils.train.embedding_choice import choose_from_parts  # torch: only when a model is scored

    index_groups, _ = resolve_groups(gallery.names, groups)
    named = [[gallery.names[i] for i in g] for g in index_groups if len(g) >= 2]
    if not named:
        raise ChoiceError(f"--choose: no group of {groups_file} has two drawings in the gallery: nothing to choose on")
    parts = gallery.embedder.split(gallery.rows)
    where = f"queries of {Path(groups_file).name} over this gallery"
    choice = choose_from_parts(parts, gallery.names, named, where)
    choice["chosen_on"] = {"groups": str(groups_file), "n_drawings": len(gallery.names)}
    return choice


def write_choice(model_path: str | Path, out: str | Path, choice: dict[str, Any]) -> Path:
    """A copy of the checkpoint ``model_path`` at ``out`` that holds ``choice`` as its
    ``search_embedding`` (``out`` may be ``model_path`` itself: then it is rewritten)."""
    from utils.train.embedding_choice import store_choice

    out = Path(out)
    if out.resolve() != Path(model_path).resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, out)
    store_choice([out], choice)
    return out


__all__ = ["ChoiceError", "choice_files", "choose_for_gallery", "write_choice"]
