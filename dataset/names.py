"""Drawing names and their groups.

A drawing's *name* is its path relative to the input folder without ``.dxf``
(``dataset.dxf_read.drawing_name``); its *group* is the name without a revision marker
and a piece suffix (:func:`group_of`), so that the revisions and pieces of one drawing
("QFN21LA(Cu) -508 Rev1_3", "... Rev1_5", "... Rev2_1") are one group: the unit of
every split (``utils/train/splits.py``) and of the revision benchmark
(``dataset/make_revisions.py``).
"""
from __future__ import annotations

import re

from dataset.formats import DEFAULT_GROUP_PATTERN

#: a revision marker inside a removed suffix (" Rev1", "__rev2", "REV C", "-r2")
REVISION_MARKER = re.compile(r"(?<![A-Za-z0-9])(?:rev\.?\s*[A-Za-z0-9]{1,3}|r\d{1,3})", re.IGNORECASE)


def group_of(name: str, pattern: str = DEFAULT_GROUP_PATTERN) -> str:
    """The group of a drawing name: ``re.sub(pattern, "", name)`` (case-insensitive),
    repeated while the removed suffix holds a revision marker.

    The repetition puts a revision of a piece with its piece's group:
    ``"X_1__rev0"`` -> ``"X_1"`` -> ``"X"`` (the group of ``"X_1"``), and
    ``"S REV 0__rev1"`` -> ``"S REV 0"`` -> ``"S"``. A suffix without a revision
    marker is removed once (``"4222105_4230076_0117"`` -> ``"4222105_4230076"``).
    Falls back to the whole name if the substitution leaves nothing.
    """
    group = name
    while True:
        shorter = re.sub(pattern, "", group, flags=re.IGNORECASE)
        if not shorter or shorter == group:
            break
        removed, group = group[len(shorter):], shorter
        if not REVISION_MARKER.search(removed):
            break
    return group if group else name


__all__ = ["REVISION_MARKER", "group_of"]
