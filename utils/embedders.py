"""Drawings -> embeddings: the one place that turns a checkpoint (or the non-learned
features) into an embedding function over drawings.

Two steps, kept apart so that a gallery can cache each one:

1. :func:`load_drawing`: a ``.dxf`` (encoded on the fly with
   ``dataset.encode.encode_drawing``, nothing written) or a preprocessed ``.h5``
   (with its GF twin ``../GF/<name>.npz`` when present) -> :class:`DrawingEncoding`.
2. :class:`Embedder` (from :func:`make_embedder`): encodings -> ``float32 [n, D]``.

Embedding kinds:

==========  ==================================================================
``gf``      the GF encoder's pooled node embeddings (needs the GF matrices)
``deepdxf`` the DeepDXF encoder's pooled output over every entity
``joint``   both learned embeddings, each L2-normalized, concatenated
``features`` the non-learned floor: ``log(1 + type counts)`` [12] and the raw GF
            matrices [210]; :meth:`Embedder.finalize` z-scores the columns with a
            reference set (the gallery) and L2-normalizes each block
            (``utils.retrieval.standardize_blocks``). No checkpoint needed.
``layout``  the non-learned layout floor: ``log(1 + count)`` of entities per type
            on an 8 x 8 grid [768] (:mod:`utils.floors`), z-scored and L2-normalized
            like ``features``. Needs only the DeepDXF rows.
``layout_rot`` the same counts pooled over the 8 turns and flips of the grid [120]:
            robust to drawings turned by 90°/180° or mirrored.
``joint_floors`` the ``joint`` embedding (unit length) followed by floor blocks that keep
            what counting already captures (:func:`combined_embedding`,
            :data:`COMBINED_BLOCKS`): the raw GF matrices, only L2-normalized
            (z-scoring them loses revisions), of length :data:`FLOOR_BLOCK_WEIGHT`.
            Blocks and weight were chosen on the selection split
            (``bench/learn_ablation.md``); it is what ``auto`` gives for a joint
            checkpoint.
==========  ==================================================================
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from dataset.dxf_process_DeepDXF import FORMAT_VERSION, N_COLUMNS, N_TYPES, load_h5
from dataset.dxf_process_GF import GF_CLASSES, LAYOUT_DIM, load_gf
from config.GF_config import SAVED_CONFIG_FALLBACKS
from config.sim_config import EMBEDDING_CHOICES
from dataset.dxf_read import DrawingError
from utils.floors import GRID, layout_embedding, layout_grid, layout_rot_embedding
from utils.retrieval import histogram_embedding, l2_normalize, raw_gf_embedding, zscore_l2

DXF_SUFFIXES = (".dxf",)
H5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED_SUFFIXES = DXF_SUFFIXES + H5_SUFFIXES
#: the non-learned kinds: no checkpoint, z-scored with a reference set before comparing
FLOOR_KINDS = ("features", "layout", "layout_rot")
HIST_DIM = N_TYPES
RAW_GF_DIM = len(GF_CLASSES) * (len(GF_CLASSES) + 1) + len(GF_CLASSES) ** 2
#: block sizes of each non-learned kind (each block L2-normalized after z-scoring)
FLOOR_BLOCKS = {"features": (HIST_DIM, RAW_GF_DIM), "layout": (N_TYPES * GRID * GRID,),
                "layout_rot": (N_TYPES * ((GRID + 1) // 2) * ((GRID + 1) // 2 + 1) // 2,)}
#: columns of each floor block of ``joint_floors``
COMBINED_SIZES = {"hist": HIST_DIM, "gf_raw": RAW_GF_DIM, "gf": RAW_GF_DIM, "layout": FLOOR_BLOCKS["layout"][0],
                  "layout_rot": FLOOR_BLOCKS["layout_rot"][0]}
#: floor blocks appended by ``joint_floors``: (name, z-scored with the reference?)
#: (chosen on the selection split among histogram, raw/z-scored GF and layout_rot blocks,
#: see bench/learn_ablation.md: adding the histogram or layout_rot lowered revision mAP)
COMBINED_BLOCKS: tuple[tuple[str, bool], ...] = (("gf_raw", False),)
#: length of each appended floor block relative to the unit-length learned block
#: (selection split, encoding format 2: 0.5 -> 0.887, 1 -> 0.910, 2 -> 0.932, 4 -> 0.938, 8 -> 0.940
#: mAP, 3 seeds; raw GF floor 0.938)
FLOOR_BLOCK_WEIGHT = 4.0
#: what ``--embedding auto`` gives for a joint checkpoint: the best learned embedding on the
#: selection split of ``bench/learn_ablation.py`` (see ``bench/learn_ablation.md``)
AUTO_JOINT = "joint_floors"


class EmbedderError(Exception):
    """The embedding function cannot be built (no checkpoint, wrong kind, ...)."""


@dataclass
class DrawingEncoding:
    """Both encodings of one drawing, in memory.

    Attributes:
        path: the file it came from (``.dxf`` or ``.h5``).
        source: the DXF source (the ``.dxf`` itself, or the ``.h5``'s ``source`` attribute).
        rows: DeepDXF rows int32 ``[L, 14]``.
        type_counts: int64 ``[12]`` supported entities per DeepDXF type (before any cut).
        gf_features: float32 ``[10, 11]`` or None (an ``.h5`` without its GF twin).
        gf_adjacency: float32 ``[10, 10]`` or None.
        layout: int32 ``[12, 8, 8]`` entities per type and grid cell (``utils.floors.layout_grid``
            of ``rows``).
        gf_layout: float32 ``[10, LAYOUT_DIM]`` the GF file's per-class occupancy (zeros when
            the file predates it), for GF models trained with ``GF_layout_features``.
    """

    path: str
    source: Optional[str]
    rows: np.ndarray
    type_counts: np.ndarray
    gf_features: Optional[np.ndarray] = None
    gf_adjacency: Optional[np.ndarray] = None
    layout: np.ndarray = field(default_factory=lambda: np.zeros((N_TYPES, GRID, GRID), dtype=np.int32))
    gf_layout: np.ndarray = field(default_factory=lambda: np.zeros((len(GF_CLASSES), LAYOUT_DIM), dtype=np.float32))

    @property
    def has_gf(self) -> bool:
        return self.gf_features is not None and self.gf_adjacency is not None


def gf_twin_path(h5_path: str | Path) -> Path:
    """Where preprocessing wrote the GF encoding of ``DeepDXF/<name>.h5``: ``GF/<name>.npz``."""
    p = Path(h5_path)
    return p.parent.parent / "GF" / f"{p.stem}.npz"


def _load_dxf(path: Path, max_len: int) -> DrawingEncoding:
    from dataset.encode import encode_drawing

    try:
        gf, rows, info = encode_drawing(path, GF_CLASSES, max_len)
    except DrawingError:
        raise
    except MemoryError as err:
        raise DrawingError(path, "out of memory while reading") from err
    except Exception as err:  # ezdxf can raise many types on odd files: name it, do not crash
        raise DrawingError(path, f"cannot be read ({type(err).__name__}: {err})"[:300]) from err
    if info["skip_reason"]:
        raise DrawingError(path, info["skip_reason"])
    return DrawingEncoding(
        path=str(path), source=str(path), rows=rows,
        type_counts=np.asarray(info["type_counts"], dtype=np.int64),
        gf_features=gf["features"].astype(np.float32), gf_adjacency=gf["adjacency"].astype(np.float32),
        layout=layout_grid(rows), gf_layout=np.asarray(gf["layout"], dtype=np.float32),
    )


def _load_h5(path: Path) -> DrawingEncoding:
    try:
        rows, attrs = load_h5(path)
    except KeyError as err:
        raise DrawingError(path, "HDF5 file without an 'entities' dataset: not a DeepDXF encoding") from err
    except OSError as err:
        raise DrawingError(path, f"not a readable HDF5 file ({str(err).splitlines()[0][:120]})") from err
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DrawingError(path, f"DeepDXF format_version {version}, expected {FORMAT_VERSION}: "
                                 "preprocess the DXF again with dataset/dxf_process.py")
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS or len(rows) == 0:
        raise DrawingError(path, f"entities of shape {rows.shape}, expected [L >= 1, {N_COLUMNS}]")
    counts = attrs.get("type_counts")
    if counts is None:
        counts = np.bincount(rows[:, 0], minlength=N_TYPES)
    source = attrs.get("source")
    enc = DrawingEncoding(path=str(path), source=str(source) if source else None,
                          rows=rows.astype(np.int32), type_counts=np.asarray(counts, dtype=np.int64),
                          layout=layout_grid(rows))
    twin = gf_twin_path(path)
    if twin.is_file():
        try:
            gf = load_gf(twin)
            enc.gf_features = np.asarray(gf["features"], dtype=np.float32)
            enc.gf_adjacency = np.asarray(gf["adjacency"], dtype=np.float32)
            if "layout" in gf:  # older files: zeros (the default)
                enc.gf_layout = np.asarray(gf["layout"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as err:
            raise DrawingError(path, f"its GF twin {twin} cannot be read ({err})") from err
    return enc


def load_drawing(path: str | Path, max_len: int = 50_000) -> DrawingEncoding:
    """Both encodings of a ``.dxf`` (parsed now) or a preprocessed ``.h5`` file.

    Raises:
        DrawingError: the file is missing, of another type, or cannot be read (with why).
    """
    path = Path(path)
    if path.is_dir():
        raise DrawingError(path, "is a folder, not a drawing: give a .dxf or .h5 file "
                                 "(to search a folder of drawings, use --gallery FOLDER --query FILE)")
    if not path.is_file():
        raise DrawingError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in DXF_SUFFIXES:
        return _load_dxf(path, max_len)
    if suffix in H5_SUFFIXES:
        return _load_h5(path)
    raise DrawingError(path, f"unsupported file type {path.suffix or '(none)'!r}: give a .dxf or a "
                             "preprocessed DeepDXF .h5 file")


def raw_features(encs: Sequence[DrawingEncoding]) -> np.ndarray:
    """The non-learned features ``[n, 12 + 210]``: log(1 + type counts), then the raw GF
    matrices (features and adjacency flattened); NaN in the GF part where it is missing."""
    n = len(encs)
    out = np.full((n, HIST_DIM + RAW_GF_DIM), np.nan, dtype=np.float64)
    if n == 0:
        return out
    out[:, :HIST_DIM] = histogram_embedding(np.stack([e.type_counts for e in encs]))
    has = [i for i, e in enumerate(encs) if e.has_gf]
    if has:
        out[has, HIST_DIM:] = raw_gf_embedding(np.stack([encs[i].gf_features for i in has]),
                                               np.stack([encs[i].gf_adjacency for i in has]))
    return out


def floor_raw(kind: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The raw (not yet z-scored) non-learned embedding of ``kind`` from stacked encodings.

    Args:
        kind: one of :data:`FLOOR_KINDS`.
        arrays: ``type_counts [n, 12]``, ``gf_features [n, 10, 11]``, ``gf_adjacency
            [n, 10, 10]`` (features), ``layout [n, 12, 8, 8]`` (layout kinds), as
            ``EmbeddingCache.encodings`` returns them.
    Returns:
        float64 ``[n, sum(FLOOR_BLOCKS[kind])]``.
    """
    if kind == "features":
        return np.concatenate([floor_block("hist", arrays), floor_block("gf_raw", arrays)], axis=1)
    if kind in ("layout", "layout_rot"):
        return floor_block(kind, arrays)
    raise ValueError(f"{kind!r} is not a non-learned embedding ({', '.join(FLOOR_KINDS)})")


def standardize_features(raw: np.ndarray, reference: Optional[np.ndarray] = None,
                         blocks: Sequence[int] = (HIST_DIM, RAW_GF_DIM)) -> np.ndarray:
    """The standardized floor of ``raw: [n, sum(blocks)]`` (default: the ``raw_features`` layout).

    Each column is z-scored with the mean/std of ``reference: [m, sum(blocks)]`` (m >= 2;
    None: no z-scoring), then each block of columns is L2-normalized separately, as
    ``utils.retrieval.standardize_blocks`` does. Returns float32 ``[n, sum(blocks)]``.
    """
    x = np.asarray(raw, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64) if reference is not None and len(reference) >= 2 else None
    out, start = [], 0
    for size in blocks:
        cols = slice(start, start + size)
        out.append(zscore_l2(x[:, cols], None if ref is None else ref[:, cols]))
        start += size
    return np.concatenate(out, axis=1).astype(np.float32)


def append_features(learned: np.ndarray, raw: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
    """``[L2(learned) | standardized histogram block | standardized GF block]``: three unit
    blocks of equal weight. ``learned: [n, D]``; ``raw: [n, 222]`` (:func:`raw_features`);
    ``reference: [m, 222]`` gives the z-scores. Returns float32 ``[n, D + 222]``."""
    return np.concatenate([_l2(np.asarray(learned, dtype=np.float64)), standardize_features(raw, reference)],
                          axis=1).astype(np.float32)


def floor_block(name: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One raw floor block of stacked encodings (:func:`stack_encodings`):

    ``hist`` log(1 + type counts) ``[n, 12]``; ``gf_raw`` / ``gf`` the GF matrices
    flattened ``[n, 210]``; ``layout`` ``[n, 768]``; ``layout_rot`` ``[n, 120]``.
    """
    if name == "hist":
        return histogram_embedding(arrays["type_counts"])
    if name in ("gf_raw", "gf"):
        return raw_gf_embedding(arrays["gf_features"], arrays["gf_adjacency"])
    if name == "layout":
        return layout_embedding(arrays["layout"])
    if name == "layout_rot":
        return layout_rot_embedding(arrays["layout"])
    raise ValueError(f"unknown floor block {name!r}: hist, gf, gf_raw, layout or layout_rot")


def combined_embedding(learned: np.ndarray, raw_blocks: Sequence[np.ndarray],
                       reference_blocks: Optional[Sequence[np.ndarray]] = None,
                       zscore: Sequence[bool] = (), weight: float = FLOOR_BLOCK_WEIGHT) -> np.ndarray:
    """A learned embedding that keeps what the floors capture: ``[L2(learned) | w * b_1 | ...]``.

    Each floor block ``b_k`` is z-scored column-wise with the statistics of its
    reference block (where ``zscore[k]``; the reference is the gallery, >= 2 rows) and
    L2-normalized, then scaled by ``weight``; the learned block has length 1, so in a
    cosine similarity each floor block weighs ``weight**2`` against the learned part.
    ``weight = 0`` gives the learned embedding alone (padded with zeros).

    Args:
        learned: ``[n, D]``.
        raw_blocks: floor blocks ``[n, d_k]`` (:func:`floor_block`).
        reference_blocks: ``[m, d_k]`` per block, or None (no z-scoring).
        zscore: per block, z-score it (default: all True).
    Returns:
        float32 ``[n, D + sum d_k]``.
    """
    parts = [_l2(np.asarray(learned, dtype=np.float64)).astype(np.float64)]
    for k, raw in enumerate(raw_blocks):
        z = zscore[k] if k < len(zscore) else True
        use = z and reference_blocks is not None and len(reference_blocks[k]) >= 2
        parts.append(weight * zscore_l2(raw, reference_blocks[k] if use else None))
    return np.concatenate(parts, axis=1).astype(np.float32)


def joint_vectors(gf: np.ndarray, deepdxf: np.ndarray) -> np.ndarray:
    """The ``joint`` embedding from its parts: ``[L2(gf) | L2(deepdxf)]``, gf ``[n, Dg]``,
    deepdxf ``[n, De]`` -> float32 ``[n, Dg + De]`` (two unit blocks).

    The formula is the training one, :func:`model.joint_loss.joint_embedding`, so the
    searched vectors are the trained ones."""
    import torch  # only with learned parts, when torch is loaded already

    from model.joint_loss import joint_embedding
    return joint_embedding(torch.from_numpy(np.asarray(gf)), torch.from_numpy(np.asarray(deepdxf))).numpy()


def _l2(x: np.ndarray) -> np.ndarray:
    """Unit rows of ``x: [n, d]`` as float32."""
    return l2_normalize(x).astype(np.float32)


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Embedder:
    """An embedding function over drawings.

    Attributes:
        kind: ``gf``, ``deepdxf``, ``joint`` or ``features``.
        identity: a string that changes whenever the embedding of a drawing could
            change (checkpoint bytes, kind, encoding format): the cache key of the model.
        needs_gf: drawings without GF matrices cannot be embedded.
        label: for tables and messages.
        config: the checkpoint's configuration (None for the non-learned kinds).
    """

    def __init__(self, kind: str, identity: str, label: str,
                 fn: Callable[[Sequence[DrawingEncoding]], np.ndarray], needs_gf: bool,
                 config: Optional[dict] = None, learned_dim: int = 0):
        self.kind = kind
        #: ``joint_floors``: columns of the learned part; the rest are raw floor blocks
        self.learned_dim = learned_dim
        self.config = config
        self.identity = identity
        self.label = label
        self._fn = fn
        self.needs_gf = needs_gf
        self.calls = 0  # drawings embedded so far (tests and logs)

    def check(self, enc: DrawingEncoding) -> None:
        """Raise :class:`DrawingError` when ``enc`` lacks what this embedding needs."""
        if self.needs_gf and not enc.has_gf:
            raise DrawingError(enc.path, f"no GF twin at {gf_twin_path(enc.path)}: the {self.kind} "
                                         "embedding needs the GF matrices (give the .dxf, or preprocess "
                                         "it with dataset/dxf_process.py, or use --embedding deepdxf)")

    def embed(self, encs: Sequence[DrawingEncoding]) -> np.ndarray:
        """``float32 [n, D]`` for ``n`` drawings (each passed :meth:`check`)."""
        for e in encs:
            self.check(e)
        self.calls += len(encs)
        if len(encs) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        return np.ascontiguousarray(self._fn(encs), dtype=np.float32)

    def finalize(self, emb: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Gallery-level step before comparing: the non-learned kinds z-score with the
        ``reference: [m, D]`` rows (the gallery) and L2-normalize each block; learned
        kinds are returned unchanged; ``joint_floors`` combines its learned part with its
        floor blocks z-scored with the reference (:func:`combined_embedding`)."""
        if self.kind in FLOOR_KINDS:
            return standardize_features(emb, reference, FLOOR_BLOCKS[self.kind])
        if self.kind == "joint_floors":
            return _finalize_combined(np.asarray(emb), reference, self.learned_dim)
        return np.asarray(emb, dtype=np.float32)


def _split_blocks(x: np.ndarray, learned_dim: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``[n, D + sum d_k]`` -> the learned part and the :data:`COMBINED_BLOCKS` floor blocks."""
    sizes = [COMBINED_SIZES[name] for name, _ in COMBINED_BLOCKS]
    cuts = np.cumsum([learned_dim] + sizes)[:-1]
    parts = np.split(np.asarray(x, dtype=np.float64), cuts, axis=1)
    return parts[0], parts[1:]


def _finalize_combined(emb: np.ndarray, reference: Optional[np.ndarray], learned_dim: int) -> np.ndarray:
    learned, blocks = _split_blocks(emb, learned_dim)
    ref_blocks = None if reference is None or len(reference) < 2 else _split_blocks(reference, learned_dim)[1]
    return combined_embedding(learned, blocks, ref_blocks, [z for _, z in COMBINED_BLOCKS], FLOOR_BLOCK_WEIGHT)


def gf_embedding_fn(model: Any, layout: bool = False) -> Callable[[Sequence[DrawingEncoding]], np.ndarray]:
    """Embedding function of a GF model; ``layout``: it was trained with ``GF_layout_features``
    (its node features are the 11 GF columns followed by the drawing's ``gf_layout``)."""
    from model.GF_model import embed_graphs

    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        feats = np.stack([e.gf_features for e in encs])
        if layout:
            feats = np.concatenate([feats, np.stack([e.gf_layout for e in encs])], axis=2)
        return embed_graphs(model, feats, np.stack([e.gf_adjacency for e in encs]))
    return fn


def deepdxf_embedding_fn(model: Any) -> Callable[[Sequence[DrawingEncoding]], np.ndarray]:
    """Embedding function of a DeepDXF model: encodings -> float32 [n, D]."""
    from model.DeepDXF_model import embed_sequences

    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        return embed_sequences(model, [e.rows for e in encs])
    return fn


def _joint_dim(gf_model: Any, dd_model: Any, layout: bool = False) -> int:
    """Columns of the joint embedding of these two models (one tiny dummy drawing each)."""
    from model.DeepDXF_model import embed_sequences
    from model.GF_model import embed_graphs

    c = len(GF_CLASSES)
    rows = np.full((1, N_COLUMNS), -1, dtype=np.int32)
    rows[0, 0] = 0
    width = c + 1 + (LAYOUT_DIM if layout else 0)
    g = embed_graphs(gf_model, np.zeros((1, c, width), np.float32), np.zeros((1, c, c), np.float32))
    d = embed_sequences(dd_model, [rows])
    return int(g.shape[1] + d.shape[1])


def _check_device(device: str) -> None:
    """Raise :class:`EmbedderError` for a device torch cannot use here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise EmbedderError(f"unknown --device {device!r} ({err}): use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmbedderError(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EmbedderError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")


FLOOR_LABELS = {"features": "features (standardized histogram + raw GF)",
                "layout": "layout (entity types on an 8x8 grid, standardized)",
                "layout_rot": "layout_rot (grid pooled over 90° turns and flips, standardized)"}


def floor_embedder(kind: str) -> Embedder:
    """The embedding function of a non-learned kind (:data:`FLOOR_KINDS`); no checkpoint."""
    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        return floor_raw(kind, stack_encodings(encs))
    return Embedder(kind, f"{kind}/fmt{FORMAT_VERSION}", FLOOR_LABELS[kind], fn, needs_gf=kind == "features")


def stack_encodings(encs: Sequence[DrawingEncoding]) -> dict[str, np.ndarray]:
    """Encodings stacked like ``EmbeddingCache.encodings``: ``type_counts [n, 12]``,
    ``gf_features [n, 10, 11]`` / ``gf_adjacency [n, 10, 10]`` (zeros where missing),
    ``has_gf [n]``, ``layout [n, 12, 8, 8]``, ``source [n]``."""
    c = len(GF_CLASSES)
    return {
        "type_counts": np.stack([np.asarray(e.type_counts, dtype=np.int64) for e in encs]),
        "gf_features": np.stack([e.gf_features if e.has_gf else np.zeros((c, c + 1), np.float32) for e in encs]),
        "gf_adjacency": np.stack([e.gf_adjacency if e.has_gf else np.zeros((c, c), np.float32) for e in encs]),
        "has_gf": np.array([e.has_gf for e in encs], dtype=bool),
        "layout": np.stack([e.layout for e in encs]),
        "source": np.array([e.source or "" for e in encs]),
    }


def make_embedder(model_path: Optional[str | Path], embedding: str = "auto", device: str = "cpu") -> Embedder:
    """The embedding function of a checkpoint, or of the non-learned features.

    Args:
        model_path: a checkpoint written by the trainers (not needed for ``features``).
        embedding: ``auto`` (what the checkpoint is), ``gf``, ``deepdxf``, ``joint``, or a
            non-learned kind (``features``, ``layout``, ``layout_rot``).
        device: where the model runs (``cpu``, ``cuda``, ...).
    Raises:
        EmbedderError: no checkpoint, a checkpoint of another toolkit/format version, or
            one that does not hold the requested model.
    """
    if embedding not in EMBEDDING_CHOICES:
        raise EmbedderError(f"unknown embedding {embedding!r}: choose one of {', '.join(EMBEDDING_CHOICES)}")
    if embedding in FLOOR_KINDS:
        return floor_embedder(embedding)
    from utils.train.checkpoint import CheckpointError, load_trained_models

    if model_path is None:
        raise EmbedderError("no --model_path given: pass a checkpoint, or use --embedding features")
    path = Path(model_path)
    if not path.is_file():
        raise EmbedderError(f"no checkpoint at {path}: train a model first (python GF_main.py / "
                            "DeepDXF_train.py / joint_main.py), pass --model_path, or use --embedding features")
    _check_device(device)
    try:
        trained = load_trained_models(path, device)
    except CheckpointError as err:
        raise EmbedderError(str(err)) from err
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise EmbedderError(f"{path}: the model cannot be rebuilt from it "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                            "was it written by another version of the model code?") from err
    kind = trained.kind
    natural = {"GF": "gf", "DeepDXF": "deepdxf", "joint": "joint"}[kind]
    chosen = (AUTO_JOINT if natural == "joint" else natural) if embedding == "auto" else embedding
    available = {"gf": {"gf"}, "deepdxf": {"deepdxf"}, "joint": {"gf", "deepdxf", "joint", "joint_floors"}}[natural]
    if chosen not in available:
        raise EmbedderError(f"{path} is a {kind} checkpoint: it cannot give a {chosen} embedding "
                            f"(choose --embedding {' or '.join(sorted(available))}, or features/layout/layout_rot)")
    identity = f"{file_sha1(path)}/{chosen}/fmt{FORMAT_VERSION}"
    gf_model, dd_model = trained.gf, trained.deepdxf
    label = f"{chosen} model ({path})"
    config = dict(trained.config or {})
    gf_layout = bool(config.get("GF_layout_features", SAVED_CONFIG_FALLBACKS["GF_layout_features"]))
    if chosen == "gf":
        return Embedder("gf", identity, label, gf_embedding_fn(gf_model, gf_layout), needs_gf=True, config=config)
    if chosen == "deepdxf":
        return Embedder("deepdxf", identity, label, deepdxf_embedding_fn(dd_model), needs_gf=False, config=config)
    gf_fn, dd_fn = gf_embedding_fn(gf_model, gf_layout), deepdxf_embedding_fn(dd_model)

    def joint_fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        return joint_vectors(gf_fn(encs), dd_fn(encs))
    if chosen == "joint":
        return Embedder("joint", identity, label, joint_fn, needs_gf=True, config=config)

    def combined_fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        arrays = stack_encodings(encs)
        return np.concatenate([joint_fn(encs)] + [floor_block(name, arrays) for name, _ in COMBINED_BLOCKS], axis=1)
    blocks = ",".join(f"{n}{'z' if z else ''}" for n, z in COMBINED_BLOCKS)
    return Embedder("joint_floors", f"{identity}/{blocks}/w{FLOOR_BLOCK_WEIGHT:g}", label, combined_fn,
                    needs_gf=True, config=config, learned_dim=_joint_dim(gf_model, dd_model, gf_layout))


__all__ = [
    "DXF_SUFFIXES", "H5_SUFFIXES", "SUPPORTED_SUFFIXES", "EMBEDDING_CHOICES", "FLOOR_KINDS", "FLOOR_BLOCKS",
    "floor_raw", "floor_embedder", "stack_encodings", "append_features",
    "COMBINED_BLOCKS", "FLOOR_BLOCK_WEIGHT", "floor_block", "combined_embedding",
    "DrawingError", "EmbedderError", "DrawingEncoding", "Embedder",
    "gf_twin_path", "load_drawing", "raw_features", "standardize_features", "file_sha1", "make_embedder",
]
