"""Planning a batch: which files are inputs, where each output goes, what is already done.

- Folders contribute their TIFFs; files that hdn-deploy wrote (recognised by our run
  metadata, not by their name) are never taken as inputs.
- Outputs mirror the input tree below the output folder, relative to the inputs' common
  root (``Pos0/img.tif`` -> ``out/Pos0/img_mmse.tif``), so equal names never collide.
- An input is complete when every output exists with our metadata, the same settings
  and the same *source*: the input's path relative to the root, its series and a
  content fingerprint (:func:`fingerprint`). Output names alone never decide.
- An output may replace only a file that hdn-deploy wrote and that is not an input.
"""
from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError, OutputError
from .metadata import is_hdn_output, read_hdn_metadata
from .omezarr import is_ome_zarr, read_zarr_metadata

__all__ = ["TIFF_SUFFIXES", "expand_inputs", "output_path", "common_root", "fingerprint",
           "plan_outputs", "is_complete", "check_output_conflicts", "split_own_outputs"]

TIFF_SUFFIXES = (".tif", ".tiff")
_GLOB_CHARS = frozenset("*?[")
_FINGERPRINT_BYTES = 2**20


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith(".")


def _expand_one(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir() and is_ome_zarr(path):
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _is_tiff(p))
        if not found:
            raise InputError(f"folder '{path}' contains no .tif/.tiff files")
        return found
    if path.is_file():
        return [path]
    if _GLOB_CHARS & set(str(item)):
        found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
        if not found:
            raise InputError(f"pattern '{item}' matches no files")
        return found
    raise InputError(f"input '{path}' does not exist; give a TIFF file, a folder or a glob pattern")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named by ``inputs``: files, folders (their TIFFs) and glob patterns.

    Folders contribute their ``*.tif``/``*.tiff`` files (not recursive, sorted,
    hidden files skipped); patterns are expanded with :func:`glob.glob` (``**``
    recurses) and sorted. Duplicates are dropped, first occurrence kept.

    Raises
    ------
    InputError
        If a path does not exist, a folder has no TIFF, a pattern matches nothing
        or nothing is given.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        for path in _expand_one(item):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(path)
    if not out:
        raise InputError("no input files given")
    return out


def split_own_outputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(inputs, ours): ``paths`` split by whether hdn-deploy wrote them (run metadata)."""
    inputs, ours = [], []
    for path in paths:
        (ours if is_hdn_output(path) or _own_zarr(path) else inputs).append(path)
    return inputs, ours


def _own_zarr(path: Path) -> bool:
    meta = read_zarr_metadata(path) if Path(path).is_dir() else None
    return bool(meta) and meta.get("software") == "hdn-deploy"


def common_root(paths: Sequence[Path]) -> Path:
    """The deepest folder holding every path (absolute)."""
    folders = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def _stem(name: str) -> str:
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def output_path(input_path: str | Path, out_dir: str | Path, suffix: str) -> Path:
    """``out_dir / f"{stem}_{suffix}.tif"`` for an input file.

    The stem drops ``.tif``/``.tiff`` (and an ``.ome`` before it).

    Raises
    ------
    InputError
        If the result would be the input file itself.
    """
    input_path = Path(input_path)
    name = _stem(input_path.name)
    out = Path(out_dir) / (f"{name}_{suffix}.tif" if suffix else f"{name}.tif")
    if out.resolve() == input_path.resolve():
        raise InputError(
            f"output '{out}' would overwrite the input '{input_path}'; "
            "choose another output folder or suffix"
        )
    return out


def plan_outputs(path: Path, root: Path, out_dir: Path, kinds: Sequence[str],
                 series: int | None) -> dict[str, Path]:
    """Output path per kind: ``out_dir / <path's folder relative to root> /
    <stem>[_s<series>]_<kind>.tif`` (``series`` None: no series tag)."""
    rel = Path(path).resolve().parent.relative_to(root)
    tag = "" if series is None else f"_s{series}"
    folder = Path(out_dir) / rel
    return {kind: output_path(path, folder, f"{tag[1:]}_{kind}" if tag else kind) for kind in kinds}


def fingerprint(path: Path) -> dict[str, Any]:
    """Identity of an input's content: size, mtime (ns) and sha256 of its first and last
    MiB. Cheap for large files; a changed file changes at least one of them in practice."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if stat.st_size > _FINGERPRINT_BYTES:
            fh.seek(max(stat.st_size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
            digest.update(fh.read(_FINGERPRINT_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_ends": digest.hexdigest()}


def is_complete(outputs: dict[str, Path], settings: dict[str, Any], source: dict[str, Any]) -> bool:
    """True if every output exists with our metadata, ``settings`` and ``source`` (the
    input's relative path, series and fingerprint) equal to those given."""
    for kind, path in outputs.items():
        meta = read_hdn_metadata(path) if path.is_file() else None
        if (not meta or meta.get("kind") != kind or meta.get("settings") != settings
                or meta.get("source") != source):
            return False
    return True


def check_output_conflicts(outputs: dict[str, Path], inputs: set[Path], source: Path) -> None:
    """Refuse outputs that would replace an input or a file hdn-deploy did not write.

    Raises
    ------
    OutputError
        Naming the output, the input it belongs to and what to do.
    """
    for path in outputs.values():
        if path.resolve() in inputs:
            raise OutputError(f"output '{path}' of '{source}' would overwrite an input file; "
                              "choose another output folder (-o)")
        if path.exists() and not is_hdn_output(path):
            raise OutputError(
                f"output '{path}' of '{source}' exists and was not written by hdn-deploy; "
                "it is left unchanged. Move it away or choose another output folder (-o)"
            )
