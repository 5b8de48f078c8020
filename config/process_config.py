"""Configuration of ``dataset/dxf_process.py`` (preprocessing, SPEC §2, §3, §8)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dataset.dxf_process_GF import GF_CLASSES


@dataclass
class ProcessConfig:
    """DXF folder(s) -> ``GF/``, ``DeepDXF/`` and ``manifest.csv`` under ``output``."""

    input: list[str] = field(default_factory=lambda: ["data/DXF"], metadata={
        "help": "folders searched recursively for .dxf files (several form one corpus); "
                "the default data/DXF is filled with the bundled sample corpus when empty"})
    output: str = field(default="data", metadata={"help": "writes GF/, DeepDXF/ and manifest.csv here"})
    workers: int = field(default=0, metadata={"help": "worker processes (0 = all cores)"})
    max_len: int = field(default=50_000, metadata={
        "help": "keep at most this many entities per drawing in the DeepDXF encoding (the cut is counted)"})
    overwrite: bool = field(default=False, metadata={
        "help": "redo every drawing (default: skip drawings already done and unchanged)"})
    timeout: int = field(default=300, metadata={"help": "seconds allowed per file before it is given up"})
    gf_classes: list[str] = field(default_factory=lambda: list(GF_CLASSES), metadata={
        "help": "the 10 GF entity classes, in node order"})
    seed: int = field(default=0, metadata={"help": "seed of the sample corpus generator"})
