"""Configuration of ``dataset/dxf_process.py`` (preprocessing)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dataset.formats import DEFAULT_MAX_LEN, GF_CLASSES

DEFAULT_INPUT = "data/DXF"
"""The input folder of ``dataset/dxf_process.py`` with no arguments (filled with the sample corpus)."""


@dataclass
class ProcessConfig:
    """DXF folder(s) -> ``GF/``, ``DeepDXF/`` and ``manifest.csv`` under ``output``."""

    MAIN_FLAGS: ClassVar[tuple[str, ...]] = ("input", "output", "workers", "overwrite", "shard", "merge")

    input: list[str] = field(default_factory=lambda: [DEFAULT_INPUT], metadata={
        "help": "folders searched recursively for .dxf files (several form one corpus); "
                f"the default {DEFAULT_INPUT} is filled with the bundled sample corpus when empty"})
    output: str = field(default="data", metadata={"help": "writes GF/, DeepDXF/ and manifest.csv here"})
    workers: int = field(default=0, metadata={"help": "worker processes (0 = all cores, 1 = in this process)"})
    max_len: int = field(default=DEFAULT_MAX_LEN, metadata={
        "help": "keep at most this many entities per drawing in the DeepDXF encoding (the cut is counted)"})
    overwrite: bool = field(default=False, metadata={
        "help": "redo every drawing (default: skip drawings already done and unchanged)"})
    timeout: int = field(default=300, metadata={
        "help": "seconds allowed per file before it is given up (its worker is killed; 0 = no limit)"})
    gf_classes: list[str] = field(default_factory=lambda: list(GF_CLASSES), metadata={
        "help": "the 10 GF entity classes, in node order"})
    seed: int = field(default=0, metadata={"help": "seed of the sample corpus generator"})
    shard: str = field(default="", metadata={
        "help": "I/N: process only part I (0-based) of N disjoint parts, chosen by a stable hash of "
                "each drawing's name, and write manifest-I-of-N.csv (one part per machine)"})
    repack: bool = field(default=True, metadata={
        "help": "when OUTPUT/packed holds shards (dataset/pack.py) and this run changed GF/ or DeepDXF/, pack "
                "them again so training reads the new encodings (--no-repack: leave them; training then warns)"})
    merge: bool = field(default=False, metadata={
        "help": "merge the shard manifests (manifest-I-of-N.csv) under --output into manifest.csv "
                "and stop (no preprocessing)"})

    def __post_init__(self) -> None:
        if self.shard:
            parse_shard(self.shard)  # fails early with a clear message
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.timeout < 0:
            raise ValueError(f"--timeout must be >= 0 seconds, got {self.timeout}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``.

    Raises:
        ValueError: not of the form I/N with 0 <= I < N.
    """
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4 (part I of N, counted from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: expected 0 <= I < N")
    return i, n


__all__ = ["DEFAULT_INPUT", "ProcessConfig", "parse_shard"]
