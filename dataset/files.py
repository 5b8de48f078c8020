"""Small file helpers shared by every writer of the project's formats.

``atomic_write`` is the one way this project writes a file that another process may
read at the same time (encodings, checkpoints, caches, run logs): the content goes to
a temporary file in the same folder, which then replaces the target in one step, so a
reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()
"""What ``open(path, "w")`` would give a new file (``mkstemp`` makes its files private: 0o600)."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the final file; its folder is created when missing.
        write: called with a temporary path in the same folder that keeps ``path``'s
            suffix (``np.savez`` and ``h5py`` see the extension they expect); it must
            create that file.

    Returns:
        ``path`` as a :class:`Path`, with the permissions of a newly created file
        (``0o666`` less the umask). On any error the temporary file is removed and the
        previous ``path`` (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
