"""Defaults of the grouped split that every trainer's config shares.

Kept apart from ``utils/splits.py`` (which needs scikit-learn) so that the configs
import only this constant.
"""
from __future__ import annotations

#: Removed from the end of a drawing name to give its group, in this order of the
#: name: separators, a revision marker (" Rev1", "REV C", "Rev.2", "_rev3", "-r2"; not
#: glued to a preceding letter or digit), a piece suffix ("_5"), trailing spaces.
#: Revisions and pieces of one drawing then share a group and stay on one side of
#: every cut of the split.
DEFAULT_GROUP_PATTERN = (
    r"[\s_\-.]*"
    r"(?:(?<![A-Za-z0-9])(?:rev\.?\s*[A-Za-z0-9]{1,3}|r\d{1,3}))?"
    r"(?:_\d+)?"
    r"[\s_\-]*$"
)

__all__ = ["DEFAULT_GROUP_PATTERN"]
