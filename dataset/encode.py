"""Encode one drawing: parse a DXF file once and compute both encodings.

The library side of preprocessing, used by the command line ``dataset/dxf_process.py``
(a folder, a worker pool, a manifest) and by ``SimDeepDXF.py`` for ``.dxf`` queries
encoded on the fly:

- :func:`encode_drawing`: one DXF file -> GF encoding + DeepDXF rows, in memory;
- :func:`encode_file`: the same, written as ``<output>/GF/<name>.npz`` and
  ``<output>/DeepDXF/<name>.h5``;
- :func:`process_file`: :func:`encode_file` for a worker: every problem of the file
  becomes a ``skipped`` / ``failed`` manifest row (``dataset/manifest.py``) instead of
  an exception.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.archive import output_paths
from dataset.dxf_process_DeepDXF import deepdxf_encode, save_h5
from dataset.dxf_process_GF import gf_encode, save_gf
from dataset.dxf_read import DrawingError, read_drawing
from dataset.formats import DEEPDXF_TYPES, DEFAULT_MAX_LEN, GF_CLASSES, N_COLUMNS
from dataset.manifest import new_row


@dataclass
class EncodeTask:
    """One DXF file to encode and write under ``output``.

    ``size`` and ``mtime_ns`` are the file's when the run started; they go into the
    manifest row and the ``.h5`` attributes so that a later run knows the file is unchanged.
    """

    path: str
    name: str
    output: str
    max_len: int = DEFAULT_MAX_LEN
    classes: tuple[str, ...] = GF_CLASSES
    size: int = 0
    mtime_ns: int = 0


def encode_drawing(path: str | Path, classes: tuple[str, ...] = GF_CLASSES,
                   max_len: int = DEFAULT_MAX_LEN) -> tuple[dict | None, np.ndarray, dict]:
    """Parse one DXF file and compute both encodings in memory (nothing is written).

    Args:
        path: the DXF file.
        classes: the GF classes, in node order.
        max_len: keep at most this many DeepDXF rows.

    Returns:
        ``(gf, rows, info)``: the GF encoding (``dxf_process_GF.gf_encode`` dict, None
        when skipped), the DeepDXF rows int32 ``[L, N_COLUMNS]`` (``L = 0`` when skipped)
        and ``info``: the ``deepdxf_encode`` info plus ``n_modelspace`` (modelspace
        entities, kept or not), ``recovered`` (read with ``ezdxf.recover``) and
        ``skip_reason`` ("" for a usable drawing, else why it holds nothing to learn from).

    Raises:
        DrawingError: the file cannot be read as a DXF drawing.
    """
    keep = set(classes) | set(DEEPDXF_TYPES)
    drawing = read_drawing(path, keep_types=keep)
    n_all = drawing.n_modelspace
    info: dict = {"n_modelspace": n_all, "recovered": drawing.recovered, "skip_reason": ""}
    empty = np.zeros((0, N_COLUMNS), dtype=np.int32)
    if len(drawing) == 0:
        found = drawing.other_types.most_common(3)
        what = ", ".join(f"{n} {t}" for t, n in found) if found else "an empty modelspace"
        damaged = " in a damaged file read with ezdxf.recover" if drawing.recovered else ""
        info["skip_reason"] = f"no supported entities ({what}){damaged}"
        return None, empty, info
    types, boxes, invalid, entities = drawing.types, drawing.boxes, drawing.invalid, drawing.entities
    rows, dd_info = deepdxf_encode(entities, types, boxes, invalid, max_len)
    info.update(dd_info)
    if len(rows) == 0:
        info["skip_reason"] = "no supported entities with valid coordinates"
        return None, rows, info
    valid = ~invalid
    gf = gf_encode([t for t, v in zip(types, valid) if v], boxes[valid], classes)
    return gf, rows, info


def remove_outputs(output: str | Path, name: str) -> None:
    """Delete a drawing's encodings (stale results of a file that now fails)."""
    for path in output_paths(output, name):
        path.unlink(missing_ok=True)


def encode_file(task: EncodeTask) -> dict:
    """Parse, encode and write one drawing.

    Returns:
        the manifest fields it sets: ``status`` (only when ``skipped``), ``reason``,
        ``n_entities``, ``n_dropped``, ``n_cut``.

    Raises:
        DrawingError: the file cannot be read as a DXF drawing.
    """
    gf, rows, info = encode_drawing(task.path, task.classes, task.max_len)
    n_all = info["n_modelspace"]
    if info["skip_reason"]:
        return {"status": "skipped", "reason": info["skip_reason"], "n_entities": n_all, "n_dropped": n_all}
    gf_path, h5_path = output_paths(task.output, task.name)
    save_gf(gf_path, gf)
    save_h5(h5_path, rows, info, source=task.path, source_size=task.size,
            source_mtime_ns=task.mtime_ns, recovered=info["recovered"])
    n_dropped = n_all - info["n_total"]
    reason = "read with ezdxf.recover" if info["recovered"] else ""
    return {"n_entities": n_all, "n_dropped": n_dropped, "n_cut": info["n_cut"], "reason": reason}


def process_file(task: EncodeTask) -> dict:
    """Read one drawing, write its two encodings, and return its manifest row.

    Never raises for a bad file: every problem becomes a ``skipped``/``failed`` row
    (a time limit and a dying process are the worker pool's business,
    ``dataset.parallel.run_tasks``).
    """
    start = time.perf_counter()
    row = new_row(task)
    try:
        row.update(encode_file(task))
    except DrawingError as err:
        row.update(status="failed", reason=err.reason)
    except MemoryError:
        row.update(status="failed", reason="out of memory")
    except Exception as err:  # one bad file must not stop the run: record what happened
        row.update(status="failed", reason=f"unexpected error ({type(err).__name__}: {err})"[:300])
    row["seconds"] = round(time.perf_counter() - start, 3)
    if row["status"] != "ok":
        remove_outputs(task.output, task.name)
    return row


__all__ = ["EncodeTask", "encode_drawing", "remove_outputs", "encode_file", "process_file"]
