"""Configuration of ``SimDeepDXF.py`` (similarity, retrieval, export, evaluation).

Every field is a command-line flag of the same name (``config/cli.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional

#: the bundled sample corpus: the demo's gallery and the last-resort pair-mode reference
DEMO_FOLDER = "data/DXF"
EMBEDDING_CHOICES = ("auto", "gf", "deepdxf", "joint", "joint_floors", "features", "hist_std", "gf_std", "layout",
                     "layout_rot")


@dataclass
class SimConfig:
    """Similarity of two drawings, top-k retrieval, export and evaluation."""

    MAIN_FLAGS: ClassVar[tuple[str, ...]] = ("model_path", "file1", "file2", "gallery", "query", "topk", "groups",
                                             "embedding", "render", "export", "serve")

    model_path: str = field(default="checkpoints/best_model.pth", metadata={
        "help": "checkpoint of a GF, DeepDXF or joint model (not needed for the non-learned "
                "--embedding features/hist_std/gf_std/layout/layout_rot)"})
    file1: Optional[str] = field(default=None, metadata={"help": "first drawing (.dxf or .h5) of pair mode"})
    file2: Optional[str] = field(default=None, metadata={"help": "second drawing (.dxf or .h5) of pair mode"})
    method: Literal["cosine", "euclidean"] = field(default="cosine", metadata={
        "help": "cosine similarity, or euclidean distance (ranked as its negative)"})
    embedding: str = field(default="auto", metadata={
        "help": "auto: the embedding the checkpoint chose for its archive (a joint checkpoint without a "
                "choice: features); gf/deepdxf: one part of a joint model; joint: both, "
                "concatenated; joint_floors: joint plus the raw GF "
                "matrices as a weighted block; non-learned (no checkpoint): features = standardized histogram + raw GF, "
                "hist_std, gf_std = either alone, layout = entity types on an 8x8 grid, layout_rot = the grid pooled "
                "over 90° turns and flips (each z-scored with the gallery)",
        "choices": list(EMBEDDING_CHOICES)})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    gallery: list[str] = field(default_factory=list, metadata={
        "help": "folders (searched recursively) and/or files of .dxf/.h5 drawings forming one gallery"})
    query: Optional[str] = field(default=None, metadata={"help": "drawing to look up in --gallery"})
    topk: int = field(default=5, metadata={"help": "how many matches --query prints"})
    export: Optional[str] = field(default=None, metadata={
        "help": "write the gallery's embeddings (the vectors every search compares) to this .npz "
                "(arrays names, embeddings, paths; a folder: <folder>/embeddings.npz)"})
    groups: Optional[str] = field(default=None, metadata={
        "help": "JSON list of groups of similar drawing names: print retrieval metrics of the model "
                "beside the non-learned floors over the gallery, and the floor to beat"})
    choose: Optional[str] = field(default=None, metadata={
        "help": "with --groups and a joint checkpoint: choose the search embedding for this gallery (the learned "
                "embedding, every floor and their fusions, scored on your groups; the standardized counts unless "
                "another floor, then a learned candidate, is clearly better) and write a copy of the checkpoint holding that choice to "
                "this .pth; search with --model_path FILE (--embedding auto uses the choice and says so)"})
    choose_max_drawings: int = field(default=20_000, metadata={
        "help": "--choose ranks at most this many drawings: every member of your groups, then a seeded sample of "
                "the rest of the gallery as distractors"})
    render: Optional[str] = field(default=None, metadata={
        "help": "with --query: draw the query and its top-k matches into this PNG (a folder: "
                "<folder>/<query name>-top<k>.png)"})
    reference: str = field(default="auto", metadata={
        "help": "pair mode: folder of drawings that puts the score in context (where it falls among the "
                "similarities of file1 to these drawings). auto: --gallery if given, else the data the "
                "model was trained on (its checkpoint's data_dir), else data/DXF; none: no reference"})
    reference_max: int = field(default=500, metadata={
        "help": "at most this many reference drawings (evenly spaced in name order)"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "embedding cache folder (default: $XDG_CACHE_HOME/dxf-similarity/<gallery folder>-<hash>, "
                "i.e. ~/.cache/...; never inside the archive unless you choose it here)"})
    encodings: list[str] = field(default_factory=lambda: ["auto"], metadata={
        "help": "folders written by dataset/dxf_process.py whose encodings of the very same DXF files "
                "(same name, size and modification time in their manifest.csv) are reused instead of "
                "parsing the files again; auto: data/ and the model's training data; none: parse every file"})
    cache: bool = field(default=True, metadata={"help": "use and update the embedding cache (--no-cache: "
                                                        "keep embeddings in memory for this run only)"})
    workers: int = field(default=0, metadata={
        "help": "processes parsing new DXF files of a gallery (0 = all cores, at most 8)"})
    max_len: int = field(default=50_000, metadata={"help": "entities kept per drawing parsed on the fly"})
    timeout: int = field(default=300, metadata={"help": "seconds allowed to parse one gallery DXF before it is skipped"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of the mAP interval (--groups)"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the random floor"})
    serve: bool = field(default=False, metadata={
        "help": "serve a search page and a JSON API over --gallery (needs the web extra: pip install -e '.[web]')"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "--serve: address to bind (127.0.0.1: this machine only; 0.0.0.0: every network interface)"})
    port: int = field(default=8000, metadata={"help": "--serve: port to listen on"})
    max_upload_mb: float = field(default=50.0, metadata={
        "help": "--serve: largest drawing a user may upload, in MB (larger ones get HTTP 413)"})
    append_features: bool = field(default=False, metadata={
        "help": "append the standardized non-learned features (histogram and raw GF blocks, z-scored with "
                "the gallery) to a learned embedding; --groups shows both so you can see whether it helps"})


__all__ = ["SimConfig", "DEMO_FOLDER", "EMBEDDING_CHOICES"]
