"""Drawings -> the vectors a search compares: the one place that turns a checkpoint (or
the non-learned floors) into an embedding function.

An :class:`Embedder` has two steps, kept apart so that a gallery can cache the first:

1. :meth:`Embedder.embed`: encodings (:mod:`utils.retrieval.encodings`) -> ``float32 [n, D]``,
   one row per drawing, independent of any other drawing (what the cache stores);
2. :meth:`Embedder.finalize`: those rows -> the vectors that are compared. For every
   embedding of a checkpoint this is the identity (``row_wise``): the rows *are* the
   final vectors, so a gallery's store searches exactly what ``--export`` writes. The
   non-learned kinds without a checkpoint (``features``, ``layout``, ``layout_rot``)
   and ``--append_features`` z-score columns with a reference set (the gallery).

An embedding of a checkpoint is a list of :class:`model.fusion.Block`: each block is one
source (a learned part, ``gf``, ``deepdxf`` or ``joint`` = ``[L2(gf) | L2(deepdxf)]``, or
a floor block of :mod:`model.floors`: ``hist``, ``gf_raw``, ``layout``, ``layout_rot``),
optionally z-scored with stored statistics, L2-normalized and scaled by its weight, and
the blocks are concatenated (:func:`model.fusion.fuse`). Named choices:

================  =====================================================================
``gf``            the GF encoder's pooled node embeddings
``deepdxf``       the DeepDXF encoder's pooled output over every entity
``joint``         ``[L2(gf) | L2(deepdxf)]``, the training formula
``joint_floors``  ``joint`` followed by the raw GF matrices as a block of length 4
``auto``          what the checkpoint chose for its archive (``search_embedding``,
                  chosen by ``joint_main.py`` on that archive's validation drawings),
                  else the default floor ``features`` for a joint checkpoint (as the
                  choice keeps it when nothing is clearly better), else the model's own
================  =====================================================================
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from config.GF_config import SAVED_CONFIG_FALLBACKS
from config.sim_config import EMBEDDING_CHOICES
from dataset.formats import FORMAT_VERSION, GF_CLASSES, LAYOUT_DIM, N_COLUMNS
from dataset.dxf_read import DrawingError
from model.floors import BLOCK_DIMS, FLOOR_KINDS, FLOOR_LABELS, floor_block, floor_raw, standardize, zscore_l2
from model.fusion import LEARNED_PARTS, Block, block_statistics, fuse, with_statistics_of
from dataset.archive import gf_twin_path
from utils.retrieval.encodings import DrawingEncoding, stack_encodings

class EmbedderError(Exception):
    """The embedding function cannot be built (no checkpoint, wrong kind, ...)."""


#: the named embeddings of a checkpoint
PRESETS: dict[str, tuple[Block, ...]] = {
    "gf": (Block("gf"),),
    "deepdxf": (Block("deepdxf"),),
    "joint": (Block("joint"),),
    "joint_floors": (Block("joint"), Block("gf_raw", 4.0)),
}
#: what ``auto`` gives for a joint checkpoint that stores no choice of its own: the default
#: floor of the choice (``utils.train.embedding_choice.FLOOR_PRIOR``), not a fusion whose
#: weight was fixed on one archive (``joint_floors``, the raw GF block x4 chosen on lead-frame
#: revisions, lost to a layout grid by 0.27 mAP on floor plans)
AUTO_JOINT = "features"


def zscored_block(name: str, weight: float = 1.0) -> Block:
    """A floor block marked z-scored (placeholder statistics: a search z-scores it with the
    gallery, as every chosen floor is searched)."""
    d = BLOCK_DIMS[name]
    return Block(name, weight, np.zeros(d), np.ones(d))


#: the blocks of :data:`AUTO_JOINT`: the standardized histogram and raw GF matrices, as the
#: choice stores the ``features`` floor
AUTO_JOINT_BLOCKS = (zscored_block("hist"), zscored_block("gf_raw"))


def joint_vectors(gf: np.ndarray, deepdxf: np.ndarray) -> np.ndarray:
    """The ``joint`` embedding from its parts: ``[L2(gf) | L2(deepdxf)]``, gf ``[n, Dg]``,
    deepdxf ``[n, De]`` -> float32 ``[n, Dg + De]``; the training formula
    (:func:`model.joint_loss.joint_embedding`), so the searched vectors are the trained ones."""
    import torch  # only with learned parts, when torch is loaded already

    from model.joint_loss import joint_embedding
    return joint_embedding(torch.from_numpy(np.asarray(gf)), torch.from_numpy(np.asarray(deepdxf))).numpy()


# ----------------------------------------------------------------- embedder
class Embedder:
    """An embedding function over drawings.

    Attributes:
        kind: the embedding's name (``gf``, ``joint_floors``, ``features``, ...).
        identity: changes whenever the rows of a drawing could change (the weights,
            blocks, encoding format): the cache key of the model's store.
        label: for tables and messages.
        needs_gf: drawings without GF matrices cannot be embedded.
        row_wise: :meth:`finalize` needs no reference set: the rows are the compared vectors.
        learned: a model computes (part of) it: a gallery keeps its rows in the model's store
            (the non-learned kinds are computed from the cached encodings instead).
        config: the checkpoint's configuration (None for the non-learned kinds).
        blocks: the fused blocks (empty for the non-learned kinds).
        why: one line saying why this embedding was chosen (``auto``).
        from_arrays: the non-learned kinds: stacked encodings (``stack_encodings``) -> rows,
            so a gallery computes its rows from its cached encodings; None for a model.
        split: a blocks embedding (:func:`gallery_blocks_embedder`): rows ``[n, D]`` -> each
            block's raw columns by name; None for the others.
    """

    def __init__(self, kind: str, identity: str, label: str, fn: Callable[[Sequence[DrawingEncoding]], np.ndarray],
                 *, needs_gf: bool, row_wise: bool = True, learned: bool = True, config: Optional[dict] = None,
                 blocks: Sequence[Block] = (), why: str = "",
                 finalize_fn: Optional[Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]] = None,
                 from_arrays: Optional[Callable[[dict[str, np.ndarray]], np.ndarray]] = None,
                 split: Optional[Callable[[np.ndarray], dict[str, np.ndarray]]] = None) -> None:
        self.kind, self.identity, self.label = kind, identity, label
        self.needs_gf, self.row_wise, self.learned = needs_gf, row_wise, learned
        self.config, self.blocks, self.why = config, tuple(blocks), why
        self._fn, self._finalize, self.from_arrays, self.split = fn, finalize_fn, from_arrays, split
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

    def finalize(self, rows: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """The vectors that are compared, from :meth:`embed` rows ``[n, D]``; ``reference:
        [m, D]`` (the gallery's rows) z-scores the kinds that are not ``row_wise``."""
        if self._finalize is None:
            return np.asarray(rows, dtype=np.float32)
        return np.asarray(self._finalize(np.asarray(rows), reference), dtype=np.float32)


def floor_embedder(kind: str) -> Embedder:
    """A non-learned kind (``model.floors.FLOOR_KINDS``: ``features``, ``hist_std``, ``gf_std``,
    ``layout``, ``layout_rot``) z-scored with the gallery; no checkpoint."""
    sizes = [BLOCK_DIMS[b] for b in FLOOR_KINDS[kind]]

    def from_arrays(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return floor_raw(kind, arrays)

    def finalize(rows: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
        return standardize(rows, reference, sizes)
    return Embedder(kind, f"{kind}/fmt{FORMAT_VERSION}", f"{kind} ({FLOOR_LABELS[kind]}, standardized with the gallery)",
                    lambda encs: from_arrays(stack_encodings(encs)), needs_gf="gf_raw" in FLOOR_KINDS[kind], row_wise=False,
                    learned=False, finalize_fn=finalize, from_arrays=from_arrays)


def gallery_blocks_embedder(name: str, blocks: Sequence[Block], why: str, config: Optional[dict] = None,
                            parts: Optional[dict[str, Callable[[Sequence[DrawingEncoding]], np.ndarray]]] = None,
                            identity: str = "") -> Embedder:
    """A stored choice whose floor blocks are z-scored, searched with each of those blocks
    z-scored with the *gallery's* statistics (``model.fusion.with_statistics_of``), as the
    non-learned kinds are, not with the training archive's (which lost to the gallery's own
    on every other archive measured). The rows are the raw blocks side by side (learned
    parts from ``parts``, floor blocks from the encodings); :meth:`Embedder.finalize` fuses
    them. Without a learned block no model runs and the gallery computes its rows from its
    cached encodings (``from_arrays``)."""
    learned = [b.name for b in blocks if b.name in LEARNED_PARTS]
    if learned and parts is None:
        raise ValueError("learned blocks need the checkpoint's part functions")
    widths = {n: BLOCK_DIMS[n] for n in (b.name for b in blocks) if n not in LEARNED_PARTS}
    if learned:
        probe = [dummy_encoding()]
        widths.update({n: parts[n](probe).shape[1] for n in learned})
    order = list(dict.fromkeys(b.name for b in blocks))

    def from_arrays(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([floor_block(n, arrays) for n in order], axis=1)

    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        if not learned:
            return from_arrays(stack_encodings(encs))
        arrays = stack_encodings(encs) if len(learned) < len(order) else {}
        return np.concatenate([parts[n](encs) if n in LEARNED_PARTS else floor_block(n, arrays) for n in order],
                              axis=1)

    def split(rows: np.ndarray) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for n in order:
            out[n] = np.asarray(rows)[:, start:start + widths[n]]
            start += widths[n]
        return out

    def finalize(rows: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
        ref = None if reference is None else split(reference)
        return fuse(split(rows), with_statistics_of(blocks, ref))
    spec = "+".join(b.describe() for b in blocks)
    return Embedder(name, identity or f"floors:{spec}/fmt{FORMAT_VERSION}",
                    f"{name} ({'model + ' if learned else 'non-learned, '}floors standardized with the gallery)",
                    fn, needs_gf=any(n in ("gf", "joint", "gf_raw") for n in order), row_wise=False,
                    learned=bool(learned), config=config, blocks=blocks, why=f"{why}; floors z-scored with the gallery",
                    finalize_fn=finalize, from_arrays=None if learned else from_arrays, split=split)


def with_features(base: Embedder) -> Embedder:
    """``--append_features``: ``[L2(base) | standardized histogram | standardized raw GF]``,
    three unit blocks, the floor blocks z-scored with the reference set (the gallery)."""
    sizes = [BLOCK_DIMS["hist"], BLOCK_DIMS["gf_raw"]]
    width = sum(sizes)

    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        return np.concatenate([base.embed(encs), floor_raw("features", stack_encodings(encs))], axis=1)

    def finalize(rows: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
        learned = base.finalize(rows[:, :-width], None if reference is None else reference[:, :-width])
        feats = standardize(rows[:, -width:], None if reference is None else reference[:, -width:], sizes)
        return np.concatenate([zscore_l2(learned, None), feats], axis=1)
    return Embedder(base.kind, f"{base.identity}/+features", f"{base.label} + standardized features blocks", fn,
                    needs_gf=True, row_wise=False, learned=base.learned, config=base.config, blocks=base.blocks,
                    why=base.why,
                    finalize_fn=finalize)


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


def _load(path: Path, device: str) -> Any:
    from utils.train.checkpoint import CheckpointError, load_trained_models

    _check_device(device)
    try:
        return load_trained_models(path, device)
    except CheckpointError as err:
        raise EmbedderError(str(err)) from err
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise EmbedderError(f"{path}: the model cannot be rebuilt from it "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                            "was it written by another version of the model code?") from err


def part_functions(gf_model: Any, deepdxf_model: Any, gf_layout: bool
                   ) -> dict[str, Callable[[Sequence[DrawingEncoding]], np.ndarray]]:
    """The raw learned parts a checkpoint can give: ``gf`` (needs the GF matrices),
    ``deepdxf``, and ``joint`` when it has both; each encodings -> float32 ``[n, D]``."""
    from model.DeepDXF_model import embed_sequences
    from model.GF_model import embed_graphs

    fns: dict[str, Callable[[Sequence[DrawingEncoding]], np.ndarray]] = {}
    if gf_model is not None:
        def gf_fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
            feats = np.stack([e.gf_features for e in encs])
            if gf_layout:  # the 11 GF columns followed by the drawing's per-class occupancy
                feats = np.concatenate([feats, np.stack([e.gf_layout for e in encs])], axis=2)
            return embed_graphs(gf_model, feats, np.stack([e.gf_adjacency for e in encs]))
        fns["gf"] = gf_fn
    if deepdxf_model is not None:
        fns["deepdxf"] = lambda encs: embed_sequences(deepdxf_model, [e.rows for e in encs])
    if gf_model is not None and deepdxf_model is not None:
        fns["joint"] = lambda encs: joint_vectors(fns["gf"](encs), fns["deepdxf"](encs))
    return fns


def blocks_function(parts: dict[str, Callable[[Sequence[DrawingEncoding]], np.ndarray]], blocks: Sequence[Block]
                    ) -> Callable[[Sequence[DrawingEncoding]], np.ndarray]:
    """encodings -> :func:`fuse` of ``blocks`` (learned parts from ``parts``, floor blocks
    from the encodings)."""
    def fn(encs: Sequence[DrawingEncoding]) -> np.ndarray:
        arrays = stack_encodings(encs) if any(b.name not in LEARNED_PARTS for b in blocks) else {}
        raw = {b.name: parts[b.name](encs) if b.name in LEARNED_PARTS else floor_block(b.name, arrays)
               for b in blocks}
        return fuse(raw, blocks)
    return fn


def _choose(trained: Any, embedding: str, path: Path) -> tuple[str, tuple[Block, ...], str]:
    """The embedding name, its blocks and why, for ``--embedding`` on this checkpoint."""
    natural = {"GF": "gf", "DeepDXF": "deepdxf", "joint": "joint"}[trained.kind]
    available = {"gf": {"gf"}, "deepdxf": {"deepdxf"}, "joint": set(PRESETS)}[natural]
    if embedding == "auto":
        stored = trained.extra.get("search_embedding")
        if stored:
            blocks = tuple(Block.from_dict(b) for b in stored["blocks"])
            return str(stored["name"]), blocks, str(stored.get("why", "chosen when the model was trained"))
        if natural != "joint":
            return natural, PRESETS[natural], f"the model of this {trained.kind} checkpoint"
        return AUTO_JOINT, AUTO_JOINT_BLOCKS, ("the default floor: this joint checkpoint stores no choice of its "
                                               "own (its archive had no validation groups to choose on); "
                                               "--embedding joint searches with the learned embedding")
    if embedding not in available:
        raise EmbedderError(f"{path} is a {trained.kind} checkpoint: it cannot give a {embedding} embedding "
                            f"(choose --embedding {' or '.join(sorted(available))}, or features/layout/layout_rot)")
    return embedding, PRESETS[embedding], f"--embedding {embedding}"


def _trained(model_path: Optional[str | Path], device: str
             ) -> tuple[Path, Any, dict, dict[str, Callable[[Sequence[DrawingEncoding]], np.ndarray]]]:
    """The checkpoint's path, its trained models, configuration and learned part functions."""
    if model_path is None:
        raise EmbedderError("no --model_path given: pass a checkpoint, or use --embedding features")
    path = Path(model_path)
    if not path.is_file():
        raise EmbedderError(f"no checkpoint at {path}: train a model first (python GF_main.py / "
                            "DeepDXF_train.py / joint_main.py), pass --model_path, or use --embedding features")
    trained = _load(path, device)
    config = dict(trained.config or {})
    gf_layout = bool(config.get("GF_layout_features", SAVED_CONFIG_FALLBACKS["GF_layout_features"]))
    return path, trained, config, part_functions(trained.gf, trained.deepdxf, gf_layout)


def weights_identity(trained: Any) -> str:
    """Hex SHA-1 of what makes a checkpoint's embeddings: its models' parameters and buffers
    (names, dtypes, shapes, bytes) and its configuration. A checkpoint rewritten with
    another stored choice (``--choose``, a new choice after training) keeps it, so a
    gallery's cached rows of its learned parts are not computed again."""
    import torch  # only with a checkpoint

    h = hashlib.sha1(json.dumps(trained.config or {}, sort_keys=True, default=str).encode())
    for part, model in (("gf", trained.gf), ("deepdxf", trained.deepdxf)):
        if model is None:
            continue
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"\0{part}.{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def parts_embedder(model_path: Optional[str | Path], device: str = "cpu") -> Embedder:
    """Every block a search embedding can name, raw and side by side: the learned parts
    ``joint``, ``gf`` and ``deepdxf`` of a joint checkpoint and each floor block of
    ``model.floors.BLOCK_DIMS``; what a choice of the search embedding scores
    (``utils.retrieval.choice``). ``embedder.split(rows)`` gives each block ``[n, d]``."""
    path, trained, config, parts = _trained(model_path, device)
    if trained.kind != "joint":
        raise EmbedderError(f"{path} is a {trained.kind} checkpoint: choosing a search embedding needs a joint "
                            "checkpoint (joint_main.py), whose learned parts are fused with the floors")
    blocks = [Block(n) for n in (*LEARNED_PARTS, *BLOCK_DIMS)]
    return gallery_blocks_embedder("every part", blocks, "", config, parts,
                                   identity=f"{weights_identity(trained)}/every-part/fmt{FORMAT_VERSION}")


def make_embedder(model_path: Optional[str | Path], embedding: str = "auto", device: str = "cpu") -> Embedder:
    """The embedding function of a checkpoint, or of a non-learned floor.

    Args:
        model_path: a checkpoint written by the trainers (not needed for the non-learned kinds).
        embedding: ``auto``, a name of :data:`PRESETS`, or ``features``/``layout``/``layout_rot``.
        device: where the model runs (``cpu``, ``cuda``, ...).
    Raises:
        EmbedderError: no checkpoint, a checkpoint of another toolkit/format version, or
            one that does not hold the requested model.
    """
    if embedding not in EMBEDDING_CHOICES:
        raise EmbedderError(f"unknown embedding {embedding!r}: choose one of {', '.join(EMBEDDING_CHOICES)}")
    if embedding in FLOOR_KINDS:
        return floor_embedder(embedding)
    path, trained, config, parts = _trained(model_path, device)
    chosen, blocks, why = _choose(trained, embedding, path)
    missing = [b.name for b in blocks if b.name in LEARNED_PARTS and b.name not in parts]
    if missing:
        raise EmbedderError(f"{path}: the chosen embedding {chosen} needs the {', '.join(missing)} model, "
                            f"which this {trained.kind} checkpoint does not hold")
    spec = json.dumps([b.to_dict() for b in blocks], sort_keys=True)
    identity = f"{weights_identity(trained)}/{chosen}/{hashlib.sha1(spec.encode()).hexdigest()[:12]}/fmt{FORMAT_VERSION}"
    if any(b.mean is not None for b in blocks):  # z-scored floors: with the gallery's statistics
        return gallery_blocks_embedder(chosen, blocks, why, config, parts, identity=f"{identity}/gallery-z")
    needs_gf = any(b.name in ("gf", "joint", "gf_raw") for b in blocks)
    label = f"{chosen} model ({path})"
    return Embedder(chosen, identity, label, blocks_function(parts, blocks), needs_gf=needs_gf, config=config,
                    blocks=blocks, why=why)


def dummy_encoding() -> DrawingEncoding:
    """A one-entity drawing with zero GF matrices (to probe an embedding's width)."""
    c = len(GF_CLASSES)
    rows = np.full((1, N_COLUMNS), -1, dtype=np.int32)
    rows[0, 0] = 0
    return DrawingEncoding(path="", source=None, rows=rows, type_counts=np.eye(1, 12, dtype=np.int64)[0],
                           gf_features=np.zeros((c, c + 1), np.float32), gf_adjacency=np.zeros((c, c), np.float32),
                           gf_layout=np.zeros((c, LAYOUT_DIM), np.float32))


__all__ = ["parts_embedder", "EMBEDDING_CHOICES", "LEARNED_PARTS", "PRESETS", "AUTO_JOINT", "EmbedderError", "Block", "fuse",
           "block_statistics", "joint_vectors", "Embedder", "floor_embedder", "gallery_blocks_embedder", "with_features", "part_functions",
           "blocks_function", "make_embedder", "dummy_encoding"]
