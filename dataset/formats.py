"""The constants of the two encodings and of drawing names, and nothing else.

What the files of preprocessing hold, in numbers and names: the GF classes and the
width of a GF node, the DeepDXF entity types and columns, the version of both
encodings, and the default rule that groups drawing names. ``model/`` and ``config/``
import these and nothing else of ``dataset/`` (no ezdxf, numpy or h5py behind this
module); the readers and writers of the files are ``dataset/dxf_process_GF.py`` and
``dataset/dxf_process_DeepDXF.py``, the functions on names ``dataset/names.py``.
"""
from __future__ import annotations

#: Version of both encodings (written into every DeepDXF ``.h5``; older outputs are
#: encoded again by a rerun of preprocessing). 2: DIMENSION boxes at their block's
#: insert point, box tests tolerant to floating-point noise.
FORMAT_VERSION = 2

# ----------------------------------------------------------------------------- GF

#: The GF classes in node order (rows/columns of the matrices of ``GF/<name>.npz``).
GF_CLASSES: tuple[str, ...] = (
    "ARC", "TEXT", "MTEXT", "LWPOLYLINE", "INSERT",
    "DIMENSION", "LEADER", "CIRCLE", "HATCH", "LINE",
)
#: Nodes of a GF graph (one per class).
GF_NODES = len(GF_CLASSES)
#: Features of a GF node: the free count and one overlap column per class.
GF_FEATURES = 1 + GF_NODES
#: Rings around the drawing centre and cells per side of the symmetrized grid of the
#: ``layout`` array (``dataset.dxf_process_GF.layout_features``).
LAYOUT_RINGS = 4
LAYOUT_GRID = 4
#: Columns of ``layout``: ring shares, then one share per orbit of the grid cells under
#: the 8 turns and flips of the square.
LAYOUT_DIM = LAYOUT_RINGS + ((LAYOUT_GRID + 1) // 2) * ((LAYOUT_GRID + 1) // 2 + 1) // 2

# ----------------------------------------------------------------------------- DeepDXF

#: Entity types of a DeepDXF row (column 0 is the index into this tuple).
DEEPDXF_TYPES: tuple[str, ...] = (
    "LINE", "CIRCLE", "ARC", "LWPOLYLINE", "TEXT", "MTEXT",
    "HATCH", "DIMENSION", "LEADER", "INSERT", "SPLINE", "SOLID",
)
N_TYPES = len(DEEPDXF_TYPES)
#: Quantized parameter slots per row (columns 1..N_PARAMS).
N_PARAMS = 12
#: The column of the DIMENSION value (``round(value * 1000)``).
VALUE_COLUMN = 1 + N_PARAMS
N_COLUMNS = VALUE_COLUMN + 1
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(DEEPDXF_TYPES)}
#: Slot kinds of the parameters of each type, in slot order (``X``/``Y`` coordinate,
#: ``L`` length, ``A`` angle, ``N`` count or flag, ``S`` scale; unused slots are absent).
#: The meaning and quantization of each slot: ``dataset/dxf_process_DeepDXF.py``.
PARAM_TABLE: dict[str, str] = {
    "LINE": "XYXY",
    "CIRCLE": "XYL",
    "ARC": "XYLAA",
    "LWPOLYLINE": "NNXYXYXYXYNL",
    "TEXT": "XYLANN",
    "MTEXT": "XYLANL",
    "HATCH": "NNXYXYAS",
    "DIMENSION": "XYXYXYXYN",
    "LEADER": "NXYXYN",
    "INSERT": "XYSSAXYXYN",
    "SPLINE": "NNNNXYXYXYXY",
    "SOLID": "XYXYXYXYN",
}
#: 0-based parameter indices (column - 1) of the boxes ``xmin, ymin, xmax, ymax`` of a type:
#: after a turn or mirror their corners are sorted again.
BOX_SLOTS: dict[str, tuple[int, int, int, int]] = {
    "LWPOLYLINE": (2, 3, 4, 5), "HATCH": (2, 3, 4, 5), "INSERT": (5, 6, 7, 8), "SPLINE": (4, 5, 6, 7)}
#: Row columns (x column, y column) of the slot pairs whose mean is an entity's reference
#: point, per type: where the layout grids (``model/floors.py``) and the grid pooling of
#: the DeepDXF model (``model/layers/grid_pooling.py``) place an entity.
REF_SLOTS: dict[str, tuple[tuple[int, int], ...]] = {
    "LINE": ((1, 2), (3, 4)),
    "CIRCLE": ((1, 2),),
    "ARC": ((1, 2),),
    "LWPOLYLINE": ((3, 4), (5, 6)),
    "TEXT": ((1, 2),),
    "MTEXT": ((1, 2),),
    "HATCH": ((3, 4), (5, 6)),
    "DIMENSION": ((1, 2),),
    "LEADER": ((2, 3),),
    "INSERT": ((1, 2),),
    "SPLINE": ((5, 6), (7, 8)),
    "SOLID": ((1, 2), (3, 4), (5, 6)),
}
#: The default cap on the DeepDXF rows of one drawing (``dataset/dxf_process.py --max_len``).
DEFAULT_MAX_LEN = 50_000

# ----------------------------------------------------------------------------- drawing names

#: Removed from the end of a drawing name to give its group (``dataset.names.group_of``),
#: in this order of the name: separators, a revision marker (" Rev1", "REV C", "Rev.2",
#: "_rev3", "-r2"; not glued to a preceding letter or digit), a piece suffix ("_5"),
#: trailing spaces. Revisions and pieces of one drawing then share a group and stay on
#: one side of every cut of a split. Every config's ``group_pattern`` defaults to it.
DEFAULT_GROUP_PATTERN = (
    r"[\s_\-.]*"
    r"(?:(?<![A-Za-z0-9])(?:rev\.?\s*[A-Za-z0-9]{1,3}|r\d{1,3}))?"
    r"(?:_\d+)?"
    r"[\s_\-]*$"
)

__all__ = [
    "FORMAT_VERSION", "GF_CLASSES", "GF_NODES", "GF_FEATURES", "LAYOUT_RINGS", "LAYOUT_GRID", "LAYOUT_DIM",
    "DEEPDXF_TYPES", "N_TYPES", "N_PARAMS", "VALUE_COLUMN", "N_COLUMNS", "TYPE_INDEX", "PARAM_TABLE", "BOX_SLOTS",
    "REF_SLOTS", "DEFAULT_MAX_LEN", "DEFAULT_GROUP_PATTERN",
]
