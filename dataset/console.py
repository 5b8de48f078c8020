"""Progress bars that behave when output goes to a file.

On a terminal a tqdm bar is drawn; redirected to a file (a batch job, ``make demo >
log``), tqdm's carriage returns would leave half-lines and glue the next message to
a bar line, so no bar is drawn there. Every command of the toolkit draws its bars
through :func:`progress_bar`.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm import tqdm

__all__ = ["interactive", "progress_bar"]


def interactive() -> bool:
    """True when stderr is a terminal (bars are drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def progress_bar(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal, a silent pass-through (``disable=True``) otherwise.
    Keyword arguments go to tqdm (``total``, ``desc``, ``unit``, ...)."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    disabled = bool(kwargs.pop("disable", False)) or not interactive()
    return tqdm(iterable, disable=disabled, **kwargs)
