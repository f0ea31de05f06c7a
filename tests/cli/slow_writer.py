"""A slow acquisition writer for the watch tests (run as a separate process).

    python slow_writer.py FOLDER SPEC.json

SPEC: a list of {"path": relative path, "kind": "image" | "garbage" | "out_of_range",
"seed": int, "shape": [h, w], "pieces": n, "pause": seconds}. Each file's bytes are
written into FOLDER/path in ``pieces`` chunks (flushed and fsynced) with ``pause`` seconds
between them, one file after the other, creating sub-folders as it goes. Prints the path
of each file when it is complete.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tifffile


def file_bytes(spec: dict) -> bytes:
    if spec["kind"] == "garbage":
        return b"this is not a TIFF file " * 40
    rng = np.random.default_rng(spec.get("seed", 0))
    shape = tuple(spec.get("shape", (48, 64)))
    if spec["kind"] == "out_of_range":
        image = np.full(shape, 60000, np.uint16)
    else:
        image = np.clip(rng.normal(120, 20, shape), 0, 255).astype(np.float32)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    return buffer.getvalue()


def write_slowly(path: Path, data: bytes, pieces: int, pause: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(data), pieces + 1).astype(int)
    with open(path, "wb") as handle:
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if i:
                time.sleep(pause)
            handle.write(data[a:b])
            handle.flush()
            os.fsync(handle.fileno())


def main() -> None:
    folder, spec_file = Path(sys.argv[1]), Path(sys.argv[2])
    for spec in json.loads(spec_file.read_text()):
        write_slowly(folder / spec["path"], file_bytes(spec), spec.get("pieces", 4),
                     spec.get("pause", 0.5))
        print(spec["path"], flush=True)


if __name__ == "__main__":
    main()
