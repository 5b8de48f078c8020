"""Pack the per-drawing encodings of a preprocessed folder into a few HDF5 shards.

    python dataset/pack.py --data_dir data/archive             # -> data/archive/packed/
    python dataset/pack.py --data_dir data/archive --shard_size 100000

A million drawings are two million small files after preprocessing; packed, they are
a handful of chunked, compressed HDF5 files that training reads lazily, one drawing
at a time, so the memory of a training process does not grow with the archive. The
shard layout, the writer (:func:`dataset.archive.pack`) and the reader
(``dataset.archive.open_archive``) are ``dataset/archive.py``; this is the command.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from config.cli import paths_note
from dataset.archive import ArchiveError, PackedArchive, pack

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Pack the per-drawing encodings of a preprocessed folder into a few HDF5 shards "
                    "that training reads lazily (for archives of 10^5 drawings and more).",
        epilog=paths_note())
    ap.add_argument("--data_dir", default="data", help="the --output folder of dataset/dxf_process.py (default: data)")
    ap.add_argument("--shard_size", type=int, default=50_000, help="drawings per shard (default: 50000)")
    ap.add_argument("--out", default=None, help="where the shards go (default: DATA_DIR/packed)")
    args = ap.parse_args(argv)
    try:
        shards = pack(args.data_dir, shard_size=args.shard_size, out=args.out)
    except ArchiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len(PackedArchive(shards[0].parent))
    print(f"packed {n} drawings into {len(shards)} shard(s) under {shards[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
